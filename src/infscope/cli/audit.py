"""``infscope audit``: rank the training examples whose labels look wrong, and say why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from infscope.cli.options import option_groups
from infscope.cli.output import console, progress


@dataclass(frozen=True)
class AuditOptions:
    """The audit's and its K-fold probe's settings."""

    folds: Annotated[int, typer.Option(help="K-fold retraining folds.")] = 5
    seed: Annotated[int, typer.Option(help="Seed of the folds and the probe.")] = 0
    neighbours: Annotated[str, typer.Option(help="Neighbours per vote, or 'auto'.")] = "auto"
    near_duplicate: Annotated[
        float, typer.Option(help="Cosine similarity from which examples are near duplicates.")
    ] = 0.95
    hidden: Annotated[int, typer.Option(help="Probe hidden units (0 = linear).")] = 256
    epochs: Annotated[int, typer.Option(help="Probe training epochs.")] = 10

    def configs(self):
        """``(AuditConfig, ProbeConfig)`` of these settings (checked there)."""
        from infscope.audit import AuditConfig, ProbeConfig
        from infscope.errors import InputError

        try:
            k: int | str = self.neighbours if self.neighbours == "auto" else int(self.neighbours)
        except ValueError:
            raise InputError(
                f"--neighbours must be a number or 'auto', got {self.neighbours!r}"
            ) from None
        audit = AuditConfig(
            folds=self.folds, seed=self.seed, neighbours=k, near_duplicate=self.near_duplicate
        )
        return audit, ProbeConfig(hidden=self.hidden, epochs=self.epochs, seed=self.seed)


@option_groups
def audit(
    data: Annotated[
        Path, typer.Argument(help="Examples: .jsonl/.json/.csv/.parquet with 'id' and a label.")
    ],
    out: Annotated[
        Path, typer.Option(help="Directory for audit.json, arrays.npz and suspects.csv.")
    ],
    settings: AuditOptions,
    features: Annotated[
        Path | None,
        typer.Option(
            help=".npy [n, d], rows in DATA order (e.g. sentence embeddings): neighbour votes, "
            "near duplicates and, without --pred-probs/--train-fn, a K-fold MLP probe."
        ),
    ] = None,
    pred_probs: Annotated[
        Path | None, typer.Option(help=".npy [n, classes] out-of-fold class probabilities.")
    ] = None,
    train_fn: Annotated[
        str | None,
        typer.Option(
            help="module:function; fit_predict(train_indices, heldout_indices, fold) returns "
            "the held-out class probabilities (or an infscope.audit.FoldRun)."
        ),
    ] = None,
    self_influence: Annotated[
        Path | None, typer.Option(help="Saved self-influence scores (infscope score) to report.")
    ] = None,
    label_field: Annotated[str, typer.Option(help="Field holding the label.")] = "label",
    text_field: Annotated[str, typer.Option(help="Field holding the text (shown).")] = "text",
    class_names: Annotated[
        Path | None, typer.Option(help="JSON list of class names (index = label).")
    ] = None,
    top: Annotated[int, typer.Option(help="Suspects to print.")] = 20,
) -> None:
    """Find likely mislabeled examples: out-of-fold probabilities (K-fold retraining), their
    training dynamics and neighbour votes, combined; the suggested label with the examples
    supporting it; duplicates with conflicting labels. Open the result with infscope report.

    Example: infscope audit train.jsonl --features emb.npy --out runs/audit
    """
    from infscope.attribution import SelfInfluence, load_scores
    from infscope.audit import audit_examples, load_rows
    from infscope.data import ExampleSet
    from infscope.functions import load_function
    from infscope.io import check_writable, write_atomic

    check_writable(out, directory=True)
    examples = ExampleSet.from_file(data)
    n = len(examples)
    names = None if class_names is None else _class_names(class_names)
    scores = None
    if self_influence is not None:
        scores = load_scores(self_influence, expect=SelfInfluence)
    config, probe = settings.configs()
    progress(f"auditing {n} examples")
    result = audit_examples(
        examples,
        label_field=label_field,
        text_field=text_field,
        class_names=names,
        features=None if features is None else load_rows(features, n, "features", examples.ids),
        pred_probs=None
        if pred_probs is None
        else load_rows(pred_probs, n, "pred_probs", examples.ids),
        fit_predict=None if train_fn is None else load_function(train_fn),
        probe=probe,
        self_influence=scores,
        config=config,
    )
    result.info["command"] = {"data": str(data), "features": str(features or "")}
    result.save(out)
    frame = result.to_pandas()
    write_atomic(out / "suspects.csv", frame.to_csv().encode())

    _print_result(result, top)
    console.print(f"wrote {out}/audit.json, arrays.npz, suspects.csv", markup=False)


def _class_names(path: Path) -> list:
    """The JSON list of class names in ``path``."""
    import json

    from infscope.errors import InputError

    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    if not isinstance(names, list):
        raise InputError(f"{path} must hold a JSON list of class names")
    return names


def _print_result(result, top: int) -> None:
    """The ``top`` suspects as a table (texts and ids are data, shown terminal-safe), the
    ranking chosen, and whether the evidence may be too weak."""
    from rich.table import Table
    from rich.text import Text

    from infscope.terminal import printable

    table = Table(title=Text(printable(result.summary())))
    for column in ("rank", "id", "given", "suggested", "suspicion", "text"):
        table.add_column(column, overflow="fold")
    for row in result.records(top):
        cells = (row["rank"], row["id"], row["given"], row["suggested"], f"{row['suspicion']:.3f}")
        table.add_row(*(Text(printable(c)) for c in (*cells, str(row.get("text", ""))[:80])))
    console.print(table)
    console.print(f"ranking: {result.describe_ranking()}", markup=False)
    if result.warnings:
        console.print(
            f"{len(result.warnings)} warning(s) above: the evidence may be too weak to trust "
            f"this ranking",
            markup=False,
        )
