"""Tree influence against exact references.

* Leaf values: recomputing ``-lr * G / (H + l2)`` from the traced gradients reproduces every stored
  leaf of scikit-learn, LightGBM and XGBoost models (binary and softmax) to 1e-5 relative, and the
  staged raw scores end at each library's own decision function (1e-5; XGBoost stores float32).
  This pins the gradients, hessians (and their library-specific scales), initial scores, learning
  rate and lambda the derivative is built from.
* Derivative: with one boosting iteration and an initial score that does not depend on the data
  (LightGBM ``boost_from_average=False``, XGBoost ``base_score=0.5``), BoostIn with the final
  query gradient is exactly ``-dL_q/dw_i``; a central difference of refits with ``w_i = 1 +- eps``
  (tree structure checked unchanged) agrees to 1e-3 relative. scikit-learn fits its initial score
  to the weighted labels, so a refit moves it too; it is covered by the leaf-value check only.
* Assembly: scores equal a per-tree loop over shared leaves written independently here.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from infscope.attribution.scores import Scores, SelfInfluence
from infscope.errors import InputError
from infscope.trees import TreeInfluence, TreeParams, fit_classifier, trace
from infscope.trees.losses import example_loss, gradient_hessian

pytest.importorskip("lightgbm")
pytest.importorskip("xgboost")

PARAMS = TreeParams(n_estimators=12, max_leaves=6, learning_rate=0.3, l2=0.5)


def data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = (load_breast_cancer if kind == "binary" else load_wine)(return_X_y=True)
    rows = np.random.default_rng(0).permutation(len(y))[:120]
    return X[rows], y[rows]


def decision(model, library: str, X: np.ndarray) -> np.ndarray:
    if library == "sklearn":
        raw = model.decision_function(X)
    elif library == "lightgbm":
        raw = model.predict(X, raw_score=True)
    else:
        raw = model.predict(X, output_margin=True)
    return np.asarray(raw, dtype=np.float64).reshape(len(X), -1)


@pytest.fixture(scope="module", params=["sklearn", "lightgbm", "xgboost"])
def library(request):
    return request.param


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_leaf_values_and_raw_scores_are_reproduced(library, kind):
    X, y = data(kind)
    model = fit_classifier(library, X, y, PARAMS)
    influence = TreeInfluence(model).fit(X, y)
    assert influence.leaf_residual < 1e-5
    ens = influence.ensemble
    raw = ens.staged_raw(ens.leaves(X))[:, -1]
    np.testing.assert_allclose(raw, decision(model, library, X), atol=1e-5)


def one_tree(library: str, X, y, weight):
    if library == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(
            n_estimators=1,
            num_leaves=4,
            min_child_samples=3,
            min_child_weight=1e-6,
            learning_rate=0.5,
            reg_lambda=0.7,
            boost_from_average=False,
            deterministic=True,
            force_row_wise=True,
            n_jobs=1,
            verbose=-1,
        )
    else:
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=1,
            max_depth=2,
            tree_method="exact",
            min_child_weight=1e-6,
            learning_rate=0.5,
            reg_lambda=0.7,
            base_score=0.5,
            n_jobs=1,
        )
    return model.fit(X, y, sample_weight=weight)


def query_loss(model, X, y) -> np.ndarray:
    """Log loss from the raw margins in float64 (XGBoost's probabilities are float32)."""
    library = type(model).__module__.split(".")[0]
    return example_loss(decision(model, library, X), y)


@pytest.mark.parametrize("library_name", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_boostin_is_the_reweighting_derivative_of_one_tree(library_name, kind):
    X, y = data(kind)
    X, y = X[:80], y[:80]
    model = one_tree(library_name, X, y, None)
    scores = TreeInfluence(model).fit(X, y).score(X, y).values
    eps = 0.1
    for i in (0, 7, 21, 61):
        weight = np.ones(len(y))
        losses, leaves = [], []
        for sign in (1, -1):
            weight[i] = 1 + sign * eps
            refit = one_tree(library_name, X, y, weight)
            leaves.append(TreeInfluence(refit, tolerance=np.inf).ensemble.leaves(X))
            losses.append(query_loss(refit, X, y))
        assert np.array_equal(leaves[0], leaves[1]), f"refits without {i} grew another tree"
        derivative = (losses[0] - losses[1]) / (2 * eps)
        scale = np.abs(derivative).max()
        assert scale > 0
        np.testing.assert_allclose(-derivative, scores[:, i], rtol=1e-3, atol=1e-3 * scale)


def loop_scores(influence: TreeInfluence, X, y, method: str, staged: bool) -> np.ndarray:
    """Per tree, per query, the training rows in the query's leaf — written without matrices."""
    ens = influence.ensemble
    train, query = influence.train, trace(ens, X, y)
    out = np.zeros((len(y), train.leaves.shape[0]))
    k_of = np.arange(ens.n_trees) % ens.n_outputs
    for t in range(ens.n_trees):
        for q in range(len(y)):
            shared = np.flatnonzero(train.leaves[:, t] == query.leaves[q, t])
            g, h = train.staged_gradient[shared, t], train.staged_hessian[shared, t]
            if method == "tracin":
                out[q, shared] += ens.learning_rate * g * query.staged_gradient[q, t]
                continue
            leaf = ens.leaf_values[t][query.leaves[q, t]]
            derivative = -(ens.learning_rate * g + leaf * h) / (h.sum() + ens.l2)
            raw = ens.staged_raw(query.leaves[q : q + 1])
            step = raw[0, t // ens.n_outputs] if staged else raw[0, -1]
            grad, _ = gradient_hessian(step[None], y[q : q + 1])
            out[q, shared] -= derivative * grad[0, k_of[t]]
    return out


@pytest.mark.parametrize(
    "method,query_gradient", [("boostin", "final"), ("boostin", "staged"), ("tracin", "final")]
)
def test_scores_equal_a_loop_over_shared_leaves(method, query_gradient):
    X, y = data("multiclass")
    model = fit_classifier("lightgbm", X, y, TreeParams(n_estimators=4, max_leaves=4))
    influence = TreeInfluence(model, method=method, query_gradient=query_gradient).fit(X, y)
    scores = influence.score(X[:9], y[:9], ids=[f"q{i}" for i in range(9)])
    assert isinstance(scores, Scores) and scores.query_ids[0] == "q0"
    expected = loop_scores(influence, X[:9], y[:9], method, influence.query_gradient == "staged")
    np.testing.assert_allclose(scores.values, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", ["boostin", "tracin"])
def test_self_influence_is_the_diagonal_and_oriented(library, method):
    X, y = data("binary")
    model = fit_classifier(library, X, y, PARAMS)
    influence = TreeInfluence(model, method=method).fit(X, y)
    own = influence.self_influence()
    assert isinstance(own, SelfInfluence) and own.higher_is_harder
    np.testing.assert_allclose(own.values, np.diag(influence.score(X, y).values), atol=1e-12)
    assert influence.training_loss().values.min() > 0


def test_training_data_that_do_not_make_the_leaves_are_refused():
    X, y = data("binary")
    model = fit_classifier("xgboost", X, y, PARAMS)
    with pytest.raises(InputError, match="do not reproduce"):
        TreeInfluence(model).fit(X, 1 - y)
    with pytest.raises(InputError, match="do not reproduce"):
        TreeInfluence(model).fit(X[:100], y[:100])


def test_string_labels_follow_the_model_classes():
    X, y = data("multiclass")
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    model = fit_classifier("sklearn", X, names, PARAMS)
    influence = TreeInfluence(model).fit(X, names)
    assert influence.leaf_residual < 1e-5
    with pytest.raises(InputError, match="outside the model's classes"):
        influence.score(X[:2], np.array(["merlot", "barolo"]))
