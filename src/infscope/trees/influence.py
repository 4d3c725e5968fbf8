"""Influence of training examples on predictions of gradient-boosted trees: BoostIn and TracIn.

Both methods keep every tree's structure fixed and look only at leaves a training example shares
with the query. For tree ``t`` (iteration ``s``, raw output ``k``) the leaf value is
``v = -lr * G / (H + l2)`` over the gradients ``g`` and hessians ``h`` of the training examples in
it, taken at the raw scores before iteration ``s``. Weighting training example ``i`` by ``w_i``
scales its ``g_i, h_i``, so

    dv / dw_i = -(lr * g_i + v * h_i) / (H + l2).

**BoostIn** (Brophy et al., JMLR 2023) scores ``-sum_t [same leaf] dv_t/dw_i * dL_q/dF_k``: the
first-order change of the query's loss when example ``i`` is upweighted, sign flipped so that
removing a helpful example (positive score) raises the query's loss. ``query_gradient="final"``
(default) takes ``dL_q/dF_k`` at the final model — the derivative of the final loss with every
other leaf held fixed; ``"staged"`` takes it before iteration ``s``, as the paper's BoostIn does.
**TracIn** for trees scores ``sum_t [same leaf] lr * g_i * g_q`` with both gradients before the
iteration: how much the step tree ``t`` took for ``i`` lowered the query's loss.

Neither follows a removed example's effect through later trees' gradients, nor through a tree
structure that would have grown differently; a leave-one-out benchmark
(``bench/tree_influence.py``) measures what that costs. Sign convention as everywhere in infscope:
positive = the training example lowers the query's loss (it helps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

from infscope.attribution.scores import Scores, SelfInfluence
from infscope.errors import InputError
from infscope.trees.ensemble import TreeEnsemble
from infscope.trees.losses import check_labels, example_loss, gradient_hessian
from infscope.trees.models import ensemble_of

Method = Literal["boostin", "tracin"]
QueryGradient = Literal["final", "staged"]
METHODS: tuple[str, ...] = ("boostin", "tracin")


@dataclass(frozen=True)
class Trace:
    """What the trees did with some rows: ``leaves [n, n_trees]``; ``staged_gradient`` and
    ``staged_hessian [n, n_trees]``, each tree's output derivatives before its iteration;
    ``final_gradient [n, n_trees]``, at the final model, for each tree's output; ``loss [n]``."""

    leaves: np.ndarray
    staged_gradient: np.ndarray
    staged_hessian: np.ndarray
    final_gradient: np.ndarray
    loss: np.ndarray


def trace(ensemble: TreeEnsemble, features: np.ndarray, labels: np.ndarray) -> Trace:
    """Leaves, staged and final derivatives and losses of ``features`` with ``labels`` (class
    indices) under an ensemble whose initial score is fixed (:meth:`TreeEnsemble.with_labels`)."""
    leaves = ensemble.leaves(features)
    y = check_labels(labels, ensemble.n_outputs, leaves.shape[0])
    raw = ensemble.staged_raw(leaves)
    n = leaves.shape[0]
    g, h = gradient_hessian(raw[:, :-1], y)
    final, _ = gradient_hessian(raw[:, -1], y)
    outputs = np.arange(ensemble.n_trees) % ensemble.n_outputs
    return Trace(
        leaves=leaves,
        staged_gradient=g.reshape(n, -1),
        staged_hessian=ensemble.hessian_scale * h.reshape(n, -1),
        final_gradient=final[:, outputs],
        loss=example_loss(raw[:, -1], y),
    )


def _ids(ids: Sequence[str] | None, n: int, what: str) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    out = [str(i) for i in ids]
    if len(out) != n:
        raise InputError(f"{len(out)} {what} ids for {n} rows")
    if len(set(out)) != n:
        raise InputError(f"{what} ids are not unique")
    return out


