"""The forget set and the remaining data: which training examples an update removes.

Ids, never positions, name the examples to forget, as everywhere in infscope; the split keeps the
positions of both parts in the training set so that results can be joined back to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.data import ExampleSet, positions
from infscope.errors import InputError


@dataclass(frozen=True)
class ForgetSplit:
    """``data`` split into the examples to forget and the rest (each with its positions)."""

    forget: ExampleSet
    rest: ExampleSet
    forget_positions: np.ndarray  # int64, in ``forget`` order
    rest_positions: np.ndarray  # int64, ascending

    @property
    def n_train(self) -> int:
        return len(self.forget) + len(self.rest)


def forget_split(data: ExampleSet, forget_ids: Sequence[str]) -> ForgetSplit:
    """Split ``data`` by ``forget_ids``; an :class:`InputError` for an unknown or repeated id, an
    empty forget set, or one that would leave no data."""
    ids = [str(i) for i in forget_ids]
    if not ids:
        raise InputError("the forget set is empty: give at least one example id")
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"forget ids repeat: {', '.join(repeated)}")
    where = np.asarray(positions(ids, data.ids, "the training data", "forget ids"), dtype=np.int64)
    keep = np.ones(len(data), dtype=bool)
    keep[where] = False
    rest = np.flatnonzero(keep)
    if rest.size == 0:
        raise InputError("the forget set holds every training example: nothing would remain")
    return ForgetSplit(
        forget=ExampleSet([data[int(i)] for i in where], tuple(data.ids[int(i)] for i in where)),
        rest=ExampleSet([data[int(i)] for i in rest], tuple(data.ids[int(i)] for i in rest)),
        forget_positions=where,
        rest_positions=rest.astype(np.int64),
    )
