"""The influence graph: how much each context (labelled) example supports its own label at every
other example, in closed form for an L2-regularised softmax regression.

Removing context example ``i`` (weight share ``w̄_i``) from the objective of
:mod:`infscope.propagation.softmax` moves the optimum by ``Δθ = w̄_i (H + λI)⁻¹ ∇ℓ_i`` to first
order (Koh & Liang 2017), with ``∇ℓ_i = g_i ⊗ x̃_i``, ``g_i = p_i − e_{y_i}``. The *support* of
``i`` for its label ``y_i`` at a query ``u`` is the drop of ``u``'s class-``y_i`` logit on that
removal::

    s(i, u) = −x̃_uᵀ Δθ[y_i, :] = x̃_uᵀ r_i,   r_i = −w̄_i [(H + λI)⁻¹ (g_i ⊗ x̃_i)][y_i, :]

— positive when ``i`` pushes ``u`` towards ``i``'s label (it helps, the library's sign). One
direction ``r_i ∈ R^{d+1}`` per context example turns the whole ``[n_query, n_context]`` graph
into one matrix product. Three curvatures (``H`` is exact for this convex model):

* ``"exact"`` — ``(H + λI)⁻¹`` by infscope's :class:`~infscope.curvature.solvers.ExactSolver`
  on the dense ``C(d+1)`` Hessian (:class:`~infscope.propagation.softmax.SoftmaxHessian`);
* ``"kfac"`` — ``H ≈ G ⊗ A`` with ``G = Σ w̄ (diag p − ppᵀ)`` and ``A = Σ w̄ x̃ x̃ᵀ``, damped
  by Martens & Grosse's factored Tikhonov split of ``λ`` (``π`` balances the factors' mean
  eigenvalues): ``r_i = −w̄_i [(G + π√λ)⁻¹ g_i]_{y_i} (A + √λ/π)⁻¹ x̃_i``. Costs a ``C × C`` and
  a ``(d+1) × (d+1)`` inverse, so it scales to many classes;
* ``"identity"`` — ``H`` dropped and the bias left out of the similarity:
  ``s(i, u) = w̄_i (1 − p_i(y_i)) x_iᵀ x_u / λ``, the representer value of Yeh et al. 2018 (as
  :class:`~infscope.attribution.RepresenterPoints` computes it from stores).
"""

from __future__ import annotations

import numpy as np

from infscope.errors import InputError
from infscope.propagation.softmax import SoftmaxHessian, SoftmaxRegression, augment

CURVATURES = ("exact", "kfac", "identity")


def support_directions(
    model: SoftmaxRegression,
    features: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray,
    curvature: str = "kfac",
) -> np.ndarray:
    """``r_i`` ``[n_context, d+1]`` (module docstring) of the context examples ``features`` with
    ``labels`` and ``sample_weight``, for ``model`` fitted on exactly them."""
    if curvature not in CURVATURES:
        raise InputError(f"unknown curvature {curvature!r}; choose from {CURVATURES}")
    x = augment(np.asarray(features, dtype=np.float64))
    share = np.asarray(sample_weight, dtype=np.float64) / np.sum(sample_weight)
    p = model.probabilities(features)
    rows = np.arange(len(labels))
    g = p.copy()
    g[rows, labels] -= 1.0
    lam = model.l2
    if curvature == "identity":
        without_bias = np.hstack([x[:, :-1], np.zeros((len(x), 1))])  # Yeh et al.: f_iᵀ f_u
        return (share * -g[rows, labels] / lam)[:, None] * without_bias
    if curvature == "kfac":
        a = (x * share[:, None]).T @ x
        gg = np.diag(share @ p) - (p * share[:, None]).T @ p
        pi = np.sqrt((np.trace(a) / a.shape[0]) / max(np.trace(gg) / gg.shape[0], 1e-12))
        class_part = np.linalg.solve(gg + pi * np.sqrt(lam) * np.eye(len(gg)), g.T).T
        feature_part = np.linalg.solve(a + np.sqrt(lam) / pi * np.eye(len(a)), x.T).T
        own = class_part[rows, labels]
        return (-share * own)[:, None] * feature_part
    from infscope.curvature.solvers import ExactSolver  # the attribution package loads torch

    hessian = SoftmaxHessian(model, features, sample_weight)
    gradients = (g[:, :, None] * x[:, None, :]).reshape(len(x), -1).T
    solved = ExactSolver(max_dim=max(hessian.dim, 1)).prepare(hessian).solve(gradients, lam)
    solved = solved.T.reshape(len(x), model.n_classes, x.shape[1])
    return -share[:, None] * solved[rows, labels]


def support_matrix(queries: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """``s(i, u)`` ``[n_query, n_context]``: the support of every context example for its own
    label at every query (raw ``queries`` features)."""
    return augment(np.asarray(queries, dtype=np.float64)) @ directions.T


def permissive_vote(
    support: np.ndarray, labels: np.ndarray, n_classes: int, top_m: int, min_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's label distribution from its *influential* context only: the ``top_m``
    context examples of largest positive support that reach ``min_share`` of the query's
    largest, each voting for its own label with its support. Returns the distributions
    ``[n, C]`` (a row with no positive support is uniform), the kept context positions
    ``[n, top_m]`` by decreasing support (-1 = none) and their support values (0 there).

    The vote is normalised per query, not smoothed by a fixed prior as in
    :func:`infscope.audit.neighbour_votes`, because support values carry the scale of ``1/λ``."""
    n, n_context = support.shape
    m = min(top_m, n_context)
    top = np.argpartition(-support, m - 1, axis=1)[:, :m]
    values = np.take_along_axis(support, top, 1)
    order = np.argsort(-values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, 1), np.take_along_axis(values, order, 1)
    keep = (values > 0) & (values >= min_share * values[:, :1])
    values = np.where(keep, values, 0.0)
    top = np.where(keep, top, -1)
    votes = np.zeros((n, n_classes))
    np.add.at(
        votes, (np.repeat(np.arange(n), m), labels[np.maximum(top, 0)].ravel()), values.ravel()
    )
    total = votes.sum(1, keepdims=True)
    distributions = np.where(total > 0, votes / np.where(total > 0, total, 1.0), 1.0 / n_classes)
    return distributions, top, values
