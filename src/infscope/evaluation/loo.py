"""Leave-one-out (LOO) ground truth: retrain without each chosen example, with the same seed.

``deltas[q, j] = m_q(trained without indices[j]) - m_q(trained on everything)``. Sign convention:
a positive score ``tau(q, z)`` means ``z`` lowers query ``q``'s (loss-like) measurement, so
removing a helpful example *raises* it — a good attribution method has scores that correlate
*positively* with these deltas. Every retraining uses the same seed, so the removed example is the
only difference from the full run (for deterministic training, LOO is then exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infscope.attribution.scores import Scores
from infscope.errors import InputError
from infscope.evaluation.lds import rowwise_pearson, rowwise_spearman, score_values
from infscope.evaluation.retraining import (
    RetrainingOutcomes,
    RetrainingRunner,
    TrainFn,
    check_indices,
    leave_one_out_masks,
)


@dataclass(frozen=True)
class LOOResult:
    """``deltas [n_query, len(indices)]``: measurement without ``indices[j]`` minus ``full``."""

    indices: np.ndarray  # int64 [n_removed], positions in the training set
    deltas: np.ndarray  # float64 [n_query, n_removed]
    full: np.ndarray  # float64 [n_query], the measurements of the model trained on everything
    outcomes: RetrainingOutcomes  # row 0: full data; row 1 + j: without indices[j]


def leave_one_out(
    train_fn: TrainFn,
    n_train: int,
    indices: np.ndarray | list[int] | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> LOOResult:
    """Retrain once on all ``n_train`` examples and once without each of ``indices`` (default:
    every example — ``n_train + 1`` trainings), all with ``seed``; cached and resumable."""
    if indices is None:
        indices = np.arange(int(n_train))
    index = check_indices(indices, int(n_train))
    masks = leave_one_out_masks(n_train, index)
    runner = RetrainingRunner(train_fn, masks, cache_dir=cache_dir, seeds=[seed] * len(masks))
    outcomes = runner.run(progress)
    full = outcomes.outputs[0]
    deltas = (outcomes.outputs[1:] - full).T
    return LOOResult(
        indices=index, deltas=np.ascontiguousarray(deltas), full=full, outcomes=outcomes
    )


def _correlation(a: np.ndarray, b: np.ndarray, spearman: bool) -> float:
    row = (rowwise_spearman if spearman else rowwise_pearson)(a.reshape(1, -1), b.reshape(1, -1))
    return float(row[0])


def loo_correlation(scores: np.ndarray | Scores, loo: LOOResult) -> dict[str, float | int]:
    """How well ``scores [n_query, n_train]`` agree with LOO deltas (positive = agree).

    ``pearson``/``spearman``: over all (query, removed example) pairs; ``*_per_query_mean``: the
    mean over queries of the correlation across removed examples (queries where it is undefined —
    constant deltas or scores, or a single removed example — are skipped; NaN if all are).
    """
    values = score_values(scores)
    if not isinstance(loo, LOOResult):
        raise InputError(f"loo must be a LOOResult, got {type(loo).__name__}")
    n_query, n_removed = loo.deltas.shape
    if values.shape[0] != n_query:
        raise InputError(f"scores have {values.shape[0]} queries but the LOO deltas {n_query}")
    if values.shape[1] <= int(loo.indices.max()):
        raise InputError(
            f"scores cover {values.shape[1]} training examples but LOO removed index "
            f"{int(loo.indices.max())}"
        )
    chosen = values[:, loo.indices]
    per_pearson = rowwise_pearson(chosen, loo.deltas)
    per_spearman = rowwise_spearman(chosen, loo.deltas)

    def mean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    return {
        "pearson": _correlation(chosen, loo.deltas, spearman=False),
        "spearman": _correlation(chosen, loo.deltas, spearman=True),
        "pearson_per_query_mean": mean(per_pearson),
        "spearman_per_query_mean": mean(per_spearman),
        "n_pairs": int(n_query * n_removed),
    }
