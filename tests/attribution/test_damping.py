"""Damping selection by LDS on held-out queries against retrained models."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from infscope.attribution.damping import select_damping
from infscope.attribution.influence import InfluenceFunction
from infscope.errors import InputError
from infscope.evaluation import RetrainingRunner, linear_datamodeling_score, random_subset_masks
from infscope.tasks import ClassificationTask
from tests.attribution.test_influence import (
    _fit_softmax_regression,
    _logistic_data,
    _split,
    _stores,
)


def test_select_damping_keeps_the_best_lds(tmp_path):
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
    grid = (1e-3, 0.05, 1e3)
    selection = select_damping(
        lambda d: InfluenceFunction(damping=d, damping_mode="absolute"),
        train_store,
        query_store,
        outcomes,
        grid,
    )
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
    with pytest.raises(InputError, match="outcomes are for"):
        select_damping(lambda d: InfluenceFunction(damping=d), train_store, train_store, outcomes)
