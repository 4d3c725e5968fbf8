"""Low-rank preconditioned queries: the factored products equal scores of the truncated-SVD
matrices, are exact when the rank covers a module, and EK-FAC with ``query_rank`` converges to
the exact scores as the rank grows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.attribution.kfac import EKFAC
from infscope.attribution.low_rank import LowRankQueries
from infscope.errors import InputError
from infscope.store import BlockLayout


def _layout():
    """A wide module (rows < cols), a tall one (rows > cols) and a dense 2 × 5 block."""
    layout = BlockLayout.of([("wide", 6, 9, True), ("tall", 8, 5, True), ("dense", 2, 5, False)])
    return layout, layout.width


def _truncated(matrix: np.ndarray, rank: int) -> np.ndarray:
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


@pytest.mark.parametrize("rank", [1, 3, 5, 9])
def test_products_are_scores_of_the_truncated_matrices(rank):
    layout, dim = _layout()
    rng = np.random.default_rng(0)
    queries, train = rng.normal(size=(7, dim)), rng.normal(size=(11, dim))
    chunks = [queries[:4], queries[4:]]  # compressed in two chunks, as a store yields them
    factored = LowRankQueries.compress(chunks, layout, len(queries), rank)
    reference = np.zeros_like(queries)
    for entry in layout:
        for q in range(len(queries)):
            matrix = queries[q, entry.columns].reshape(entry.rows, entry.cols)
            if entry.kronecker and min(entry.rows, entry.cols) > rank:
                matrix = _truncated(matrix, rank)
            reference[q, entry.columns] = matrix.ravel()
    np.testing.assert_allclose(factored.products(train), reference @ train.T, rtol=1e-10)
    kept = (reference**2).sum() / (queries**2).sum()
    assert factored.energy == pytest.approx(kept, rel=1e-10)
    if rank >= 8:  # covers every module: exact
        assert factored.energy == pytest.approx(1.0)
        np.testing.assert_allclose(factored.products(train), queries @ train.T, rtol=1e-10)
    else:
        assert factored.energy < 1.0


def test_compress_refuses_bad_ranks_and_row_counts():
    layout, dim = _layout()
    rows = np.ones((3, dim))
    for rank in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="rank"):
            LowRankQueries.compress([rows], layout, 3, rank)
    with pytest.raises(InputError, match="announced"):
        LowRankQueries.compress([rows], layout, 2, 2)
    with pytest.raises(InputError, match="announced"):
        LowRankQueries.compress([rows], layout, 4, 2)
    with pytest.raises(InputError, match="query_rank"):
        EKFAC(None, query_rank=0)


def test_ekfac_query_rank_converges_to_the_exact_scores(eigen):
    *_, basis, _, (_, train_store, query_store), _ = eigen
    exact = EKFAC(basis).fit(train_store).score(query_store).values
    largest = max(min(m.rows, m.cols) for m in basis.modules if m.kronecker)
    errors, energies = [], []
    for rank in (1, 2, 4, largest):
        estimator = EKFAC(basis, query_rank=rank).fit(train_store)
        scores = estimator.score(query_store)
        assert scores.metadata["query_rank"] == rank
        energies.append(scores.metadata["query_energy"])
        errors.append(np.linalg.norm(scores.values - exact) / np.linalg.norm(exact))
    assert errors[-1] < 1e-5 and energies[-1] == pytest.approx(1.0)
    assert errors == sorted(errors, reverse=True) and energies == sorted(energies)
    assert spearmanr(
        EKFAC(basis, query_rank=2).fit(train_store).score(query_store).values.ravel(),
        exact.ravel(),
    )[0] > 0.9


def test_ekfac_query_rank_with_relatif_and_on_a_torch_device(eigen):
    *_, basis, _, (_, train_store, query_store), _ = eigen
    exact = EKFAC(basis, normalize="relatif").fit(train_store).score(query_store).values
    factored = (
        EKFAC(basis, normalize="relatif", query_rank=12)
        .to("cpu")
        .fit(train_store)
        .score(query_store)
        .values
    )
    np.testing.assert_allclose(factored, exact, rtol=1e-4, atol=1e-6)
