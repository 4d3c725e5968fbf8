"""``infscope select``: pick a training subset from saved scores, features or texts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from infscope.cli.options import option_groups
from infscope.cli.output import console, progress
from infscope.errors import InputError


def _budget(text: str) -> int | float:
    """``0.15`` is a fraction, ``2000`` a count."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise InputError(f"--budget must be a count or a fraction, got {text!r}") from None


def _options(specs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON where they can be (numbers, true/false)."""
    options: dict[str, Any] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise InputError(f"--option must be KEY=VALUE, got {spec!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            options[key.replace("-", "_")] = value
    return options


@dataclass(frozen=True)
class PoolOptions:
    """Where the candidates and their evidence come from (:class:`~infscope.selection.io.PoolFiles`)."""

    scores: Annotated[
        Path | None,
        typer.Option(help="Saved scores: a query x train matrix or one score per example."),
    ] = None
    negate: Annotated[
        bool,
        typer.Option("--negate", help="Negate per-example scores (select low ones as 'high')."),
    ] = False
    data: Annotated[
        Path | None,
        typer.Option(
            help="Candidates (.jsonl/.json/.csv/.parquet with 'id'): tags, texts, output."
        ),
    ] = None
    tag: Annotated[
        list[str], typer.Option(help="Field of --data to tag candidates by (repeatable).")
    ] = ()  # type: ignore[assignment]
    text_field: Annotated[str, typer.Option(help="Text field of --data / --target-data.")] = "text"
    queries: Annotated[
        Path | None, typer.Option(help="Query data (ids of the score matrix's rows) with tasks.")
    ] = None
    query_task_field: Annotated[str, typer.Option(help="Task field of --queries.")] = "task"
    features: Annotated[
        Path | None,
        typer.Option(help="Candidate features: a feature store or a .npy (rows = --data)."),
    ] = None
    target_features: Annotated[
        Path | None, typer.Option(help="Target features: a feature store or a .npy.")
    ] = None
    checkpoint: Annotated[str | None, typer.Option(help="Feature-store checkpoint.")] = None
    target_data: Annotated[
        Path | None, typer.Option(help="Target texts (DSIR): a data file with --text-field.")
    ] = None

    def files(self, stratify_by: str | None):
        """The :class:`PoolFiles`, tagged by the strata too."""
        from infscope.selection.io import PoolFiles

        tags = tuple(self.tag)
        if stratify_by is not None and stratify_by not in tags:
            tags = (*tags, stratify_by)  # the strata are a tag of the candidates
        return PoolFiles(
            scores=self.scores, negate=self.negate, data=self.data, tags=tags,
            text_field=self.text_field, queries=self.queries,
            query_task_field=self.query_task_field, features=self.features,
            target_features=self.target_features, checkpoint=self.checkpoint,
            target_data=self.target_data,
        )  # fmt: skip


@option_groups
def select(
    method: Annotated[str, typer.Option(help="Selection method (see --help for the list).")],
    out: Annotated[
        Path, typer.Option(help="Directory for selection.json, subset.jsonl and summary.txt.")
    ],
    pool_files: PoolOptions,
    budget: Annotated[str, typer.Option(help="A count (2000) or a fraction (0.15).")] = "0.15",
    option: Annotated[
        list[str], typer.Option(help="Method option KEY=VALUE, e.g. n_clusters=50 (repeatable).")
    ] = [],  # noqa: B006
    stratify_by: Annotated[
        str | None,
        typer.Option(help="Select inside each group of this --tag (budget split by group size)."),
    ] = None,
    balanced_strata: Annotated[
        bool,
        typer.Option(
            "--balanced-strata", help="With --stratify-by: split the budget equally over groups."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed: the same inputs and seed, the same subset.")] = 0,
    exclude: Annotated[
        Path | None,
        typer.Option(
            help="Leave rows out before selecting: an `infscope audit` output directory (its "
            "flagged rows: the recommended first step on a noisy pool) or an ids file. The "
            "budget stays a share of the whole pool."
        ),
    ] = None,
) -> None:
    """Select a training subset: top-k, bottom-k, random, stratified, balanced, softmax, less,
    bids, cluster-bandit, tarot, dsir, vote-k, ideal.

    Writes OUT/selection.json (indices, ids, weights, reasons), OUT/subset.jsonl (the picked
    examples with their own fields untouched when --data is given, plus selection_rank,
    selection_weight and selection_reason), OUT/summary.txt (counts and shares per tag before
    and after, a warning when one label dominates), OUT/counts_by_TAG.png (pool vs selection
    shares per tag) and OUT/report.txt + report.png (composition, scores of the picks vs the
    rest, coverage of the feature space, near-duplicates).

    \b
    Example:
      infscope select --method top-k --scores runs/self --data train.jsonl \\
          --budget 0.3 --out runs/subset
    """
    from infscope.io import check_writable, write_atomic
    from infscope.selection import build_selector, diagnose, select_excluding
    from infscope.selection.io import excluded_ids, load_pool
    from infscope.terminal import printable

    check_writable(out, directory=True)
    pool, records = load_pool(pool_files.files(stratify_by))
    selector = build_selector(method, seed, stratify_by, balanced_strata, **_options(option))
    progress(f"selecting {budget} of {len(pool.ids):,} candidates by {method}")
    if exclude is None:
        selection = selector.select(pool, _budget(budget))
    else:
        selection = select_excluding(selector, pool, _budget(budget), excluded_ids(exclude))
        progress(f"left out {selection.info['excluded']:,} rows listed in {exclude}")
    selection.save(out)
    selection.write_jsonl(out / "subset.jsonl", records)
    summary = selection.summary(pool)
    write_atomic(out / "summary.txt", (summary + "\n").encode())
    plots = [selection.plot(pool, name, out / f"counts_by_{name}.png") for name in pool.tags]
    report = diagnose(selection, pool)
    write_atomic(out / "report.txt", (report.text() + "\n").encode())
    plots.append(report.plot(out / "report.png"))
    console.print(printable(summary, keep_newlines=True), markup=False)
    written = ", ".join(
        ["selection.json", "subset.jsonl", "summary.txt", "report.txt", *(p.name for p in plots)]
    )
    console.print(f"wrote {out}/: {written}", markup=False)
