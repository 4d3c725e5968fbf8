"""Choosing the damping ``λ`` from data.

A factor of ten in ``λ`` can move the linear datamodeling score (LDS) more than the choice of
estimator does. The relative defaults (:mod:`infscope.attribution.damped`) sit near the best value
on the benchmark tasks; given a counterfactual signal on held-out queries — models retrained on
random subsets, which may be cheap (few subsets, short warm-started fine-tuning) —
:func:`select_damping` does better: it fits the estimator **once**, scores the held-out queries
at every ``λ`` of a grid with :meth:`~infscope.attribution.damped.DampedEstimator.with_damping`
(which reuses all λ-independent work), widens the grid by half a decade whenever the best value
sits at its edge, and keeps the ``λ`` with the best LDS, recording the whole curve with the
estimator. The optimum can be narrow (on logistic regression the LDS of the exact Hessian moves
0.906 → 0.958 → 0.935 across one decade), hence half-decade steps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.attribution.damped import DampedEstimator
from infscope.errors import InputError
from infscope.evaluation.lds import linear_datamodeling_score
from infscope.evaluation.retraining import RetrainingOutcomes
from infscope.store import FeatureStore

#: Relative dampings tried first (in units of the estimator's damping scale): half decades.
DEFAULT_GRID = tuple(float(f"{10.0 ** (k / 2):.3g}") for k in range(-6, 3))
#: Factor by which the grid grows past an edge.
WIDEN_STEP = 10.0**0.5


@dataclass
class DampingSelection:
    """The chosen damping, the fitted estimator that uses it, and the LDS of every candidate."""

    damping: float
    estimator: DampedEstimator
    lds: dict[float, float]
    widened: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "chosen": self.damping,
            "lds": {str(k): v for k, v in sorted(self.lds.items())},
            "widened": self.widened,
        }


def select_damping(
    estimator: DampedEstimator,
    train: FeatureStore,
    heldout_queries: FeatureStore,
    outcomes: RetrainingOutcomes,
    grid: Sequence[float] = DEFAULT_GRID,
    max_widen: int = 3,
) -> DampingSelection:
    """Fit ``estimator`` on ``train`` once (unless it is already fitted on it), then keep the
    damping in ``grid`` whose held-out scores best predict ``outcomes`` (LDS). When the best value
    is the grid's smallest or largest, the grid grows by half a decade in that direction, at most
    ``max_widen`` times. ``outcomes`` must hold the held-out queries' measurements of models
    retrained on subsets of ``train`` (same example order). The estimator passed in is not
    changed (a fitted copy is returned); the choice travels with every score it produces as
    ``describe()["damping_selection"]``.
    """
    if not isinstance(estimator, DampedEstimator):
        raise InputError(f"{type(estimator).__name__} has no damping to select")
    candidates = sorted({float(d) for d in grid})
    if not candidates or min(candidates) <= 0:
        raise InputError(f"the damping grid must hold positive values, got {list(grid)}")
    if max_widen < 0:
        raise InputError(f"max_widen must be >= 0, got {max_widen}")
    if outcomes.n_train != train.n_examples or outcomes.n_query != heldout_queries.n_examples:
        raise InputError(
            f"outcomes are for {outcomes.n_train} training examples and {outcomes.n_query} queries; "
            f"the stores hold {train.n_examples} and {heldout_queries.n_examples}"
        )
    fitted = estimator if estimator.train is train else _fitted_copy(estimator, train)
    results: dict[float, float] = {}
    estimators: dict[float, DampedEstimator] = {}
    widened = 0
    while True:
        for damping in candidates:
            if damping in results:
                continue
            candidate = fitted.with_damping(damping)
            try:
                scores = candidate.score(heldout_queries)
            except InputError:  # e.g. an indefinite H + λI at this λ: not a candidate
                results[damping] = float("nan")
                continue
            results[damping] = float(linear_datamodeling_score(scores, outcomes).mean)
            estimators[damping] = candidate
        finite = {d: v for d, v in results.items() if np.isfinite(v)}
        if not finite:
            raise InputError(
                "no damping gave a finite LDS: the held-out outcomes do not vary, or every "
                "candidate failed"
            )
        best = max(finite, key=finite.get)
        if widened >= max_widen or min(results) < best < max(results):
            break
        widened += 1
        candidates = [best * WIDEN_STEP if best == max(results) else best / WIDEN_STEP]
    selection = DampingSelection(best, estimators[best], results, widened)
    estimators[best].notes["damping_selection"] = selection.to_dict()
    return selection


def _fitted_copy(estimator: DampedEstimator, train: FeatureStore) -> DampedEstimator:
    fresh = copy.copy(estimator)
    fresh.notes = dict(estimator.notes)
    return fresh.fit(train)
