"""Damping selection by LDS on held-out queries against retrained models: one fit for the whole
grid, a grid that widens at its edges, and an estimator that is returned, not changed."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from infscope.attribution.influence import InfluenceFunction
from infscope.curvature.solvers import ExactSolver
from infscope.errors import InputError
from infscope.evaluation import (
    RetrainingRunner,
    linear_datamodeling_score,
    random_subset_masks,
    select_damping,
)
from infscope.tasks import ClassificationTask
from tests.attribution.test_influence import (
    _fit_softmax_regression,
    _logistic_data,
    _split,
    _stores,
)


class CountingExact(ExactSolver):
    """The exact solver, counting its (λ-independent) preparations."""

    prepared = 0

    def prepare(self, curvature):
        CountingExact.prepared += 1
        return super().prepare(curvature)


@pytest.fixture
def problem(tmp_path):
    n, reg = 60, 0.05
    x, y = _logistic_data(n, n_query=10, seed=3)
    model = _fit_softmax_regression(x[:n], y[:n], reg)
    train, query = _split(x, y, n)
    _, train_store, query_store = _stores(tmp_path, model, ClassificationTask(), train, query)

    def train_fn(indices: np.ndarray, seed: int) -> np.ndarray:
        refit = _fit_softmax_regression(x[indices], y[indices], reg, init=model.state_dict())
        return nn.functional.cross_entropy(refit(x[n:]), y[n:], reduction="none").detach().numpy()

    outcomes = RetrainingRunner(train_fn, random_subset_masks(n, 12, 0.5, seed=0)).run(
        progress=False
    )
    return train_store, query_store, outcomes


def test_select_damping_keeps_the_best_lds_and_fits_once(problem):
    train_store, query_store, outcomes = problem
    grid = (1e-3, 0.05, 1e3)
    CountingExact.prepared = 0
    given = InfluenceFunction(solver=CountingExact(), damping=1.0, damping_mode="absolute")
    selection = select_damping(given, train_store, query_store, outcomes, grid, max_widen=0)
    assert CountingExact.prepared == 1  # one eigendecomposition for the whole grid
    by_hand = {
        d: linear_datamodeling_score(
            InfluenceFunction(damping=d, damping_mode="absolute")
            .fit(train_store)
            .score(query_store),
            outcomes,
        ).mean
        for d in grid
    }
    assert selection.lds == pytest.approx(by_hand)
    assert selection.damping == max(by_hand, key=by_hand.get)
    assert selection.estimator.absolute_damping == {"final": selection.damping}
    assert selection.estimator.describe()["damping_selection"]["chosen"] == selection.damping
    assert given.damping == 1.0 and given.train is None  # the estimator passed in is unchanged
    with pytest.raises(InputError, match="outcomes are for"):
        select_damping(InfluenceFunction(), train_store, train_store, outcomes)


def test_select_damping_widens_the_grid_at_an_edge(problem):
    """On this problem the LDS grows with λ up to 1e3 (measured: 0.708 at 1e-3, 0.774 at 0.1,
    0.875 at 1, 0.898 at 10): a grid whose best value is its largest grows step by step,
    at most ``max_widen`` times (half a decade each), and keeps the best value found."""
    train_store, query_store, outcomes = problem
    selection = select_damping(
        InfluenceFunction(), train_store, query_store, outcomes, grid=(1e-3, 1e-2), max_widen=3
    )
    steps = [1e-3, 1e-2, 10**-1.5, 1e-1, 10**-0.5]
    assert sorted(selection.lds) == pytest.approx(steps)
    assert selection.widened == 3 and selection.damping == pytest.approx(10**-0.5)
    values = [selection.lds[d] for d in sorted(selection.lds)]
    assert values[-1] > values[2] > values[1]
    assert selection.estimator.absolute_damping["final"] == pytest.approx(
        10**-0.5 * selection.estimator.damping_units["final"]
    )
    fixed = select_damping(
        InfluenceFunction(), train_store, query_store, outcomes, grid=(1e-3, 1e-2), max_widen=0
    )
    assert fixed.damping == pytest.approx(1e-2) and fixed.widened == 0
