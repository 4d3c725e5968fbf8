"""Inverse solvers against the dense exact inverse: the n x n kernel form, CG on an indefinite
operator, LiSSA without stale state, Arnoldi self-influence at small damping, and ``auto``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.attribution.curvature import FeatureFisher
from infscope.attribution.influence import InfluenceFunction
from infscope.attribution.solvers import (
    ArnoldiSolver,
    CGSolver,
    ExactSolver,
    KernelInverse,
    LissaSolver,
    SpectralInverse,
    auto_solver,
)
from infscope.errors import InputError, NonFiniteError
from infscope.linalg import Curvature
from infscope.store import FeatureStore, StoreSpec


def _store(root, features: np.ndarray, gradient: str = "loss") -> FeatureStore:
    spec = StoreSpec(
        feature_dim=features.shape[1],
        dtype="float32",
        gradient=gradient,
        modules=("layer",),
        projection={"kind": "identity"},
        model="synthetic",
        shard_size=64,
    )
    store = FeatureStore.create(root, [f"{i}" for i in range(len(features))], spec)
    store.add_checkpoint("final")
    for start in range(0, len(features), 64):
        store.write_shard("final", start, features[start : start + 64].astype(np.float32))
    return store


def _low_rank_features(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows with a decaying spectrum, as per-example gradients have."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / (1.0 + np.arange(dim)) ** 0.7
    return rng.standard_normal((n, dim)) * scales


class Matrix(Curvature):
    """A dense symmetric matrix as a curvature (indefinite allowed)."""

    def __init__(self, matrix: np.ndarray, n_examples: int) -> None:
        self.matrix, self.dim, self.n_examples = matrix, len(matrix), n_examples

    def matvec(self, vectors):
        return self.matrix @ vectors

    def trace(self):
        return float(np.trace(self.matrix))

    def smallest_eigenvalue(self):
        return float(min(np.linalg.eigvalsh(self.matrix).min(), 0.0))


def test_kernel_form_is_exact_and_has_no_dim_limit(tmp_path):
    """n < dim: the exact solver eigendecomposes the n x n kernel (Woodbury) and equals the
    dense formula; it works for a dim far above the dense limit, where the old solver refused."""
    phi = _low_rank_features(40, 120)
    store = _store(tmp_path / "small", phi)
    fisher = FeatureFisher(store, "final")
    prepared = ExactSolver().prepare(fisher)
    assert isinstance(prepared, KernelInverse)
    vectors = np.random.default_rng(1).standard_normal((120, 5))
    dense = phi.T @ phi / 40
    for damping in (1e-4, 1e-2, 1.0):
        expected = np.linalg.solve(dense + damping * np.eye(120), vectors)
        np.testing.assert_allclose(prepared.solve(vectors, damping), expected, rtol=1e-6)
    wide = _store(tmp_path / "wide", _low_rank_features(30, 25_000, seed=2))
    prepared = ExactSolver(max_dim=1000).prepare(FeatureFisher(wide, "final"))
    assert prepared.describe()["kernel_dim"] == 30


def test_cg_on_an_indefinite_operator_stops_at_negative_curvature():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    values = np.linspace(-0.5, 2.0, 20)
    matrix = Matrix(basis @ np.diag(values) @ basis.T, n_examples=100)
    prepared = CGSolver(max_iter=200, tol=1e-10).prepare(matrix)
    out = prepared.solve(rng.standard_normal((20, 4)), damping=0.1)
    described = prepared.describe()
    assert np.isfinite(out).all()
    assert described["negative_curvature_columns"] == 4  # H + 0.1 I has negative eigenvalues
    with pytest.raises(InputError, match="not positive definite"):
        ExactSolver().prepare(matrix).solve(np.ones((20, 1)), damping=0.1)
    # positive definite: CG converges to the exact solution, all columns at once
    shifted = 0.6
    exact = np.linalg.solve(matrix.matrix + shifted * np.eye(20), np.eye(20)[:, :3])
    prepared = CGSolver(max_iter=200, tol=1e-10).prepare(matrix)
    np.testing.assert_allclose(prepared.solve(np.eye(20)[:, :3], shifted), exact, atol=1e-8)
    assert prepared.describe()["unconverged_columns"] == 0


def test_lissa_keeps_no_state_between_curvatures():
    """One LissaSolver prepared on a curvature, then on one 1000x larger: each gets its own
    scale (the solver's settings are untouched), so neither diverges; a diverging recursion
    (a user scale below the top eigenvalue) raises instead of returning NaN."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((10, 10)))[0]
    small = Matrix(basis @ np.diag(np.linspace(0.1, 1.0, 10)) @ basis.T, 50)
    large = Matrix(small.matrix * 1000, 50)
    solver = LissaSolver(depth=3000)
    vectors = rng.standard_normal((10, 2))
    for curvature, damping in ((small, 0.1), (large, 100.0)):
        out = solver.prepare(curvature).solve(vectors, damping)
        expected = np.linalg.solve(curvature.matrix + damping * np.eye(10), vectors)
        np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert solver.scale is None
    with pytest.raises(NonFiniteError, match="lissa"):
        LissaSolver(depth=3000, scale=1.0).prepare(large).solve(vectors, 1.0)


def test_arnoldi_self_influence_tracks_the_exact_one_at_small_damping(tmp_path):
    """A rank-20 Arnoldi on a 200-example, 300-dimensional Fisher. Treating the unresolved
    spectrum as zero made ``(I − UUᵀ)/λ`` dominate self-influence at small λ (Spearman with the
    exact values 0.05 at λ = 1e-3 relative); with the unresolved part at its mean eigenvalue the
    ranking follows the exact one (measured 0.89–0.99 for λ from 1e-3 to 1)."""
    phi = _low_rank_features(200, 300, seed=3)
    store = _store(tmp_path / "s", phi)
    for damping in (1e-3, 1e-1, 1.0):
        exact = InfluenceFunction("exact", damping=damping).fit(store).self_influence().values
        arnoldi = InfluenceFunction(
            ArnoldiSolver(rank=20, n_iter=60), damping=damping
        ).fit(store)
        rho = spearmanr(exact, arnoldi.self_influence().values).statistic
        assert rho > 0.85, (damping, rho)
        assert arnoldi.describe()["solvers"]["final"]["residual_eigenvalue"] > 0


def test_auto_picks_exact_or_cg(tmp_path):
    small = FeatureFisher(_store(tmp_path / "a", _low_rank_features(50, 30)), "final")
    assert isinstance(auto_solver(small), ExactSolver)
    assert isinstance(ExactSolver().prepare(small), SpectralInverse)  # dim <= n: dense
    big = Matrix(np.eye(3), n_examples=10)
    big.dim = 10_000  # only the size decides
    assert isinstance(auto_solver(big), CGSolver)
