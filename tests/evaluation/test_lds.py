"""LDS arithmetic on hand-made outcomes: Spearman per query, dropped queries, CI, validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.errors import InputError
from infscope.evaluation import LDSConfig, RetrainingOutcomes, linear_datamodeling_score
from infscope.evaluation.lds import bootstrap_mean_ci, lds_difference, lds_ground_truth


def outcomes(masks: np.ndarray, outputs: np.ndarray) -> RetrainingOutcomes:
    m = masks.shape[0]
    return RetrainingOutcomes(masks, outputs, np.arange(m), np.zeros(m))


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    masks = rng.random((12, 8)) < 0.5
    scores = rng.standard_normal((4, 8))
    outputs = rng.standard_normal((12, 4))
    return masks, scores, outputs


def test_per_query_is_spearman_of_negated_prediction(case):
    masks, scores, outputs = case
    result = linear_datamodeling_score(scores, outcomes(masks, outputs), n_bootstrap=200)
    for q in range(4):
        expected = spearmanr(-(masks.astype(float) @ scores[q]), outputs[:, q]).statistic
        assert result.per_query[q] == pytest.approx(expected, abs=1e-12)
    assert result.mean == pytest.approx(result.per_query.mean())
    assert result.ci_low <= result.mean <= result.ci_high


def test_perfect_datamodel_scores_one():
    rng = np.random.default_rng(0)
    masks = rng.random((20, 10)) < 0.5
    tau = rng.standard_normal((3, 10))
    outputs = 5.0 - masks.astype(float) @ tau.T  # exactly linear, with the convention's sign
    result = linear_datamodeling_score(tau, outcomes(masks, outputs))
    np.testing.assert_allclose(result.per_query, 1.0)
    assert result.mean == pytest.approx(1.0) and result.ci_low == pytest.approx(1.0)


def test_constant_outputs_are_dropped_and_constant_predictions_score_zero(case):
    masks, scores, outputs = case
    outputs[:, 1] = 2.5 + 1e-14 * np.arange(12)  # nothing to rank for query 1 but float noise
    scores[2] = 0.0  # query 2's scores predict nothing
    result = linear_datamodeling_score(scores, outcomes(masks, outputs))
    assert result.n_dropped == 1 and np.isnan(result.per_query[1])
    assert result.per_query[2] == 0.0
    assert result.mean == pytest.approx(np.nanmean(result.per_query))
    assert result.to_dict()["per_query"][1] is None
    outputs[:] = 1.0
    with pytest.raises(InputError, match="constant"):
        linear_datamodeling_score(scores, outcomes(masks, outputs))


def test_bootstrap_is_seeded_and_narrows_with_confidence(case):
    masks, scores, outputs = case
    data = outcomes(masks, outputs)
    a = linear_datamodeling_score(scores, data, seed=5)
    b = linear_datamodeling_score(scores, data, seed=5)
    narrow = linear_datamodeling_score(scores, data, confidence=0.5, seed=5)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low <= narrow.ci_low <= narrow.ci_high <= a.ci_high
    assert a.ci_high - a.ci_low > 0


def test_validation(case):
    masks, scores, outputs = case
    data = outcomes(masks, outputs)
    with pytest.raises(InputError, match=r"\(4, 7\)"):
        linear_datamodeling_score(scores[:, :7], data)
    with pytest.raises(InputError, match="non-finite"):
        linear_datamodeling_score(np.where(scores > 1, np.nan, scores), data)
    with pytest.raises(InputError, match="confidence"):
        linear_datamodeling_score(scores, data, confidence=1.0)
    with pytest.raises(InputError, match="n_bootstrap"):
        linear_datamodeling_score(scores, data, n_bootstrap=0)
    with pytest.raises(InputError, match="at least 3 subsets"):
        linear_datamodeling_score(scores, outcomes(masks[:2], outputs[:2]))
    with pytest.raises(InputError, match="inconsistent outcomes"):
        RetrainingOutcomes(masks, outputs[:5], np.arange(12), np.zeros(12))
    with pytest.raises(InputError, match="alpha"):
        LDSConfig(alpha=1.0)
    with pytest.raises(InputError, match="num_subsets"):
        LDSConfig(num_subsets=2)


def test_ground_truth_uses_config_masks_and_distinct_seeds():
    calls = []

    def train_fn(indices, seed):
        calls.append((indices.copy(), seed))
        return np.array([float(indices.sum())])

    result = lds_ground_truth(
        train_fn, 10, LDSConfig(num_subsets=6, alpha=0.3, seed=2), progress=False
    )
    assert result.masks.shape == (6, 10) and (result.masks.sum(axis=1) == 3).all()
    assert len(set(result.seeds.tolist())) == 6
    for (indices, seed), mask, row_seed in zip(calls, result.masks, result.seeds):
        np.testing.assert_array_equal(indices, np.flatnonzero(mask))
        assert seed == row_seed
    again = lds_ground_truth(
        train_fn, 10, LDSConfig(num_subsets=6, alpha=0.3, seed=2), progress=False
    )
    np.testing.assert_array_equal(again.masks, result.masks)
    np.testing.assert_array_equal(again.seeds, result.seeds)


def _linear_case(n_query: int = 30, n_subsets: int = 40, n_train: int = 20, noise: float = 0.5):
    """Retrained measurements that a known datamodel ``tau`` predicts up to Gaussian noise."""
    rng = np.random.default_rng(7)
    masks = rng.random((n_subsets, n_train)) < 0.5
    tau = rng.standard_normal((n_query, n_train))
    outputs = -masks.astype(float) @ tau.T + noise * rng.standard_normal((n_subsets, n_query))
    return tau, outcomes(masks, outputs), rng


def test_difference_is_the_difference_of_the_two_lds_means():
    tau, truth, rng = _linear_case()
    other = tau + 2.0 * rng.standard_normal(tau.shape)
    difference = lds_difference(tau, other, truth, n_bootstrap=200)
    expected = (
        linear_datamodeling_score(tau, truth).mean - linear_datamodeling_score(other, truth).mean
    )
    assert difference.mean == pytest.approx(expected, abs=1e-12)
    assert difference.n_queries == 30 and difference.n_subsets == 40
    assert difference.to_dict()["difference"] == difference.mean


def test_the_true_datamodel_beats_a_noisy_one_and_a_tie_is_no_difference():
    tau, truth, rng = _linear_case()
    better = lds_difference(tau, tau + 2.0 * rng.standard_normal(tau.shape), truth)
    assert better.ci_low > 0.0 and better.ci_low <= better.mean <= better.ci_high
    same = lds_difference(tau, 3.0 * tau, truth, n_bootstrap=100)  # the same ranking
    assert same.mean == 0.0 and same.ci_low == 0.0 and same.ci_high == 0.0
    # two equally noisy datamodels: the interval covers zero
    first, second = (tau + 2.0 * rng.standard_normal(tau.shape) for _ in range(2))
    tie = lds_difference(first, second, truth)
    assert tie.ci_low < 0.0 < tie.ci_high


def test_difference_resamples_the_retrainings_too():
    """Few retrainings: the paired interval is wider than resampling the queries alone gives."""
    tau, truth, rng = _linear_case(n_query=60, n_subsets=8, noise=2.0)
    first, second = tau, tau + 1.5 * rng.standard_normal(tau.shape)
    paired = lds_difference(first, second, truth, seed=1)
    per_query = (
        linear_datamodeling_score(first, truth).per_query
        - linear_datamodeling_score(second, truth).per_query
    )
    low, high = bootstrap_mean_ci(per_query, 1000, 0.95, seed=1)
    assert paired.ci_high - paired.ci_low > high - low
    assert lds_difference(first, second, truth, seed=1) == paired  # seeded


def test_difference_validation(case):
    masks, scores, outputs = case
    truth = outcomes(masks, outputs)
    with pytest.raises(InputError, match="second have shape"):
        lds_difference(scores, scores[:, :5], truth)
    with pytest.raises(InputError, match="first hold 4 non-finite"):
        lds_difference(np.where(np.eye(4, 8) > 0, np.nan, scores), scores, truth)
    with pytest.raises(InputError, match="confidence"):
        lds_difference(scores, scores, truth, confidence=1.0)
    outputs[:] = 1.0
    with pytest.raises(InputError, match="constant"):
        lds_difference(scores, scores, outcomes(masks, outputs))
