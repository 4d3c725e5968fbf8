"""LDS and leave-one-out on ridge regression, where ground truth and influence are closed-form."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import Scores
from infscope.evaluation import (
    LDSConfig,
    lds_ground_truth,
    leave_one_out,
    linear_datamodeling_score,
    loo_correlation,
)

from .ridge import make_ridge


@pytest.fixture(scope="module")
def ridge():
    return make_ridge()


@pytest.fixture(scope="module")
def lds_outcomes(ridge):
    return lds_ground_truth(ridge.train_fn, ridge.n, LDSConfig(50, 0.5, 0), progress=False)


def test_leave_one_out_matches_closed_form(ridge):
    result = leave_one_out(ridge.train_fn, ridge.n, progress=False)
    np.testing.assert_array_equal(result.indices, np.arange(ridge.n))
    assert result.deltas.shape == (20, ridge.n)
    np.testing.assert_allclose(result.deltas, ridge.exact_loo_deltas(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.full, ridge.train_fn(np.arange(ridge.n), 0), atol=1e-12)


def test_leave_one_out_subset_of_indices(ridge):
    chosen = [3, 0, 17]
    result = leave_one_out(ridge.train_fn, ridge.n, indices=chosen, progress=False)
    assert result.outcomes.masks.sum(axis=1).tolist() == [ridge.n] + [ridge.n - 1] * 3
    assert (result.outcomes.seeds == 0).all()  # one seed: only the removed example differs
    np.testing.assert_allclose(result.deltas, ridge.exact_loo_deltas()[:, chosen], atol=1e-8)


def test_influence_correlates_with_loo(ridge):
    result = leave_one_out(ridge.train_fn, ridge.n, progress=False)
    tau = ridge.influence()
    agreement = loo_correlation(tau, result)
    # measured: pearson 0.9968, spearman 0.9955, per-query means 0.948 / 0.966 (800 pairs)
    assert agreement["pearson"] > 0.9
    assert agreement["spearman"] > 0.9
    assert agreement["pearson_per_query_mean"] > 0.8
    assert agreement["n_pairs"] == 20 * ridge.n
    # a sign error anywhere (scores or deltas) would flip this
    assert loo_correlation(-tau, result)["pearson"] < -0.9


def test_lds_of_influence_is_high(ridge, lds_outcomes):
    tau = ridge.influence()
    result = linear_datamodeling_score(tau, lds_outcomes)
    # measured: LDS 0.795, 95% CI [0.625, 0.917] over 20 queries, 50 subsets of alpha = 0.5
    assert result.mean > 0.5
    assert result.ci_low <= result.mean <= result.ci_high
    assert result.n_subsets == 50 and result.n_dropped == 0
    assert result.per_query.shape == (20,)
    # a Scores object gives the same
    scores = Scores(tau, [f"q{i}" for i in range(20)], [f"t{i}" for i in range(ridge.n)], "hand")
    assert linear_datamodeling_score(scores, lds_outcomes).mean == result.mean


def test_lds_of_random_and_negated_scores(ridge, lds_outcomes):
    tau = ridge.influence()
    random = np.random.default_rng(1).standard_normal(tau.shape)
    # measured: random -0.022, negated -0.795
    assert abs(linear_datamodeling_score(random, lds_outcomes).mean) < 0.2
    assert linear_datamodeling_score(-tau, lds_outcomes).mean < -0.5
