"""Linear algebra on feature space, shared by estimators and by the model passes that build
curvature: the :class:`Curvature` operator interface and float32 products accumulated in float64.

A curvature ``H`` is a symmetric operator on the space of the stored features (the identity
projection's layout for model curvatures). Every operator knows how many training examples it
averages over, because that sets the scale of **relative damping**: ``λ = damping × trace(H) /
min(n, dim)``, the mean non-zero eigenvalue of an ``n``-example empirical Fisher (whose rank is at
most ``min(n, dim)``). Measured on the benchmark tasks, the damping that best predicts retraining
sits near 1 on that scale whether ``dim`` is below or far above ``n``; relative to ``trace / dim``
(the mean of *all* eigenvalues) it moves with ``dim / n``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from infscope.curvature.spectrum import FISHER_DAMPING_SHARE
from infscope.errors import InputError, NonFiniteError, StoreMismatchError

#: Feature columns per float32 product before the partial result is added in float64.
ACCUMULATION_CHUNK = 4096


class Curvature(ABC):
    """A symmetric operator ``H`` on feature space, averaged over ``n_examples`` examples."""

    dim: int
    n_examples: int
    #: relative damping that predicted retraining best across the benchmark tasks
    default_damping: float = 1.0
    #: ``damping="auto"``: share of its directions the damped curvature resolves
    default_damping_share: float = FISHER_DAMPING_SHARE

    @abstractmethod
    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        """``H @ vectors`` for ``vectors`` of shape ``[dim, m]`` (float64 out)."""

    def dense(self, max_dim: int = 20_000) -> np.ndarray:
        """``H`` as a ``[dim, dim]`` float64 array, from products with identity columns."""
        if self.dim > max_dim:
            raise InputError(
                f"a dense {self.dim}x{self.dim} curvature is too large (limit {max_dim}); use a "
                f"matrix-free solver (cg, lissa, arnoldi)"
            )
        out = np.empty((self.dim, self.dim))
        step = max(1, min(self.dim, 2**22 // max(self.dim, 1)))
        for start in range(0, self.dim, step):
            stop = min(start + step, self.dim)
            columns = np.zeros((self.dim, stop - start))
            columns[np.arange(start, stop), np.arange(stop - start)] = 1.0
            out[:, start:stop] = self.matvec(columns)
        return (out + out.T) / 2

    @abstractmethod
    def trace(self) -> float:
        """``trace(H)`` (exact or an unbiased estimate, as each operator documents)."""

    def damping_unit(self) -> float:
        """What relative damping is relative to: ``trace(H) / min(n_examples, dim)``."""
        unit = self.trace() / min(self.n_examples, self.dim)
        if not np.isfinite(unit):
            raise NonFiniteError(f"the curvature's trace is {unit}: its inputs are not finite")
        if not unit > 0:
            raise InputError(
                "the curvature is zero (all gradients vanish), so relative damping has no scale: "
                "pass damping_mode='absolute'"
            )
        return unit

    def smallest_eigenvalue(self) -> float:
        """The most negative eigenvalue of ``H``, or 0 for an operator that is positive
        semi-definite by construction (a Fisher). Indefinite operators (a model Hessian away
        from a minimum) override this with an estimate."""
        return 0.0

    def sample_matvec(
        self, vectors: np.ndarray, rng: np.random.Generator, batch_size: int
    ) -> np.ndarray:
        """An unbiased minibatch estimate of ``H @ vectors`` (default: the exact product)."""
        return self.matvec(vectors)

    def check_store(self, store) -> None:
        """Raise if features in ``store`` do not live in this operator's space."""
        if store.feature_dim != self.dim:
            raise StoreMismatchError(
                f"{store.root} has {store.feature_dim} features, the curvature has dimension {self.dim}"
            )

    def describe(self) -> dict:
        return {"curvature": type(self).__name__}


def krylov_eigenpairs(
    curvature: Curvature, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (descending) and vectors of ``H`` from a Krylov space of ``steps`` products
    (Lanczos with full re-orthogonalisation, done twice for stability): the extremes of the
    spectrum converge first. Stops early when the space is invariant."""
    dim = curvature.dim
    steps = max(1, min(dim, steps))
    rng = np.random.default_rng(seed)
    basis = np.zeros((dim, steps + 1))
    projected = np.zeros((steps + 1, steps))
    start = rng.standard_normal(dim)
    basis[:, 0] = start / np.linalg.norm(start)
    used = steps
    for j in range(steps):
        w = curvature.matvec(basis[:, j : j + 1])[:, 0]
        for _ in range(2):
            coefficients = basis[:, : j + 1].T @ w
            w -= basis[:, : j + 1] @ coefficients
            projected[: j + 1, j] += coefficients
        norm = np.linalg.norm(w)
        projected[j + 1, j] = norm
        if norm < 1e-10 * max(1.0, abs(projected[: j + 1, j]).max()):
            used = j + 1  # invariant subspace found: the Krylov space is exhausted
            break
        basis[:, j + 1] = w / norm
    values, vectors = symmetric_eigh(projected[:used, :used])
    order = np.argsort(values)[::-1]
    return values[order], basis[:, :used] @ vectors[:, order]


def gram_accumulate(left: np.ndarray, right: np.ndarray, exact: bool = False) -> np.ndarray:
    """``left @ right.T`` as float64. With ``exact`` every product is float64. Otherwise the
    products are float32 over chunks of at most :data:`ACCUMULATION_CHUNK` columns whose partial
    results are summed in float64: twice the speed, with a relative rounding error (~1e-6) that
    grows with the chunk, not with the feature dimension — fine for scores and for iterative
    solvers, not for the matrices an exact solver inverts at a small damping."""
    dtype = np.float64 if exact else np.float32
    out = np.zeros((len(left), len(right)))
    for start in range(0, left.shape[1], ACCUMULATION_CHUNK):
        stop = start + ACCUMULATION_CHUNK
        a = np.ascontiguousarray(left[:, start:stop], dtype=dtype)
        b = np.ascontiguousarray(right[:, start:stop], dtype=dtype)
        out += a @ b.T
    return out


def unit_rows(block: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)


def symmetric_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric part of ``matrix`` (float64);
    :class:`NonFiniteError` if it holds NaN or inf."""
    if not np.isfinite(matrix).all():
        raise NonFiniteError("the curvature matrix holds NaN or inf values")
    return np.linalg.eigh((matrix + matrix.T) / 2)


def require_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` unchanged, or :class:`NonFiniteError` naming ``what`` if any entry is NaN/inf."""
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NonFiniteError(
            f"{what} produced {bad} non-finite value(s): the features or the curvature hold "
            f"NaN/inf, or the damping is too small for this solver"
        )
    return values
