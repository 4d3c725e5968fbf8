"""A selection :class:`~infscope.selection.base.Pool` from files: saved scores, a data file,
query tasks, feature stores or ``.npy`` rows, target texts — every part joined to the candidates
by id, never by position (what ``infscope select`` reads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infscope.attribution.scores import SelfInfluence, load_scores
from infscope.data import ExampleSet, positions, read_ids
from infscope.errors import InputError
from infscope.selection.base import Pool


@dataclass(frozen=True)
class PoolFiles:
    """Where a pool's parts are. The candidates are the records of ``data`` (their ``tags``
    fields and ``text_field`` texts), else the examples the ``scores`` or ``features`` cover.
    ``scores``: a query x train matrix (the per-candidate score is its mean over queries) or one
    score per example, negated with ``negate``; ``queries``: a data file whose
    ``query_task_field`` gives each matrix row's task; ``features`` / ``target_features``: a
    feature store (at ``checkpoint``) or a ``.npy`` (rows = ``data``'s); ``target_data``: a data
    file of target texts."""

    scores: Path | None = None
    negate: bool = False
    data: Path | None = None
    tags: tuple[str, ...] = ()
    text_field: str = "text"
    queries: Path | None = None
    query_task_field: str = "task"
    features: Path | None = None
    target_features: Path | None = None
    checkpoint: str | None = None
    target_data: Path | None = None


def feature_rows(
    path: str | Path, checkpoint: str | None = None, ids: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """The rows of a feature store (at ``checkpoint``) with its ids, or of a 2-D ``.npy`` file
    (never unpickled) whose rows are the examples ``ids`` (row numbers without)."""
    path = Path(path)
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


def load_pool(files: PoolFiles) -> tuple[Pool, list[dict[str, Any]] | None]:
    """The pool the files describe and the candidates' records (None without ``data``)."""
    records = ids = None
    if files.data is not None:
        examples = ExampleSet.from_file(files.data)
        records, ids = list(examples.examples), list(examples.ids)
    parts: dict[str, Any] = {}
    sign = -1 if files.negate else 1
    if files.scores is not None:
        loaded = load_scores(files.scores)
        ids = ids or list(loaded.train_ids)
        columns = positions(ids, loaded.train_ids, str(files.scores), "candidate ids")
        if isinstance(loaded, SelfInfluence):
            parts["scores"] = sign * np.asarray(loaded.values)[columns]
        else:
            matrix = np.asarray(loaded.values)[:, columns]
            parts["influence"] = matrix
            parts["scores"] = sign * matrix.mean(axis=0)
            if files.queries is not None:
                parts["query_tasks"] = ExampleSet.from_file(files.queries).column(
                    files.query_task_field, loaded.query_ids, str(files.queries), "query ids"
                )
    if files.features is not None:
        values, feature_ids = feature_rows(files.features, files.checkpoint, ids)
        ids = ids or feature_ids
        parts["features"] = values[
            positions(ids, feature_ids, str(files.features), "candidate ids")
        ]
    if files.target_features is not None:
        parts["target_features"] = feature_rows(files.target_features, files.checkpoint)[0]
    if ids is None:
        raise InputError("give the candidates: a data file, scores or features")
    if records is not None:
        for name in files.tags:
            if any(name not in r for r in records):
                raise InputError(f"{files.data} records lack the tag field {name!r}")
        parts["tags"] = {name: [r[name] for r in records] for name in files.tags}
        if all(files.text_field in r for r in records):
            parts["texts"] = [str(r[files.text_field]) for r in records]
    elif files.tags:
        raise InputError("tags need a data file (the tags are fields of the candidates)")
    if files.target_data is not None:
        target = ExampleSet.from_file(files.target_data)
        if any(files.text_field not in r for r in target.examples):
            raise InputError(
                f"{files.target_data} records lack the text field {files.text_field!r}"
            )
        parts["target_texts"] = [str(r[files.text_field]) for r in target.examples]
    return Pool(ids=ids, **parts), records


def excluded_ids(path: str | Path) -> list[str]:
    """The ids to leave out of a pool: the flagged examples of an ``infscope audit`` output
    directory, or an ids file (:func:`infscope.data.read_ids`)."""
    path = Path(path)
    if path.is_dir():
        from infscope.audit.result import AuditResult

        return AuditResult.load(path).flagged_ids()
    return read_ids(path, "--exclude ids")
