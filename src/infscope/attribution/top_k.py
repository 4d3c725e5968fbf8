"""Streaming top-k: each query's ``k`` most helpful and most harmful training examples (and,
optionally, the queries each training example helps most) found while the score blocks stream
past, so the full ``n_query × n_train`` matrix is never held — memory is the block size plus
``k`` per query (and per training example).

:meth:`~infscope.attribution.base.Estimator.score_top` feeds an estimator's checkpoint-summed
score blocks to a :class:`TopKAccumulator`; the result is a :class:`TopScores`, the same
rankings as :meth:`Scores.top` on the full matrix (ties broken by the lower training index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError
from infscope.io import write_atomic

__all__ = ["TopKAccumulator", "TopScores"]

FORMAT = "infscope.top_scores"
ARRAYS = ("helpful", "helpful_values", "harmful", "harmful_values")
TRAIN_ARRAYS = ("train_helpful", "train_helpful_values")


def _nonzero(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(keep)`` (row-major order), for a sparse boolean matrix ~4× faster: its
    8-byte words are scanned first, then only the bytes of the words that hold a ``True``."""
    width = keep.shape[1]
    if width % 8 or not keep.flags.c_contiguous:
        return np.nonzero(keep)
    words = np.flatnonzero(keep.view(np.uint64))
    if len(words) * 8 > keep.size // 8:  # dense (early blocks): the plain scan is faster
        return np.nonzero(keep)
    flat = (words[:, None] * 8 + np.arange(8)).ravel()
    return np.divmod(flat[keep.ravel()[flat]], width)


