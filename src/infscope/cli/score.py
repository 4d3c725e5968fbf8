"""``infscope score`` (scores of training examples against queries, or self-influence) and
``infscope top`` (the most helpful and harmful training examples of saved scores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from infscope.attribution.registry import EstimatorSpec
from infscope.cli.options import estimator_options
from infscope.cli.output import console, progress, warn
from infscope.errors import InputError
from infscope.terminal import printable


@estimator_options
def score(
    train: Annotated[Path, typer.Option(help="Training feature store.")],
    out: Annotated[Path, typer.Option(help="Directory for the scores (values.npy + scores.json).")],
    estimator: EstimatorSpec,
    query: Annotated[
        Path | None, typer.Option(help="Query feature store; omit for self-influence.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Run the query x train products in torch on this device (cuda, cuda:1)."),
    ] = None,
    allow_other_weights: Annotated[
        bool,
        typer.Option(
            "--allow-other-weights",
            help="Score queries extracted from other model weights than the training store "
            "(deliberate cross-model use; refused by default).",
        ),
    ] = False,
    table: Annotated[
        str,
        typer.Option(
            help="Also write OUT/scores.csv or .parquet (ids and scores, for a spreadsheet or "
            "pandas): csv | parquet | none."
        ),
    ] = "csv",
    top: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep only each query's TOP most helpful and harmful training examples, found "
            "while the score blocks stream past (the full matrix is never held): OUT/top.npz, "
            "top.json and a table of the rows.",
        ),
    ] = None,
) -> None:
    """Score training examples: query x train influence, or self-influence without --query.

    Writes OUT/values.npy and OUT/scores.json (read by top, evaluate, select, prune) and a
    table of ids and scores. Queries from other model weights than the training store are
    refused.

    \b
    Example:
      infscope score --train runs/train --query runs/test --method tracin \\
          --out runs/scores
    """
    from infscope.analysis import score as score_stores
    from infscope.attribution.scores import TABLE_FORMATS
    from infscope.curvature.spectrum import damping_rule_line
    from infscope.io import check_writable
    from infscope.store import FeatureStore

    check_writable(out, directory=True)
    if table not in TABLE_FORMATS:
        raise InputError(f"--table must be one of {', '.join(TABLE_FORMATS)}, got {table!r}")
    if top is not None and query is None:
        raise InputError("--top needs --query (self-influence is one value per example)")
    train_store = FeatureStore.open(train)
    query_store = FeatureStore.open(query) if query else None
    progress(f"fitting {estimator.method} on {train_store.n_examples:,} training examples")
    result = score_stores(
        train_store, query_store, method=estimator.method, top=top, device=device,
        allow_other_weights=allow_other_weights, **estimator.options,
    )  # fmt: skip
    result.save(out)
    written = _write_table(result, out, table)
    if "damping_rule" in result.metadata:  # damping="auto": what the spectrum chose
        console.print(damping_rule_line(result.metadata["damping_rule"]))
    if top is not None:
        console.print(
            f"[green]{escape(str(out))}[/]: {result.method} top {result.k} of "
            f"{train_store.n_examples:,} for {query_store.n_examples:,} queries ({', '.join(written)})"
        )
        return
    console.print(
        f"[green]{escape(str(out))}[/]: {result.method} scores {tuple(result.values.shape)} "
        f"({', '.join(written)})"
    )


def _write_table(result, out: Path, table: str) -> list[str]:
    """The table of ids and scores beside saved scores (top rows for top-k results); the names
    of the files written."""
    from infscope.attribution.top_k import TopScores
    from infscope.io import write_table

    if isinstance(result, TopScores):
        written = ["top.npz", "top.json"]
        if table != "none":
            rows = result.top_rows()
            write_table(out / f"top.{table}", {name: [r[name] for r in rows] for name in rows[0]})
            written.append(f"top.{table}")
        return written
    written = ["values.npy", "scores.json"]
    if table == "none":
        return written
    path = out / f"scores.{table}"
    if result.write_table(path):
        written.append(path.name)
    else:
        warn(
            f"{path.name} not written: a {result.values.shape[0]:,} x "
            f"{result.values.shape[1]:,} matrix is too large for a table; `infscope top "
            f"{out} --out top.csv` writes the top examples per query"
        )
    return written


def _records(path: Path | None) -> dict[str, dict]:
    """Records of a data file by id (empty without one)."""
    if path is None:
        return {}
    from infscope.data import ExampleSet

    data = ExampleSet.from_file(path)
    return dict(zip(data.ids, data.examples))


def _shown(record: dict | None, fields: list[str]) -> str:
    """The fields of a record joined (the whole record, cut, when it has none of them)."""
    if record is None:
        return ""
    parts = [str(record[f]) for f in fields if f in record]
    return " | ".join(parts) if parts else json.dumps(record)[:200]


def top(
    scores: Annotated[Path, typer.Argument(help="Scores directory written by `infscope score`.")],
    k: Annotated[int, typer.Option(min=1, help="Examples per query and direction.")] = 5,
    train_data: Annotated[
        Path | None, typer.Option(help="Training data file, to print examples.")
    ] = None,
    query_data: Annotated[
        Path | None, typer.Option(help="Query data file, to print queries.")
    ] = None,
    field: Annotated[
        list[str], typer.Option(metavar="FIELD", help="Field(s) of the data files to print.")
    ] = ["text"],  # noqa: B006
    label_field: Annotated[
        str, typer.Option(help="Label field of --train-data (self-influence: given label).")
    ] = "label",
    max_queries: Annotated[int, typer.Option(min=1, help="Queries to show.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the rows shown (all fields) to this .csv or .parquet."),
    ] = None,
) -> None:
    """Print the k most helpful and most harmful training examples for each query.

    For self-influence (or a per-example score such as AUM), the k most suspicious examples in
    the score's own direction, with the given label and, when the training store recorded them,
    the label the model predicted.

    \b
    Example:
      infscope top runs/scores --k 5 --train-data train.jsonl \\
          --query-data test.jsonl
    """
    from infscope.attribution import SelfInfluence, load_scores
    from infscope.io import check_writable, write_table

    if out is not None:
        check_writable(out, directory=False)
    result = load_scores(scores)
    train, queries = _records(train_data), _records(query_data)
    if isinstance(result, SelfInfluence):
        rows = result.top_rows(k)
        predicted = result.recorded_predictions()
        for row in rows:
            record = train.get(row["train_id"])
            if record is not None and label_field in record:
                row["given"] = record[label_field]
            if predicted is not None:
                row["predicted"] = predicted[row["train_id"]]
            row["example"] = _shown(record, field)
        _warn_unmatched(train_data, train, [r["train_id"] for r in rows], "training")
        means = result.metadata.get("high_means")
        title = f"most suspicious by {result.method}" + (
            f" (high {result.method} = {means})" if means else ""
        )
        columns = ["rank", "train_id", "score", "given", "predicted", "example"]
        columns = [c for c in columns if any(c in row for row in rows)]
        _print_table(escape(title), columns, rows)
    else:
        rows = result.top_rows(k, max_queries)
        _warn_unmatched(train_data, train, [r["train_id"] for r in rows], "training")
        _warn_unmatched(query_data, queries, [r["query_id"] for r in rows], "query")
        for row in rows:
            row["example"] = _shown(train.get(row["train_id"]), field)
        for qid in dict.fromkeys(row["query_id"] for row in rows):
            title = f"query {qid}: {_shown(queries.get(qid), field)}"[:200]
            shown = [row for row in rows if row["query_id"] == qid]
            _print_table(
                escape(title), ["direction", "train_id", "score", "example"], shown, signed=True
            )
    if out is not None:
        names = list(dict.fromkeys(name for row in rows for name in row))
        write_table(out, {name: [row.get(name, "") for row in rows] for name in names})
        console.print(f"[green]{escape(str(out))}[/]: {len(rows)} rows")


def _warn_unmatched(path: Path | None, records: dict[str, dict], ids: list[str], what: str) -> None:
    """A warning when the data file lacks ids the table shows (their example cells stay empty)."""
    missing = [i for i in dict.fromkeys(ids) if i not in records]
    if path is None or not missing:
        return
    share = "none" if len(missing) == len(set(ids)) else f"{len(missing)} of {len(set(ids))}"
    warn(
        f"{path} holds {share} of the shown {what} ids (e.g. {missing[0]!r}), so their "
        "examples are not shown: give the data file the features were extracted from"
    )


def _print_table(title: str, columns: list[str], rows: list[dict], signed: bool = False) -> None:
    """Rows as a table; every value is data, never console markup, and its control and bidi
    characters are shown escaped (the file written by --out keeps them)."""
    table = Table(title=printable(title))
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if column == "score":
                value = f"{value:+.4g}" if signed else f"{value:.4g}"
            cells.append(escape(printable(value)))
        table.add_row(*cells)
    console.print(table)

