"""``infscope trees``: influence of training rows on a boosted-tree classifier's predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from infscope.cli.options import option_groups
from infscope.cli.output import console, progress


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@dataclass(frozen=True)
class TableOptions:
    """Which columns of the tables are the label, the ids and the features."""

    label: Annotated[str, typer.Option(help="Column holding the class label.")] = "label"
    id_field: Annotated[str, typer.Option(help="Column holding example ids.")] = "id"
    features: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated feature columns (default: all but label, id, --ignore)."
        ),
    ] = None
    ignore: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns that are not features (e.g. is_mislabeled)."),
    ] = None

    def load(self, path: Path, columns: Any = None) -> Any:
        """The rows of ``path`` (:func:`infscope.trees.tables.load_table`); ``columns``: the
        training table's feature columns, for a query table."""
        from infscope.trees.tables import load_table

        if columns is not None:
            return load_table(path, self.label, self.id_field, columns)
        return load_table(
            path, self.label, self.id_field, _names(self.features), _names(self.ignore)
        )


@dataclass(frozen=True)
class FitOptions:
    """The boosted classifier fitted on TRAIN (some also describe a saved XGBoost model)."""

    library: Annotated[
        str, typer.Option(help="Library to fit with: sklearn, lightgbm or xgboost.")
    ] = "lightgbm"
    n_estimators: Annotated[int, typer.Option(help="Boosting iterations.")] = 100
    learning_rate: Annotated[
        float, typer.Option(help="Learning rate (for an XGBoost file: the one it was fit with).")
    ] = 0.1
    max_leaves: Annotated[int, typer.Option(help="Leaves per tree at most.")] = 8
    min_leaf: Annotated[int, typer.Option(help="Training rows per leaf at least.")] = 5
    l2: Annotated[
        float, typer.Option(help="Leaf-value L2 penalty (for an XGBoost file: its lambda).")
    ] = 1.0
    threads: Annotated[int, typer.Option(help="Threads of the fit.")] = 1
    seed: Annotated[int, typer.Option(help="Seed of the fit.")] = 0


@option_groups
def trees(
    train: Annotated[
        Path, typer.Argument(help="Training rows: .csv/.parquet/.jsonl with numeric features.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Directory for self_influence/, loss/, scores/ (with --query), the fitted model "
            "(LightGBM model.txt, XGBoost model.json) and summary.json."
        ),
    ],
    fit: FitOptions,
    table: TableOptions,
    query: Annotated[
        Path | None, typer.Option(help="Rows to explain (same columns): query x train scores.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Score this LightGBM text (.txt) or XGBoost JSON/UBJSON (.json, .ubj) model, "
            "trained on TRAIN, instead of fitting one (labels must then be 0..K-1). Pickles "
            "are never read."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="boostin or tracin.")] = "boostin",
    query_gradient: Annotated[
        str,
        typer.Option(help="BoostIn's query gradient: final (model) or staged (as in the paper)."),
    ] = "final",
    top: Annotated[int, typer.Option(help="Most suspicious training rows to print.")] = 10,
) -> None:
    """Fit a gradient-boosted classifier on TRAIN (or read a saved LightGBM/XGBoost model) and
    score every training row: its self-influence (high = suspicious, e.g. a wrong label), its
    training loss, and with --query its influence on each query row's loss (positive = helps).
    The outputs are infscope scores (infscope evaluate mislabel, infscope report read them).

    Example: infscope trees train.csv --label y --query test.csv --library xgboost --out runs/t
    """
    import numpy as np

    from infscope.io import check_writable, write_json
    from infscope.terminal import printable
    from infscope.trees import TreeInfluence

    check_writable(out, directory=True)
    rows = table.load(train)
    queries = None if query is None else table.load(query, rows.columns)
    classes = np.unique(rows.labels)
    fitted, labels, used = _classifier(fit, model, rows, classes)
    out.mkdir(parents=True, exist_ok=True)
    influence = TreeInfluence(fitted, method=method, query_gradient=query_gradient)
    progress(f"{method} over the trees' leaves for {len(rows.ids)} training rows")
    influence.fit(rows.features, labels, rows.ids)
    saved = None if model is not None else _save_model(fitted, fit.library, out)
    own = influence.self_influence()
    own.save(out / "self_influence")
    influence.training_loss().save(out / "loss")
    if queries is not None:
        query_labels = queries.labels if model is not None else _known(queries, classes, query)
        progress(f"scoring {len(queries.ids)} query rows")
        influence.score(queries.features, query_labels, queries.ids).save(out / "scores")
    write_json(out / "summary.json", {
        "model": used, "saved_model": None if saved is None else saved.name, "method": method,
        "query_gradient": influence.query_gradient,
        "classes": classes.tolist() if model is None else None,
        "leaf_residual": influence.leaf_residual, "n_train": len(rows.ids),
        "n_query": 0 if queries is None else len(queries.ids),
    })  # fmt: skip
    console.print(
        f"{own.method} on {used}: {len(rows.ids)} training rows, leaf values reproduced to "
        f"{influence.leaf_residual:.1e}; most suspicious:",
        markup=False,
    )
    for row in own.top_rows(min(top, len(rows.ids))):
        shown = printable(row["train_id"])
        console.print(f"  {row['rank']:>3}  {shown}  {row['score']:.4g}", markup=False)
    written = "self_influence/, loss/" + (", scores/" if queries is not None else "")
    console.print(f"wrote {out}/{written}, summary.json", markup=False)


def _classifier(fit: FitOptions, model: Path | None, rows: Any, classes: Any) -> tuple:
    """``(classifier, training labels, what it is)``: the saved ``model`` read (its labels as
    given), or one fitted on the rows (labels as class indices)."""
    import numpy as np

    from infscope.errors import InputError
    from infscope.trees import LIBRARIES, TreeParams, fit_classifier, load_model_file

    if fit.library not in LIBRARIES:
        raise InputError(f"--library must be one of {', '.join(LIBRARIES)}, got {fit.library!r}")
    if model is not None:
        progress(f"reading {model}")
        xgb_file = model.suffix.lower() in (".json", ".ubj")
        fitted = load_model_file(
            model,
            learning_rate=fit.learning_rate if xgb_file else None,
            reg_lambda=fit.l2 if xgb_file else None,
        )
        return fitted, rows.labels, model.name
    labels = np.searchsorted(classes, rows.labels)
    params = TreeParams(
        fit.n_estimators, fit.learning_rate, fit.max_leaves, fit.min_leaf, fit.l2, fit.threads
    )
    progress(f"fitting {fit.library} on {len(rows.ids)} rows")
    return (
        fit_classifier(fit.library, rows.features, labels, params, seed=fit.seed),
        labels,
        fit.library,
    )


def _save_model(fitted: Any, library: str, out: Path) -> Path | None:
    """A fitted LightGBM or XGBoost model saved in its library's own text format."""
    if library == "lightgbm":
        fitted.booster_.save_model(out / "model.txt")
        return out / "model.txt"
    if library == "xgboost":
        fitted.get_booster().save_model(out / "model.json")
        return out / "model.json"
    return None


def _known(queries: Any, classes: Any, path: Path) -> Any:
    """Query labels as indices of the training classes (an unseen label is an error)."""
    import numpy as np

    from infscope.errors import InputError

    known = np.isin(queries.labels, classes)
    if not known.all():
        bad = queries.labels[~known][0]
        raise InputError(f"{path}: label {bad.item()!r} is not a training label")
    return np.searchsorted(classes, queries.labels)
