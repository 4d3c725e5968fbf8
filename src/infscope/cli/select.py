"""``infscope select``: pick a training subset from saved scores, features or texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from infscope.cli.output import console
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


def _align(name: str, ids: list[str], own_ids: list[str]) -> np.ndarray:
    """Positions in ``own_ids`` of every id of the pool (a clear error for missing ids)."""
    where = {i: k for k, i in enumerate(own_ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise InputError(f"{name} lacks {len(missing)} of the pool's ids, e.g. {missing[:3]}")
    return np.array([where[i] for i in ids], dtype=np.int64)


def _features(path: Path, checkpoint: str | None, ids: list[str] | None) -> tuple[np.ndarray, list]:
    """Rows of a feature store (with its ids), or of a ``.npy`` file (ids: ``ids`` or rows)."""
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except (ValueError, EOFError) as err:
            raise InputError(f"{path} holds no readable array ({err})") from None
        if values.ndim != 2:
            raise InputError(f"{path} must hold a 2-D array, got shape {values.shape}")
        if ids is not None and len(ids) != len(values):
            raise InputError(f"{path} has {len(values)} rows for {len(ids)} examples")
        return values, list(ids) if ids is not None else [str(i) for i in range(len(values))]
    from infscope.store import FeatureStore

    store = FeatureStore.open(path)
    return store.features(checkpoint), list(store.ids)


def select(
    method: Annotated[str, typer.Option(help="Selection method (see --help for the list).")],
    out: Annotated[
        Path, typer.Option(help="Directory for selection.json, subset.jsonl and summary.txt.")
    ],
    budget: Annotated[str, typer.Option(help="A count (2000) or a fraction (0.15).")] = "0.15",
    scores: Annotated[
        Path | None,
        typer.Option(help="Saved scores: a query x train matrix or one score per example."),
    ] = None,
    negate: Annotated[
        bool,
        typer.Option("--negate", help="Negate per-example scores (select low ones as 'high')."),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Candidates (.jsonl/.json/.csv/.parquet with 'id'): tags, texts, output."
        ),
    ] = None,
    tag: Annotated[
        list[str], typer.Option(help="Field of --data to tag candidates by (repeatable).")
    ] = [],  # noqa: B006
    text_field: Annotated[str, typer.Option(help="Text field of --data / --target-data.")] = "text",
    queries: Annotated[
        Path | None, typer.Option(help="Query data (ids of the score matrix's rows) with tasks.")
    ] = None,
    query_task_field: Annotated[str, typer.Option(help="Task field of --queries.")] = "task",
    features: Annotated[
        Path | None,
        typer.Option(help="Candidate features: a feature store or a .npy (rows = --data)."),
    ] = None,
    target_features: Annotated[
        Path | None, typer.Option(help="Target features: a feature store or a .npy.")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Feature-store checkpoint.")] = None,
    target_data: Annotated[
        Path | None, typer.Option(help="Target texts (DSIR): a data file with --text-field.")
    ] = None,
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
    from infscope.io import write_atomic
    from infscope.selection import build_selector

    if stratify_by is not None and stratify_by not in tag:
        tag = [*tag, stratify_by]  # the strata are a tag of the candidates
    pool, records = _build_pool(
        scores,
        negate,
        data,
        tag,
        text_field,
        queries,
        query_task_field,
        features,
        target_features,
        checkpoint,
        target_data,
    )
    selector = build_selector(method, seed, stratify_by, balanced_strata, **_options(option))
    selection = selector.select(pool, _budget(budget))
    selection.save(out)
    selection.write_jsonl(out / "subset.jsonl", records)
    summary = selection.summary(pool)
    write_atomic(out / "summary.txt", (summary + "\n").encode())
    plots = [selection.plot(pool, name, out / f"counts_by_{name}.png") for name in pool.tags]
    report = selection.report(pool)
    write_atomic(out / "report.txt", (report.text() + "\n").encode())
    plots.append(report.plot(out / "report.png"))
    console.print(summary, markup=False)
    written = ", ".join(
        ["selection.json", "subset.jsonl", "summary.txt", "report.txt", *(p.name for p in plots)]
    )
    console.print(f"wrote {out}/: {written}", markup=False)


def _build_pool(
    scores: Path | None,
    negate: bool,
    data: Path | None,
    tags: list[str],
    text_field: str,
    queries: Path | None,
    query_task_field: str,
    features: Path | None,
    target_features: Path | None,
    checkpoint: str | None,
    target_data: Path | None,
) -> tuple[Any, list[dict[str, Any]] | None]:
    """The :class:`Pool` (ids from --data, else from the scores or features) and the records."""
    from infscope.attribution import SelfInfluence, load_scores
    from infscope.data import ExampleSet
    from infscope.selection import Pool

    records = ids = None
    if data is not None:
        examples = ExampleSet.from_file(data)
        records, ids = list(examples.examples), list(examples.ids)
    kwargs: dict[str, Any] = {}
    if scores is not None:
        loaded = load_scores(scores)
        ids = ids or list(loaded.train_ids)
        columns = _align(str(scores), ids, list(loaded.train_ids))
        if isinstance(loaded, SelfInfluence):
            kwargs["scores"] = (-1 if negate else 1) * np.asarray(loaded.values)[columns]
        else:
            matrix = np.asarray(loaded.values)[:, columns]
            kwargs["influence"] = matrix
            kwargs["scores"] = (-1 if negate else 1) * matrix.mean(axis=0)
            if queries is not None:
                query_set = ExampleSet.from_file(queries)
                rows = _align(str(queries), list(loaded.query_ids), list(query_set.ids))
                try:
                    kwargs["query_tasks"] = [query_set[r][query_task_field] for r in rows]
                except (KeyError, TypeError):
                    raise InputError(f"{queries} lacks the field {query_task_field!r}") from None
    if features is not None:
        values, feature_ids = _features(features, checkpoint, ids)
        ids = ids or feature_ids
        kwargs["features"] = values[_align(str(features), ids, feature_ids)]
    if target_features is not None:
        kwargs["target_features"] = _features(target_features, checkpoint, None)[0]
    if ids is None:
        raise InputError("give the candidates: --data, --scores or --features")
    if records is not None:
        for name in tags:
            if any(name not in r for r in records):
                raise InputError(f"{data} records lack the tag field {name!r}")
        kwargs["tags"] = {name: [r[name] for r in records] for name in tags}
        if all(text_field in r for r in records):
            kwargs["texts"] = [str(r[text_field]) for r in records]
    elif tags:
        raise InputError("--tag needs --data (the tags are fields of the candidates)")
    if target_data is not None:
        target = ExampleSet.from_file(target_data)
        if any(text_field not in r for r in target.examples):
            raise InputError(f"{target_data} records lack the text field {text_field!r}")
        kwargs["target_texts"] = [str(r[text_field]) for r in target.examples]
    return Pool(ids=ids, **kwargs), records
