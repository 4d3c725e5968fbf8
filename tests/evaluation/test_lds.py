"""LDS arithmetic on hand-made outcomes: Spearman per query, dropped queries, CI, validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.errors import InputError
from infscope.evaluation import LDSConfig, RetrainingOutcomes, linear_datamodeling_score
from infscope.evaluation.lds import lds_ground_truth


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
