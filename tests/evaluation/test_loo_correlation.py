"""loo_correlation against scipy on hand-made deltas, and its validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from infscope.errors import InputError
from infscope.evaluation import LOOResult, RetrainingOutcomes, loo_correlation


def make_result(indices, deltas):
    n = len(indices) + 1
    dummy = RetrainingOutcomes(
        np.ones((n, 10), bool), np.zeros((n, deltas.shape[0])), np.zeros(n, int), np.zeros(n)
    )
    return LOOResult(np.asarray(indices), deltas, np.zeros(deltas.shape[0]), dummy)


def test_matches_scipy():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 10))
    indices = [1, 4, 6, 9]
    deltas = scores[:, indices] + 0.5 * rng.standard_normal((3, 4))
    result = loo_correlation(scores, make_result(indices, deltas))
    a, b = scores[:, indices].ravel(), deltas.ravel()
    assert result["pearson"] == pytest.approx(pearsonr(a, b).statistic)
    assert result["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    per_q = [pearsonr(scores[q, indices], deltas[q]).statistic for q in range(3)]
    assert result["pearson_per_query_mean"] == pytest.approx(np.mean(per_q))
    per_q = [spearmanr(scores[q, indices], deltas[q]).statistic for q in range(3)]
    assert result["spearman_per_query_mean"] == pytest.approx(np.mean(per_q))
    assert result["n_pairs"] == 12


def test_undefined_per_query_is_skipped_and_shapes_checked():
    scores = np.arange(20.0).reshape(2, 10)
    deltas = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])  # query 1: constant deltas
    result = loo_correlation(scores, make_result([0, 1, 2], deltas))
    assert result["pearson_per_query_mean"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="3 queries but the LOO deltas 2"):
        loo_correlation(np.zeros((3, 10)), make_result([0, 1, 2], deltas))
    with pytest.raises(InputError, match="removed index 12"):
        loo_correlation(scores, make_result([0, 1, 12], deltas))
