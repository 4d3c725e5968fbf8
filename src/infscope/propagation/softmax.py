"""L2-regularised softmax (multinomial logistic) regression fitted to its optimum, and its exact
Hessian as an infscope :class:`~infscope.curvature.linalg.Curvature`.

The objective is ``J(W) = Σ_i w_i ℓ_i(W) / Σ_i w_i + (λ/2)‖W‖²`` over ``W ∈ R^{C × (d+1)}``
(the last column is the bias: every example is augmented with a constant 1), ``ℓ_i`` the
cross-entropy of example ``i``. ``J`` is strictly convex, so L-BFGS reaches its unique optimum —
the point the closed-form influence of :mod:`infscope.propagation.influence_graph` linearises
around. The Hessian ``H = Σ_i w_i (diag p_i − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ / Σ_i w_i`` (without ``λI``)
is exact for this model (no Gauss-Newton approximation is needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infscope.curvature.linalg import Curvature
from infscope.errors import InputError


def augment(features: np.ndarray) -> np.ndarray:
    """``[features, 1]``: the bias becomes the last weight column."""
    return np.hstack([features, np.ones((len(features), 1), dtype=features.dtype)])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(1, keepdims=True)


@dataclass(frozen=True)
class SoftmaxRegression:
    """A fitted model: ``weights`` ``[C, d+1]`` (bias last), the ``l2`` it was fitted with."""

    weights: np.ndarray
    l2: float

    @property
    def n_classes(self) -> int:
        return self.weights.shape[0]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, C]`` of raw (un-augmented) ``features``."""
        return softmax(augment(features) @ self.weights.T)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        l2: float,
        sample_weight: np.ndarray | None = None,
        max_iter: int = 500,
        start: np.ndarray | None = None,
    ) -> SoftmaxRegression:
        """Minimise ``J`` (module docstring) by L-BFGS from ``start`` (default zeros)."""
        from scipy.optimize import minimize

        if not l2 > 0:
            raise InputError(f"l2 must be positive (it makes the optimum unique), got {l2}")
        x = augment(np.asarray(features, dtype=np.float64))
        y = np.asarray(labels, dtype=np.int64)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        w = w / w.sum()
        onehot = np.eye(n_classes)[y]
        shape = (n_classes, x.shape[1])

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            weights = flat.reshape(shape)
            logits = x @ weights.T
            top = logits.max(1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(1))
            loss = float(w @ (log_norm - (logits * onehot).sum(1)))
            residual = (softmax(logits) - onehot) * w[:, None]
            grad = residual.T @ x + l2 * weights
            return loss + 0.5 * l2 * float((weights**2).sum()), grad.ravel()

        x0 = np.zeros(shape) if start is None else start
        result = minimize(
            objective,
            x0.ravel(),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-14},
        )
        return cls(result.x.reshape(shape), float(l2))


class SoftmaxHessian(Curvature):
    """The Hessian of the data term of ``J`` at a fitted model, on the flattened ``C·(d+1)``
    weights (row-major ``[C, d+1]``); positive semi-definite, so ``+ λI`` inverts it."""

    def __init__(
        self, model: SoftmaxRegression, features: np.ndarray, sample_weight: np.ndarray
    ) -> None:
        self.x = augment(np.asarray(features, dtype=np.float64))
        self.p = model.probabilities(features)
        self.w = np.asarray(sample_weight, dtype=np.float64) / np.sum(sample_weight)
        self.n_classes = model.n_classes
        self.dim = model.weights.size
        self.n_examples = len(self.x)

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        m = vectors.shape[1]
        v = vectors.reshape(self.n_classes, self.x.shape[1], m)
        s = np.einsum("nd,cdm->ncm", self.x, v)  # logit perturbations per example
        s = self.p[:, :, None] * (s - np.einsum("nc,ncm->nm", self.p, s)[:, None, :])
        s *= self.w[:, None, None]
        return np.einsum("nd,ncm->cdm", self.x, s).reshape(self.dim, m)

    def trace(self) -> float:
        class_part = (self.p * (1 - self.p)).sum(1)
        return float((self.w * class_part * (self.x**2).sum(1)).sum())
