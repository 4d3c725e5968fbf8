"""The label-noise signal of influence, on plain arrays (so that ``Selection`` and the
diagnostics can report it without importing the selectors): a candidate's mean influence on its
nearest targets (:func:`target_alignment`), and the share of a selection that pulls against its
targets (:func:`noise_in_picks`). The selector that uses them is
:class:`~infscope.selection.alignment.TargetAligned`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError

_BLOCK = 4096  # candidates per block of the candidate x target similarity


def target_alignment(
    influence: np.ndarray,
    features: np.ndarray,
    target_features: np.ndarray,
    neighbours: int = 10,
) -> np.ndarray:
    """``[n]``: each candidate's mean influence over its ``neighbours`` nearest targets (cosine
    of ``features`` ``[n, d]`` to ``target_features`` ``[m, d]``); ``influence`` is ``[m, n]``.
    ``neighbours`` above ``m`` means every target."""
    influence = np.asarray(influence, dtype=np.float64)
    m, n = influence.shape
    if neighbours < 1:
        raise InputError(f"neighbours must be at least 1, got {neighbours}")
    if len(target_features) != m or len(features) != n:
        raise InputError(
            f"influence is {m} x {n} but there are {len(target_features)} target and "
            f"{len(features)} candidate feature rows"
        )
    k = min(int(neighbours), m)
    cand, targ = (
        unit_rows(np.asarray(features, float)),
        unit_rows(np.asarray(target_features, float)),
    )
    out = np.empty(n)
    for first in range(0, n, _BLOCK):
        rows = np.arange(first, min(first + _BLOCK, n))
        sim = cand[rows] @ targ.T  # [b, m]
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < m else None
        block = influence[:, rows].T  # [b, m]
        out[rows] = (
            block.mean(axis=1) if near is None else np.take_along_axis(block, near, 1).mean(1)
        )
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class NoiseEstimate:
    """The share of the picks and of the pool whose label pulls against their nearest targets
    (negative :func:`target_alignment`)."""

    selected: float
    pool: float
    neighbours: int

    def text(self) -> str:
        return (
            f"estimated label noise: {self.selected:.1%} of the picks pull against their "
            f"{self.neighbours} nearest targets (pool {self.pool:.1%}; read against a clean "
            "reference: a weak warm-up model puts clean rows there too)"
        )


def noise_in_picks(
    influence: np.ndarray | None,
    features: np.ndarray | None,
    target_features: np.ndarray | None,
    indices: np.ndarray,
    neighbours: int = 10,
) -> NoiseEstimate | None:
    """The :class:`NoiseEstimate` of the picks ``indices``: None when an input is missing, when
    the influence's query rows are not the target feature rows, or when nothing was picked."""
    if influence is None or features is None or target_features is None or len(indices) == 0:
        return None
    if len(target_features) != influence.shape[0]:
        return None
    against = target_alignment(influence, features, target_features, neighbours) < 0
    return NoiseEstimate(
        float(against[np.asarray(indices)].mean()), float(against.mean()), neighbours
    )