class TreeInfluence:
    """BoostIn or TracIn influence for a fitted boosted classifier (scikit-learn
    ``HistGradientBoostingClassifier``, LightGBM, XGBoost, or a :class:`TreeEnsemble`).

    ``fit`` reads the training data the model was trained on and checks that it reproduces every
    leaf value (``leaf_residual``: the largest gap, relative to the largest leaf value, above
    ``tolerance`` is an :class:`InputError` — other data, row subsampling or sample weights would
    make every score silently wrong); ``score`` gives query x train :class:`Scores`,
    ``self_influence`` each training example's influence on its own loss. ``query_gradient``
    applies to BoostIn; TracIn always takes both gradients before each iteration."""

    def __init__(
        self,
        model: Any,
        method: Method = "boostin",
        query_gradient: QueryGradient = "final",
        tolerance: float = 1e-3,
        **adapter: Any,
    ) -> None:
        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        if query_gradient not in ("final", "staged"):
            raise InputError(f"query_gradient must be 'final' or 'staged', got {query_gradient!r}")
        self.ensemble = ensemble_of(model, **adapter)
        self.method = method
        self.query_gradient = query_gradient if method == "boostin" else "staged"
        self.tolerance = tolerance

    def fit(
        self, features: np.ndarray, labels: np.ndarray, ids: Sequence[str] | None = None
    ) -> TreeInfluence:
        """Trace the training data (the exact rows and labels the model was fitted on)."""
        base = self.ensemble
        labels = base.encode(labels)
        self.ensemble = base.with_labels(check_labels(labels, base.n_outputs, len(labels)))
        ens = self.ensemble
        self.train = trace(ens, features, labels)
        self.train_ids = _ids(ids, self.train.leaves.shape[0], "training")
        offsets = ens.offsets()
        self._columns = self.train.leaves + offsets[:-1]
        size = int(offsets[-1])
        flat = self._columns.ravel()
        g, h = self.train.staged_gradient, self.train.staged_hessian
        grad_sum = np.bincount(flat, weights=g.ravel(), minlength=size)
        hess_sum = np.bincount(flat, weights=h.ravel(), minlength=size)
        self.leaf_residual = _leaf_residual(ens, grad_sum, hess_sum, flat)
        if not self.leaf_residual <= self.tolerance:
            raise InputError(
                f"these training data do not reproduce the model's leaf values (largest gap "
                f"{self.leaf_residual:.3g} of the largest leaf value, tolerance {self.tolerance:g})"
                ": give the exact rows and labels it was trained on; row subsampling, sample or "
                "class weights, and a learning rate or lambda other than the model's are not "
                "supported"
            )
        if self.method == "boostin":
            values = ens.tree_values(self.train.leaves)
            coefficient = (ens.learning_rate * g + values * h) / (hess_sum[self._columns] + ens.l2)
        else:
            coefficient = ens.learning_rate * g
        self._coefficient = coefficient
        self._matrix = _leaf_matrix(self._columns, coefficient, size)
        return self

    def _query_gradient(self, rows: Trace) -> np.ndarray:
        return rows.final_gradient if self.query_gradient == "final" else rows.staged_gradient

    def _metadata(self) -> dict[str, Any]:
        ens = self.ensemble
        return {
            "library": ens.library,
            "n_trees": ens.n_trees,
            "n_outputs": ens.n_outputs,
            "learning_rate": ens.learning_rate,
            "l2": ens.l2,
            "query_gradient": self.query_gradient,
            "leaf_residual": self.leaf_residual,
        }

    def score(
        self, features: np.ndarray, labels: np.ndarray, ids: Sequence[str] | None = None
    ) -> Scores:
        """``[n_query, n_train]`` influence of each training example on each query's loss."""
        self._check_fitted()
        rows = trace(self.ensemble, features, self.ensemble.encode(labels))
        query = _leaf_matrix(
            rows.leaves + self.ensemble.offsets()[:-1],
            self._query_gradient(rows),
            int(self.ensemble.offsets()[-1]),
        )
        values = np.asarray((query @ self._matrix.T).todense(), dtype=np.float64)
        query_ids = _ids(ids, values.shape[0], "query")
        return Scores(values, query_ids, self.train_ids, f"trees-{self.method}", self._metadata())

    def self_influence(self) -> SelfInfluence:
        """Each training example's influence on its own loss (high = suspicious)."""
        self._check_fitted()
        values = np.sum(self._coefficient * self._query_gradient(self.train), axis=1)
        metadata = {**self._metadata(), "higher_is_harder": True, "high_means": "harder"}
        return SelfInfluence(values, list(self.train_ids), f"trees-{self.method}", metadata)

    def training_loss(self) -> SelfInfluence:
        """Each training example's loss under the final model: the simple baseline for finding
        mislabeled examples (high = suspicious)."""
        self._check_fitted()
        metadata = {"library": self.ensemble.library, "higher_is_harder": True}
        return SelfInfluence(self.train.loss.copy(), list(self.train_ids), "trees-loss", metadata)

    def _check_fitted(self) -> None:
        if not hasattr(self, "_matrix"):
            raise InputError("call fit(training features, labels) first")


def _leaf_matrix(columns: np.ndarray, values: np.ndarray, size: int) -> sparse.csr_matrix:
    """Rows x (tree, leaf) matrix with each row's value at the leaf it reaches in every tree."""
    n, n_trees = columns.shape
    rows = np.repeat(np.arange(n), n_trees)
    return sparse.csr_matrix((values.ravel(), (rows, columns.ravel())), shape=(n, size))


def _leaf_residual(
    ensemble: TreeEnsemble, grad_sum: np.ndarray, hess_sum: np.ndarray, flat: np.ndarray
) -> float:
    """Largest gap between the stored leaf values and ``-lr * G / (H + l2)`` recomputed from
    the traced rows, over occupied leaves, relative to the largest stored leaf value."""
    stored = np.concatenate(ensemble.leaf_values)
    occupied = np.zeros(stored.size, dtype=bool)
    occupied[flat] = True
    refit = -ensemble.learning_rate * grad_sum[occupied] / (hess_sum[occupied] + ensemble.l2)
    scale = max(float(np.abs(stored[occupied]).max(initial=0.0)), 1e-12)
    return float(np.abs(refit - stored[occupied]).max(initial=0.0) / scale)
