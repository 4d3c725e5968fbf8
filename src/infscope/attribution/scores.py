"""Score containers: a query x train matrix, or one self-influence value per training example.

Sign convention (every estimator): a **positive score means the training example lowers the
query's measurement — it helps**; negative means it hurts. Arrays always travel with their ids.
Saved as ``.npy`` + JSON (never pickle), written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError, NonFiniteError
from infscope.io import write_atomic

FORMAT = "infscope.scores"


def _check_finite(values: np.ndarray, method: str) -> None:
    """Non-finite scores are an error, never a silent NaN ranked first or last."""
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NonFiniteError(
            f"{method} produced {bad} non-finite score(s) (NaN or inf): the features hold NaN/inf "
            f"or the computation overflowed (check the store with FeatureStore.verify(), or raise "
            f"the damping)"
        )


def _save(directory: str | Path, values: np.ndarray, meta: dict[str, Any]) -> Path:
    """Values first, then the JSON that makes the directory readable: a crash leaves no scores
    that look complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "values.npy", lambda h: np.save(h, values))
    meta = {"format": FORMAT, **meta}
    write_atomic(directory / "scores.json", lambda h: h.write(json.dumps(meta).encode()))
    return directory


@dataclass
class Scores:
    """Influence of each training example (columns) on each query (rows)."""

    values: np.ndarray
    query_ids: list[str]
    train_ids: list[str]
    method: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = (len(self.query_ids), len(self.train_ids))
        if self.values.shape != expected:
            raise InputError(f"score matrix {self.values.shape} does not match ids {expected}")
        _check_finite(self.values, self.method)

    def top(self, k: int, harmful: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per query, indices ``[n_query, k]`` and scores of the ``k`` most helpful training
        examples (largest scores) or, with ``harmful``, the most harmful (smallest)."""
        if k < 1:
            raise InputError(f"k must be positive, got {k}")
        k = min(k, self.values.shape[1])
        signed = -self.values if not harmful else self.values
        index = np.argsort(signed, axis=1, kind="stable")[:, :k]
        return index, np.take_along_axis(self.values, index, axis=1)

    def save(self, directory: str | Path) -> Path:
        meta = {"kind": "matrix", "method": self.method, "query_ids": self.query_ids}
        return _save(
            directory, self.values, {**meta, "train_ids": self.train_ids, "metadata": self.metadata}
        )


@dataclass
class SelfInfluence:
    """One score per training example: its influence on its own loss (high = unusual/memorised;
    mislabeled examples rank high)."""

    values: np.ndarray
    train_ids: list[str]
    method: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.train_ids),):
            raise InputError(f"{self.values.shape} values for {len(self.train_ids)} ids")
        _check_finite(self.values, self.method)

    def ranking(self) -> np.ndarray:
        """Indices from highest to lowest self-influence."""
        return np.argsort(-self.values, kind="stable")

    def save(self, directory: str | Path) -> Path:
        meta = {"kind": "self", "method": self.method, "train_ids": self.train_ids}
        return _save(directory, self.values, {**meta, "metadata": self.metadata})


def load_scores(directory: str | Path) -> Scores | SelfInfluence:
    """Read what :meth:`Scores.save` or :meth:`SelfInfluence.save` wrote."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "scores.json").read_text())
        values = np.load(directory / "values.npy", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{directory} holds no readable scores ({err})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{directory}/scores.json is not an infscope scores file")
    if meta["kind"] == "self":
        return SelfInfluence(values, meta["train_ids"], meta["method"], meta["metadata"])
    return Scores(values, meta["query_ids"], meta["train_ids"], meta["method"], meta["metadata"])
