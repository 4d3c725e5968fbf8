"""A closed-form ridge regression problem with exact leave-one-out and a hand-computed influence.

Training objective ``sum_i 1/2 (x_i^T w - y_i)^2 + lam/2 |w|^2`` (Hessian ``H = X^T X + lam I``);
query measurement: squared error ``(x_q^T w - y_q)^2`` (loss-like, lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Ridge:
    X: np.ndarray
    y: np.ndarray
    Xq: np.ndarray
    yq: np.ndarray
    lam: float

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def fit(self, indices: np.ndarray) -> np.ndarray:
        Xs, d = self.X[indices], self.X.shape[1]
        return np.linalg.solve(Xs.T @ Xs + self.lam * np.eye(d), Xs.T @ self.y[indices])

    def measure(self, w: np.ndarray) -> np.ndarray:
        return (self.Xq @ w - self.yq) ** 2

    def train_fn(self, indices: np.ndarray, seed: int) -> np.ndarray:
        """The retraining function the evaluation calls (deterministic: ``seed`` is unused)."""
        return self.measure(self.fit(indices))

    def hessian(self) -> np.ndarray:
        return self.X.T @ self.X + self.lam * np.eye(self.X.shape[1])

    def exact_loo_deltas(self) -> np.ndarray:
        """``m(without z) - m(all)`` by Sherman-Morrison, never refitting:
        ``w_-z = w + H^-1 x_z r_z / (1 - h_zz)``, ``r_z = x_z^T w - y_z``, ``h_zz = x_z^T H^-1 x_z``."""
        w = self.fit(np.arange(self.n))
        H_inv_X = np.linalg.solve(self.hessian(), self.X.T)  # [d, n]
        residual = self.X @ w - self.y
        leverage = np.einsum("nd,dn->n", self.X, H_inv_X)
        w_without = w[:, None] + H_inv_X * (residual / (1.0 - leverage))  # [d, n]
        return (self.Xq @ w_without - self.yq[:, None]) ** 2 - self.measure(w)[:, None]

    def influence(self) -> np.ndarray:
        """``tau(q, z) = grad m_q^T H^-1 grad l_z`` at the full fit; positive = z lowers m_q
        (removing z moves w by ``+H^-1 grad l_z`` to first order, raising m_q by tau)."""
        w = self.fit(np.arange(self.n))
        grad_q = 2.0 * (self.Xq @ w - self.yq)[:, None] * self.Xq
        grad_z = (self.X @ w - self.y)[:, None] * self.X
        return grad_q @ np.linalg.solve(self.hessian(), grad_z.T)


def make_ridge(
    n: int = 40, d: int = 5, n_query: int = 20, lam: float = 1.0, noise: float = 0.5, seed: int = 0
) -> Ridge:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + noise * rng.standard_normal(n)
    Xq = rng.standard_normal((n_query, d))
    yq = Xq @ w + noise * rng.standard_normal(n_query)
    return Ridge(X, y, Xq, yq, lam)
