"""``infscope evaluate``: check scores against ground truth (mislabels, LDS, leave-one-out).

Sign convention: a positive score means the training example lowers the query's measurement, so
LDS predicts ``-sum_{z in S} score(q, z)`` for a model trained on subset ``S``, and leave-one-out
deltas ``m(without z) - m(all)`` should correlate positively with the scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from infscope.cli.output import console
from infscope.errors import InputError
from infscope.functions import load_function

app = typer.Typer(
    help=(
        "Evaluate scores against ground truth: mislabel detection by self-influence, the linear "
        "datamodeling score (LDS) and leave-one-out correlation (both retrain with your function)."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from infscope.io import write_json

    write_json(path, payload)
    console.print(f"[green]{escape(str(path))}[/]: report written")


def _check_outputs(json_path: Path | None, cache: Path | None = None) -> None:
    """Before any work: the --json file and the --cache folder can be written."""
    from infscope.io import check_writable

    if json_path is not None:
        check_writable(json_path, directory=False, option="--json")
    if cache is not None:
        check_writable(cache, directory=True, option="--cache")


def _parse_indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--indices must be comma-separated integers, got {text!r}") from None


@app.command()
def mislabel(
    scores: Annotated[
        Path, typer.Argument(help="Self-influence written by `infscope score` without --query.")
    ],
    data: Annotated[
        Path | None, typer.Option(help="Training data file holding a mislabeled flag per id.")
    ] = None,
    field: Annotated[str, typer.Option(help="Boolean field of --data marking mislabels.")] = (
        "is_mislabeled"
    ),
    mislabeled_ids: Annotated[
        Path | None, typer.Option(help="Alternative to --data: one mislabeled id per line.")
    ] = None,
    fraction: Annotated[
        list[float] | None, typer.Option(help="Inspection budgets (repeatable).")
    ] = None,
    negate: Annotated[
        bool,
        typer.Option(
            "--negate",
            help="Rank low scores first, for scores that record no direction (infscope's own "
            "record it: self-influence high, AUM and confidence low are suspicious).",
        ),
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
) -> None:
    """How well a per-example score ranks known mislabeled examples first (AUC, AP, found at
    top f), in the score's own direction: high self-influence, low AUM.

    \b
    Example:
      infscope evaluate mislabel runs/self --data train.jsonl \\
          --field is_mislabeled
    """
    from infscope.attribution import SelfInfluence, load_scores
    from infscope.evaluation import mislabel_detection, mislabel_flags

    _check_outputs(json_path)
    if (data is None) == (mislabeled_ids is None):
        raise InputError("give exactly one of --data or --mislabeled-ids")
    result = load_scores(scores, expect=SelfInfluence).oriented(negate)
    flags = mislabel_flags(result.train_ids, data=data, field=field, mislabeled_ids=mislabeled_ids)
    report = mislabel_detection(result, flags, tuple(fraction or (0.05, 0.1, 0.2)))
    table = Table(title=f"mislabel detection by {escape(result.method)}")
    for column in ("metric", "value", "random"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    prevalence = report.n_mislabeled / report.n
    table.add_row("ROC AUC", f"{report.auc:.3f}", "0.500")
    table.add_row("average precision", f"{report.average_precision:.3f}", f"{prevalence:.3f}")
    for f, found in report.found_at.items():
        table.add_row(f"found in top {f:.0%}", f"{found:.1%}", f"{f:.1%}")
    console.print(table)
    console.print(f"{report.n_mislabeled} mislabeled of {report.n} training examples")
    if json_path is not None:
        _write_json(json_path, {"method": result.method, **report.to_dict()})


TRAIN_FN_HELP = (
    "module:function with train_fn(train_indices, seed) -> one measurement per query (the "
    "queries of SCORES, in order); indices are positions in the scores' training ids."
)


@app.command()
def lds(
    scores: Annotated[Path, typer.Argument(help="Query x train scores (`infscope score`).")],
    train_fn: Annotated[str, typer.Option(help=TRAIN_FN_HELP)],
    alpha: Annotated[float, typer.Option(help="Fraction of training data in each subset.")] = 0.5,
    num_subsets: Annotated[int, typer.Option(help="Subsets to retrain on.")] = 50,
    cache: Annotated[
        Path | None, typer.Option(help="Directory caching each retraining (resumable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of subsets, training seeds, bootstrap.")] = 0,
    n_bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CI.")] = 1000,
    confidence: Annotated[float, typer.Option(help="Confidence level of the CI.")] = 0.95,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON here.")
    ] = None,
) -> None:
    """Linear datamodeling score (LDS) of SCORES, retraining on random subsets.

    Per query, the Spearman correlation across subsets between -sum(scores over the subset) and
    the measurement TRAIN_FN returns; the mean over queries with a bootstrap CI.

    \b
    Example:
      infscope evaluate lds runs/if --train-fn retrain:train_fn --num-subsets 50 \\
          --cache runs/lds
    """
    from infscope.attribution import Scores, load_scores
    from infscope.evaluation import LDSConfig, lds_ground_truth, linear_datamodeling_score

    _check_outputs(json_path, cache)
    matrix = load_scores(scores, expect=Scores)
    function = load_function(train_fn)
    config = LDSConfig(num_subsets=num_subsets, alpha=alpha, seed=seed)
    outcomes = lds_ground_truth(function, len(matrix.train_ids), config, cache)
    result = linear_datamodeling_score(matrix, outcomes, n_bootstrap, confidence, seed)
    half = (result.ci_high - result.ci_low) / 2
    console.print(
        f"LDS {result.mean:.3f} ± {half:.3f} ({confidence:.0%} CI [{result.ci_low:.3f}, "
        f"{result.ci_high:.3f}]) over {result.per_query.size - result.n_dropped} queries, "
        f"{result.n_subsets} subsets of {alpha:.0%} ({escape(matrix.method)})"
    )
    if result.n_dropped:
        console.print(f"{result.n_dropped} queries dropped: their measurements did not vary")
    if json_path is not None:
        payload = {"method": matrix.method, "alpha": alpha, "seed": seed, **result.to_dict()}
        payload["query_ids"] = matrix.query_ids
        _write_json(json_path, payload)


@app.command()
def loo(
    scores: Annotated[Path, typer.Argument(help="Query x train scores (`infscope score`).")],
    train_fn: Annotated[str, typer.Option(help=TRAIN_FN_HELP)],
    indices: Annotated[
        str | None,
        typer.Option(help="Comma-separated training positions to remove (default: all)."),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Directory caching each retraining (resumable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed, the same for every retrain.")] = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result as JSON here.")
    ] = None,
) -> None:
    """Leave-one-out correlation of SCORES, retraining without each chosen example.

    Correlates the change in each query's measurement (without minus with) with the scores;
    positive means the scores agree.

    \b
    Example:
      infscope evaluate loo runs/if --train-fn retrain:train_fn --indices 0,5,9 \\
          --cache runs/loo
    """
    from infscope.attribution import Scores, load_scores
    from infscope.evaluation import leave_one_out, loo_correlation

    _check_outputs(json_path, cache)
    matrix = load_scores(scores, expect=Scores)
    function = load_function(train_fn)
    result = leave_one_out(function, len(matrix.train_ids), _parse_indices(indices), cache, seed)
    correlation = loo_correlation(matrix, result)
    table = Table(title=f"leave-one-out agreement ({escape(matrix.method)})")
    for column in ("correlation", "all pairs", "per-query mean"):
        table.add_column(column, justify="left" if column == "correlation" else "right")
    for name in ("pearson", "spearman"):
        table.add_row(
            name.capitalize(),
            f"{correlation[name]:+.3f}",
            f"{correlation[f'{name}_per_query_mean']:+.3f}",
        )
    console.print(table)
    console.print(
        f"{len(result.indices)} examples removed x {result.deltas.shape[0]} queries "
        f"= {correlation['n_pairs']} pairs"
    )
    if json_path is not None:
        payload = {
            "method": matrix.method,
            "seed": seed,
            **correlation,
            "indices": result.indices.tolist(),
            "train_ids": [matrix.train_ids[i] for i in result.indices],
            "query_ids": matrix.query_ids,
            "deltas": result.deltas.tolist(),
        }
        _write_json(json_path, payload)
