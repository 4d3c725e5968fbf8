"""scikit-learn ``HistGradientBoostingClassifier`` as a :class:`TreeEnsemble`.

scikit-learn has no public ``apply`` for these models, so the fitted predictors' node arrays
(``model._predictors[iteration][class].nodes``, a structured array with ``feature_idx``,
``num_threshold``, ``missing_go_to_left``, ``left``, ``right``, ``is_leaf``, ``value``) are walked
here with the predictor's own rule: NaN follows ``missing_go_to_left``, else ``x <= threshold``
goes left. Raw-feature thresholds reproduce the binned training-time routing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infscope.errors import InputError
from infscope.trees.ensemble import TreeEnsemble


def walk(features: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Leaf node id of each row in one scikit-learn predictor's ``nodes``."""
    node = np.zeros(features.shape[0], dtype=np.int64)
    is_leaf = nodes["is_leaf"].astype(bool)
    active = np.flatnonzero(~is_leaf[node])
    while active.size:
        here = node[active]
        value = features[active, nodes["feature_idx"][here]]
        left = np.where(
            np.isnan(value),
            nodes["missing_go_to_left"][here].astype(bool),
            value <= nodes["num_threshold"][here],
        )
        node[active] = np.where(left, nodes["left"][here], nodes["right"][here])
        active = active[~is_leaf[node[active]]]
    return node


def from_sklearn(model: Any) -> TreeEnsemble:
    """The fitted trees of a ``HistGradientBoostingClassifier`` (numeric features, log loss)."""
    predictors = getattr(model, "_predictors", None)
    if predictors is None or type(model).__name__ != "HistGradientBoostingClassifier":
        raise InputError(f"expected a fitted HistGradientBoostingClassifier, got {type(model)}")
    nodes = [predictor.nodes for iteration in predictors for predictor in iteration]
    if any(n["is_categorical"].any() for n in nodes):
        raise InputError("categorical splits are not supported; encode categories as numbers")
    if getattr(model, "class_weight", None) is not None:
        raise InputError("class_weight reweights the gradients; refit without it")
    tables = [np.where(n["is_leaf"].astype(bool), n["value"], np.nan) for n in nodes]

    def apply(features: np.ndarray) -> np.ndarray:
        return np.stack([walk(features, n) for n in nodes], axis=1)

    return TreeEnsemble(
        library="sklearn",
        apply=apply,
        leaf_values=tables,
        n_outputs=int(model.n_trees_per_iteration_),
        init_score=np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1),
        learning_rate=float(model.learning_rate),
        l2=float(model.l2_regularization),
        classes=np.asarray(model.classes_),
    )
