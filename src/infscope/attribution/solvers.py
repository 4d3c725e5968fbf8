"""Solvers for ``(H + λI)^-1 V``: exact eigendecomposition, conjugate gradient, LiSSA, Arnoldi.

All take a :class:`~infscope.attribution.curvature.Curvature` and an absolute damping ``λ > 0``
and solve for a block of right-hand sides ``V`` of shape ``[dim, m]`` at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from infscope.attribution.curvature import Curvature
from infscope.errors import InputError

SOLVERS = ("exact", "cg", "lissa", "arnoldi")


class InverseSolver(ABC):
    """Fit once on ``(H, λ)``; then ``solve(V) ≈ (H + λI)^-1 V``."""

    name = "solver"

    def fit(self, curvature: Curvature, damping: float) -> InverseSolver:
        if not damping > 0:
            raise InputError(f"damping must be positive, got {damping}")
        self.curvature, self.damping = curvature, float(damping)
        self._fit()
        return self

    def _fit(self) -> None:
        """Solver-specific preparation."""

    @abstractmethod
    def solve(self, vectors: np.ndarray) -> np.ndarray:
        """``(H + λI)^-1 vectors`` for ``vectors`` ``[dim, m]``."""

    def describe(self) -> dict[str, Any]:
        return {"solver": self.name}


class ExactSolver(InverseSolver):
    """Eigendecomposition of the dense ``H`` (float64): exact up to round-off. Refuses an
    ``H + λI`` that is not positive definite rather than return a meaningless inverse."""

    name = "exact"

    def __init__(self, max_dim: int = 20_000) -> None:
        self.max_dim = max_dim

    def _fit(self) -> None:
        if self.curvature.dim > self.max_dim:
            raise InputError(
                f"the exact solver needs a dense {self.curvature.dim}² matrix (limit {self.max_dim}); "
                f"use solver='cg', 'lissa' or 'arnoldi', or a smaller projection"
            )
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(self.curvature.dense())
        if (self.eigenvalues + self.damping <= 0).any():
            raise InputError(
                f"H + λI is not positive definite (smallest eigenvalue of H: "
                f"{self.eigenvalues.min():.3g}, λ = {self.damping:.3g}); the Hessian of a model "
                f"away from a minimum can be indefinite: raise the damping or use the Fisher"
            )

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        rotated = self.eigenvectors.T @ vectors
        return self.eigenvectors @ (rotated / (self.eigenvalues + self.damping)[:, None])


class CGSolver(InverseSolver):
    """Conjugate gradient, one independent CG per column, vectorised; stops when every column's
    relative residual is below ``tol`` or after ``max_iter`` products."""

    name = "cg"

    def __init__(self, max_iter: int = 200, tol: float = 1e-8) -> None:
        self.max_iter, self.tol = max_iter, tol
        self.iterations = 0

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return self.curvature.matvec(x) + self.damping * x

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        b = np.asarray(vectors, dtype=np.float64)
        x = np.zeros_like(b)
        r = b.copy()
        p = r.copy()
        rs = (r * r).sum(0)
        target = self.tol**2 * np.maximum((b * b).sum(0), 1e-300)
        self.iterations = 0
        while self.iterations < self.max_iter and not (rs <= target).all():
            self.iterations += 1
            hp = self._apply(p)
            alpha = np.divide(rs, (p * hp).sum(0), out=np.zeros_like(rs), where=rs > target)
            x += alpha * p
            r -= alpha * hp
            new_rs = (r * r).sum(0)
            beta = np.divide(new_rs, rs, out=np.zeros_like(rs), where=rs > 0)
            p = r + beta * p
            rs = new_rs
        return x

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "max_iter": self.max_iter,
            "tol": self.tol,
            "iterations": self.iterations,
        }


class LissaSolver(InverseSolver):
    """LiSSA (Agarwal et al.): the Neumann recursion ``x ← v + x − (H + λI) x / s`` so that
    ``x / s → (H + λI)^-1 v`` when ``s`` exceeds the largest eigenvalue of ``H + λI``.

    ``batch_size`` draws minibatch curvature products (stochastic LiSSA; ``None`` = full products);
    ``repeats`` averages independent runs. ``scale=None`` estimates ``s`` by power iteration.
    """

    name = "lissa"

    def __init__(
        self,
        depth: int = 1000,
        scale: float | None = None,
        batch_size: int | None = None,
        repeats: int = 1,
        seed: int = 0,
    ) -> None:
        if depth < 1 or repeats < 1:
            raise InputError("LiSSA depth and repeats must be positive")
        self.depth, self.scale, self.batch_size, self.repeats, self.seed = (
            depth,
            scale,
            batch_size,
            repeats,
            seed,
        )

    def _fit(self) -> None:
        if self.scale is None:
            self.scale = 1.2 * (_top_eigenvalue(self.curvature, self.seed) + self.damping)

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        total = np.zeros_like(v)
        for _ in range(self.repeats):
            x = v.copy()
            for _ in range(self.depth):
                if self.batch_size is None:
                    hx = self.curvature.matvec(x)
                else:
                    hx = self.curvature.sample_matvec(x, rng, self.batch_size)
                x = v + x - (hx + self.damping * x) / self.scale
            total += x / self.scale
        return total / self.repeats

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "depth": self.depth,
            "scale": self.scale,
            "batch_size": self.batch_size,
            "repeats": self.repeats,
        }


class ArnoldiSolver(InverseSolver):
    """Arnoldi iteration (Schioppa et al.): the top-``rank`` eigenpairs of ``H`` from a Krylov
    space of ``n_iter`` matrix products, then
    ``(H + λI)^-1 ≈ U diag(1/(σ+λ)) Uᵀ + (I − U Uᵀ)/λ`` (the second term, ``residual=True``,
    treats the rest of the spectrum as zero; drop it to keep only the top subspace)."""

    name = "arnoldi"

    def __init__(
        self, rank: int = 100, n_iter: int | None = None, residual: bool = True, seed: int = 0
    ) -> None:
        if rank < 1:
            raise InputError(f"Arnoldi rank must be positive, got {rank}")
        self.rank, self.n_iter, self.residual, self.seed = rank, n_iter, residual, seed

    def _fit(self) -> None:
        dim = self.curvature.dim
        steps = min(dim, self.n_iter or 2 * self.rank)
        rng = np.random.default_rng(self.seed)
        basis = np.zeros((dim, steps + 1))
        hessenberg = np.zeros((steps + 1, steps))
        start = rng.standard_normal(dim)
        basis[:, 0] = start / np.linalg.norm(start)
        used = steps
        for j in range(steps):
            w = self.curvature.matvec(basis[:, j : j + 1])[:, 0]
            for _ in range(2):  # full re-orthogonalisation, twice for stability
                coefficients = basis[:, : j + 1].T @ w
                w -= basis[:, : j + 1] @ coefficients
                hessenberg[: j + 1, j] += coefficients
            norm = np.linalg.norm(w)
            hessenberg[j + 1, j] = norm
            if norm < 1e-10 * max(1.0, abs(hessenberg[: j + 1, j]).max()):
                used = j + 1  # invariant subspace found: the Krylov space is exhausted
                break
            basis[:, j + 1] = w / norm
        small = hessenberg[:used, :used]
        eigenvalues, vectors = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(eigenvalues)[::-1][: self.rank]
        self.eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        self.eigenvectors = basis[:, :used] @ vectors[:, order]

    def solve(self, vectors: np.ndarray) -> np.ndarray:
        rotated = self.eigenvectors.T @ vectors
        inside = self.eigenvectors @ (rotated / (self.eigenvalues + self.damping)[:, None])
        if not self.residual:
            return inside
        return inside + (vectors - self.eigenvectors @ rotated) / self.damping

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "rank": self.rank,
            "n_iter": self.n_iter,
            "residual": self.residual,
        }


def _top_eigenvalue(curvature: Curvature, seed: int, iterations: int = 50) -> float:
    vector = np.random.default_rng(seed).standard_normal((curvature.dim, 1))
    value = 0.0
    for _ in range(iterations):
        vector /= np.linalg.norm(vector)
        product = curvature.matvec(vector)
        value = float((vector * product).sum())
        vector = product
        if not np.linalg.norm(vector) > 0:
            return 0.0
    return value


def make_solver(name: str, **options: Any) -> InverseSolver:
    """A solver by name: ``exact``, ``cg``, ``lissa`` or ``arnoldi``."""
    classes = {"exact": ExactSolver, "cg": CGSolver, "lissa": LissaSolver, "arnoldi": ArnoldiSolver}
    if name not in classes:
        raise InputError(f"unknown solver {name!r}; choose from {SOLVERS}")
    return classes[name](**options)
