"""``infscope prune``: a pruning study over saved per-example scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infscope.cli.output import console
from infscope.errors import InputError
from infscope.functions import load_function


def _numbers(text: str, what: str, kind: type = float) -> list:
    """Comma-separated numbers (``kind=int``: integers)."""
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated {kind.__name__}s, got {text!r}") from None


def _named(specs: list[str]) -> dict[str, str]:
    """``NAME=DIRECTORY`` specs by name."""
    named = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise InputError(f"--score must be NAME=DIRECTORY, got {spec!r}")
        if name in named:
            raise InputError(f"--score {name} is given twice")
        named[name] = path
    return named


def _labels(path: Path, field: str, ids: list[str]):
    """The ``field`` of the data file's records, in the order of the scored ``ids``."""
    import numpy as np

    from infscope.data import ExampleSet

    return np.array(ExampleSet.from_file(path).column(field, ids, str(path), "scored ids"))


def prune(
    score: Annotated[
        list[str],
        typer.Option(
            metavar="NAME=DIR",
            help="Saved per-example scores, oriented high = hard by their recorded direction "
            "(AUM, confidence are negated); repeatable.",
        ),
    ],
    train_fn: Annotated[
        str,
        typer.Option(
            help="module:function with train_fn(train_indices, seed) -> metric (higher is better)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Directory for runs.csv, pruning_curve.png/.svg, summary.txt and the run cache."
        ),
    ],
    keep: Annotated[str, typer.Option(help="Keep fractions, comma-separated.")] = "0.3,0.5,0.7",
    strategy: Annotated[
        list[str],
        typer.Option(
            help="keep-hard | keep-easy | drop-both-tails | class-stratified (repeatable)."
        ),
    ] = ["keep-hard"],  # noqa: B006
    seeds: Annotated[str, typer.Option(help="Training seeds, comma-separated.")] = "0,1,2",
    negate: Annotated[
        list[str],
        typer.Option(
            metavar="NAME",
            help="Score NAME where high means easy, for scores that record no direction "
            "(infscope's record it); repeatable.",
        ),
    ] = [],  # noqa: B006
    labels: Annotated[
        Path | None, typer.Option(help="Data file with the labels (class-stratified).")
    ] = None,
    label_field: Annotated[str, typer.Option()] = "label",
    metric_name: Annotated[str, typer.Option(help="Name of the metric on the plot.")] = "accuracy",
) -> None:
    """Retrain on score-pruned, random and full data with several seeds; plot pruning curves.

    Resumable: every training run is cached under OUT/cache, so a killed study continues.

    \b
    Example:
      infscope prune --score el2n=runs/el2n --train-fn retrain:train_fn \\
          --keep 0.3,0.5,0.7 --out runs/prune
    """
    from infscope.evaluation.pruning import PruningStudy, load_pruning_scores
    from infscope.io import check_writable, write_atomic

    check_writable(out, directory=True)
    values, ids = load_pruning_scores(_named(score), negate)
    study = PruningStudy(
        values,
        load_function(train_fn),
        keep_fractions=_numbers(keep, "--keep"),
        strategies=tuple(strategy),
        seeds=_numbers(seeds, "--seeds", int),
        labels=None if labels is None else _labels(labels, label_field, ids),
        cache_dir=out / "cache",
    )
    result = study.run()
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "runs.csv")
    for suffix in ("png", "svg"):
        result.plot(out / f"pruning_curve.{suffix}", metric_name)
    write_atomic(out / "summary.txt", (result.text() + "\n").encode())
    console.print(result.text(), markup=False)
    console.print(f"wrote {out}/runs.csv, pruning_curve.png/.svg, summary.txt", markup=False)
