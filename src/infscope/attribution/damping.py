"""Choosing the damping ``λ`` from data.

A factor of ten in ``λ`` can move the linear datamodeling score (LDS) more than the choice of
estimator does, and the best ``λ`` differs per method, so infscope does not guess: given a
counterfactual signal on held-out queries — models retrained on random subsets, which may be
cheap (few subsets, short warm-started fine-tuning) — :func:`select_damping` scores every
``λ`` on a grid by LDS and keeps the best, recording the whole curve with the estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from infscope.attribution.base import Estimator
from infscope.errors import InputError
from infscope.evaluation.lds import linear_datamodeling_score
from infscope.evaluation.retraining import RetrainingOutcomes
from infscope.store import FeatureStore

DEFAULT_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class DampingSelection:
    """The chosen damping, the fitted estimator that uses it, and the LDS of every candidate."""

    damping: float
    estimator: Estimator
    lds: dict[float, float]

    def to_dict(self) -> dict[str, object]:
        return {"chosen": self.damping, "lds": {str(k): v for k, v in self.lds.items()}}


def select_damping(
    make_estimator: Callable[[float], Estimator],
    train: FeatureStore,
    heldout_queries: FeatureStore,
    outcomes: RetrainingOutcomes,
    grid: Sequence[float] = DEFAULT_GRID,
) -> DampingSelection:
    """Fit ``make_estimator(λ)`` for each ``λ`` in ``grid``, score ``heldout_queries`` and keep
    the ``λ`` whose scores best predict ``outcomes`` (LDS). ``outcomes`` must hold the held-out
    queries' measurements of models retrained on subsets of ``train`` (same example order).

    The returned estimator carries ``describe()["damping_selection"]``, so the choice travels
    with every score it produces.
    """
    if not grid:
        raise InputError("the damping grid is empty")
    if outcomes.n_train != train.n_examples or outcomes.n_query != heldout_queries.n_examples:
        raise InputError(
            f"outcomes are for {outcomes.n_train} training examples and {outcomes.n_query} queries; "
            f"the stores hold {train.n_examples} and {heldout_queries.n_examples}"
        )
    results: dict[float, float] = {}
    fitted: dict[float, Estimator] = {}
    for damping in grid:
        estimator = make_estimator(float(damping)).fit(train)
        lds = linear_datamodeling_score(estimator.score(heldout_queries), outcomes).mean
        results[float(damping)] = float(lds)
        fitted[float(damping)] = estimator
    finite = {d: v for d, v in results.items() if np.isfinite(v)}
    if not finite:
        raise InputError("no damping gave a finite LDS: the held-out outcomes do not vary")
    best = max(finite, key=finite.get)
    selection = DampingSelection(best, fitted[best], results)
    fitted[best].notes["damping_selection"] = selection.to_dict()
    return selection
