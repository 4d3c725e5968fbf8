"""Tabular data for tree models: numeric feature columns, a label column and example ids.

Rows come from a ``.csv``, ``.parquet``, ``.jsonl`` or ``.json`` file through
:class:`~infscope.data.ExampleSet` (ids from ``id_field``, else row numbers). Features are every
column but the label, the id and those ignored, or the ``features`` named; each must hold numbers (empty cells
and nulls become NaN, which the tree libraries route as missing values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infscope.data import ExampleSet
from infscope.errors import InputError


@dataclass(frozen=True)
class Table:
    """``features [n, d]`` (float64), ``labels [n]`` as read, ``ids`` and ``columns`` (names)."""

    features: np.ndarray
    labels: np.ndarray
    ids: list[str]
    columns: list[str]


def _number(value: object, row: str, column: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, bool):
        raise InputError(f"row {row!r}: column {column!r} holds a boolean, not a number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"row {row!r}: column {column!r} = {value!r} is not a number") from None


def _label(value: object, row: str, label: str) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"row {row!r} has no {label!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def load_table(
    path: str | Path,
    label: str = "label",
    id_field: str = "id",
    features: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> Table:
    """Read ``path`` into features (the ``features`` columns, or every column but the label, the
    id and ``ignore``), labels (integers where they read as integers) and ids."""
    examples = ExampleSet.from_file(path, id_field)
    if not len(examples):
        raise InputError(f"{path}: no rows")
    records = list(examples)
    present = list(records[0])
    if label not in present:
        raise InputError(f"{path}: no label column {label!r} (columns: {', '.join(present)})")
    columns = (
        list(features) if features else [c for c in present if c not in (label, id_field, *ignore)]
    )
    if not columns:
        raise InputError(f"{path}: no feature columns besides {label!r}")
    missing = [c for c in columns if any(c not in r for r in records)]
    if missing:
        raise InputError(f"{path}: rows without feature column(s) {', '.join(missing)}")
    matrix = np.array(
        [[_number(r[c], i, c) for c in columns] for r, i in zip(records, examples.ids)],
        dtype=np.float64,
    )
    labels = [_label(r.get(label), i, label) for r, i in zip(records, examples.ids)]
    kinds = {type(v) for v in labels}
    if len(kinds) > 1:
        raise InputError(f"{path}: column {label!r} mixes numbers and text")
    return Table(matrix, np.asarray(labels), list(examples.ids), columns)