def _merge(
    best: np.ndarray,
    best_index: np.ndarray,
    block: np.ndarray,
    first: int,
    k: int,
    sign: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` largest of ``best`` (indices ``best_index``) and ``sign × block``
    (indices ``first, first + 1, …``), sorted descending, ties by the lower index.

    Only the block's scores that can enter are sorted: those at least the row's current
    ``k``-th best, and of those at most the block's own ``k`` largest (with ties) — once the
    running top-k has filled, a block holds few, and the merge costs a comparison and a count
    per score instead of a sort of ``k`` plus the block's width (``sign`` spares a negated
    copy of the block)."""
    bound = best[:, -1:]
    keep = block >= bound if sign > 0 else block <= -bound
    row, col = _nonzero(keep)  # by row, then column
    counts = np.bincount(row, minlength=len(block))
    crowded = np.flatnonzero(counts > k)
    if crowded.size:  # more candidates than places: the block's k largest per row, ties kept
        rows = sign * block[crowded]
        kth = np.partition(rows, rows.shape[1] - k, axis=1)[:, rows.shape[1] - k]
        keep[crowded] &= rows >= kth[:, None]
        row, col = np.nonzero(keep)
        counts = np.bincount(row, minlength=len(block))
    active = np.flatnonzero(counts)
    if not active.size:
        return best, best_index
    position = np.cumsum(counts > 0) - 1  # row -> its place among the active rows
    starts = np.cumsum(counts) - counts  # row -> its first entry in (row, col)
    slot = np.arange(len(row)) - starts[row]
    row = position[row]
    # empty slots: -inf with the largest index, after every real entry and every empty one
    width = int(counts.max())
    new = np.full((len(active), width), -np.inf)
    new_index = np.full((len(active), width), np.iinfo(np.int64).max, dtype=np.int64)
    new[row, slot] = sign * block[active[row], col]
    new_index[row, slot] = first + col
    values = np.concatenate([best[active], new], axis=1)
    indices = np.concatenate([best_index[active], new_index], axis=1)
    # descending value, then ascending index: one sort by value, and the rows where equal
    # values meet within the first k + 1 (ties to break by index) sorted again by both keys
    order = np.argsort(-values, axis=1)[:, : k + 1]
    ranked = np.take_along_axis(values, order, axis=1)
    tied = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    order = order[:, :k]
    if tied.size:
        order[tied] = np.lexsort((indices[tied], -values[tied]), axis=1)[:, :k]
    best, best_index = best.copy(), best_index.copy()
    best[active] = np.take_along_axis(values, order, axis=1)
    best_index[active] = np.take_along_axis(indices, order, axis=1)
    return best, best_index


class TopKAccumulator:
    """Running top-``k`` per query row (largest and smallest scores) and, with ``per_train``,
    the top ``per_train`` queries per training column, merged block by block."""

    def __init__(self, n_query: int, n_train: int, k: int, per_train: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        if isinstance(per_train, bool) or not isinstance(per_train, int) or per_train < 0:
            raise InputError(f"per_train must be a non-negative int, got {per_train!r}")
        self.k, self.per_train = min(k, n_train), min(per_train, n_query)
        self.n_query, self.n_train = n_query, n_train
        self._best = self._empty(n_query, self.k, n_train)
        self._worst = self._empty(n_query, self.k, n_train)
        self._train = self._empty(n_train, self.per_train, n_query) if self.per_train else None
        self._covered = 0  # cells merged, to check every cell was seen once

    @staticmethod
    def _empty(rows: int, k: int, sentinel: int) -> list[np.ndarray]:
        return [np.full((rows, k), -np.inf), np.full((rows, k), sentinel, dtype=np.int64)]

    def add(self, q_start: int, t_start: int, block: np.ndarray) -> None:
        """Merge scores ``block[i, j]`` of query ``q_start + i`` and train ``t_start + j``."""
        block = np.asarray(block, dtype=np.float64)
        rows = slice(q_start, q_start + block.shape[0])
        for state, sign in ((self._best, 1.0), (self._worst, -1.0)):
            state[0][rows], state[1][rows] = _merge(
                state[0][rows], state[1][rows], block, t_start, self.k, sign
            )
        if self._train is not None:
            cols = slice(t_start, t_start + block.shape[1])
            self._train[0][cols], self._train[1][cols] = _merge(
                self._train[0][cols], self._train[1][cols], block.T, q_start, self.per_train
            )
        self._covered += block.size

    def result(
        self, query_ids: list[str], train_ids: list[str], method: str, metadata: dict[str, Any]
    ) -> TopScores:
        if self._covered != self.n_query * self.n_train:
            raise InputError(
                f"{self._covered} scores merged, {self.n_query * self.n_train} expected"
            )
        arrays = {
            "helpful": self._best[1],
            "helpful_values": self._best[0].astype(np.float32),
            "harmful": self._worst[1],
            "harmful_values": (-self._worst[0]).astype(np.float32),
        }
        if self._train is not None:
            arrays["train_helpful"] = self._train[1]
            arrays["train_helpful_values"] = self._train[0].astype(np.float32)
        return TopScores(list(query_ids), list(train_ids), method, arrays, dict(metadata))


@dataclass
class TopScores:
    """Per query, the ``k`` most helpful (largest scores, best first) and most harmful
    (smallest, worst first) training examples as indices into ``train_ids`` with their scores;
    with ``train_helpful``, per training example the queries it helps most (indices into
    ``query_ids``)."""

    query_ids: list[str]
    train_ids: list[str]
    method: str
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        """``"helpful"`` and/or ``"harmful"``: what was searched (an index may search one)."""
        return [name for name in ("helpful", "harmful") if name in self.arrays]

    @property
    def k(self) -> int:
        return self.arrays[self.directions[0]].shape[1]

    def top(self, harmful: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` ``[n_query, k]``, as :meth:`Scores.top` would give."""
        name = "harmful" if harmful else "helpful"
        if name not in self.arrays:
            raise InputError(
                f"these top-k scores hold no {name} examples (searched: {self.directions})"
            )
        return self.arrays[name], self.arrays[f"{name}_values"]

    def top_rows(self, k: int | None = None, max_queries: int | None = None) -> list[dict]:
        """The rows :meth:`Scores.top_rows` gives: ``query_id``, ``direction``, ``rank``,
        ``train_id``, ``score``."""
        k = self.k if k is None else k
        if k < 1 or k > self.k:
            raise InputError(f"k must be between 1 and {self.k}, got {k}")
        rows = []
        for q in range(min(max_queries or len(self.query_ids), len(self.query_ids))):
            for word, harmful in (("helps", False), ("hurts", True)):
                if ("harmful" if harmful else "helpful") not in self.arrays:
                    continue
                index, values = self.top(harmful)
                for rank in range(k):
                    rows.append(
                        {
                            "query_id": self.query_ids[q],
                            "direction": word,
                            "rank": rank + 1,
                            "train_id": self.train_ids[index[q, rank]],
                            "score": float(values[q, rank]),
                        }
                    )
        return rows

    def compact(self) -> TopScores:
        """The same top-k with ``train_ids`` cut to the training examples it names (in their
        original order, indices renumbered): what a top-k over a large training set saves
        without writing every training id."""
        if any(name.startswith("train_") for name in self.arrays):
            raise InputError("per-training-example arrays need every training id")
        named = np.unique(np.concatenate([self.arrays[d].ravel() for d in self.directions]))
        arrays = dict(self.arrays)
        for direction in self.directions:
            arrays[direction] = np.searchsorted(named, self.arrays[direction]).astype(np.int64)
        ids = [self.train_ids[i] for i in named]
        return TopScores(list(self.query_ids), ids, self.method, arrays, dict(self.metadata))

    def save(self, directory: str | Path) -> Path:
        """``top.npz`` (plain arrays, no pickle) and ``top.json`` (ids and settings), each
        written atomically, the JSON last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "top.npz", lambda h: np.savez(h, **self.arrays))
        meta = {
            "format": FORMAT,
            "method": self.method,
            "query_ids": self.query_ids,
            "train_ids": self.train_ids,
            "metadata": self.metadata,
        }
        text = json.dumps(meta).encode()
        write_atomic(directory / "top.json", lambda h: h.write(text))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TopScores:
        """Read what :meth:`save` wrote, validating shapes and index ranges."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "top.json").read_text())
            with np.load(directory / "top.npz", allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise InputError(f"{directory} holds no readable top-k scores: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{directory} is not an infscope top-k directory")
        query_ids, train_ids = list(meta["query_ids"]), list(meta["train_ids"])
        expected = {
            name
            for pair in (ARRAYS[:2], ARRAYS[2:], TRAIN_ARRAYS)
            if pair[0] in arrays
            for name in pair
        }
        if set(arrays) != expected or not expected & {"helpful", "harmful"}:
            raise InputError(f"{directory}: arrays {sorted(arrays)}, expected {sorted(expected)}")
        for name in expected:
            rows = len(train_ids) if name.startswith("train_") else len(query_ids)
            if arrays[name].shape[0] != rows:
                raise InputError(
                    f"{directory}: {name} has {arrays[name].shape[0]} rows, not {rows}"
                )
        for name in expected & {"helpful", "harmful", "train_helpful"}:
            limit = len(query_ids) if name.startswith("train_") else len(train_ids)
            index = arrays[name]
            if index.size and not (index.min() >= 0 and index.max() < limit):
                raise InputError(f"{directory}: {name} indices out of range")
        return cls(query_ids, train_ids, str(meta["method"]), arrays, meta.get("metadata", {}))

    def to_pandas(self) -> Any:
        """The rows of :meth:`top_rows` as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.top_rows())
