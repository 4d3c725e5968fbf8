"""InfluencePropagation against known answers on generated data."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.propagation import (
    InfluencePropagation,
    PropagationConfig,
    SoftmaxHessian,
    SoftmaxRegression,
    support_directions,
    support_matrix,
)


def blobs(n_per_class=60, n_classes=4, dim=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), dim)), y


def few_labels(y, per_class, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.full(len(y), -1)
    for c in np.unique(y):
        labels[rng.choice(np.flatnonzero(y == c), per_class, replace=False)] = c
    return labels


@pytest.mark.parametrize("curvature", ["kfac", "exact"])
def test_separated_blobs_are_labelled_correctly_from_two_labels_per_class(curvature):
    x, y = blobs()
    labels = few_labels(y, 2)
    result = InfluencePropagation(PropagationConfig(curvature=curvature)).fit(x, labels)
    assert (result.transduction_ == y).mean() == 1.0
    assert np.allclose(result.label_distributions_.sum(1), 1.0)
    given = labels >= 0
    assert (result.transduction_[given] == labels[given]).all()
    assert (result.confidence_[given] == 1.0).all() and (result.round_[given] == 0).all()


def test_supporting_examples_are_labelled_and_of_the_propagated_label():
    x, y = blobs()
    labels = few_labels(y, 3)
    result = InfluencePropagation(PropagationConfig(top_m=3)).fit(x, labels)
    for i in np.flatnonzero(labels < 0):
        support = result.support_[i][result.support_[i] >= 0]
        assert support.size >= 1
        assert (labels[support] == result.transduction_[i]).all()
        values = result.support_influence_[i][: support.size]
        assert (values > 0).all() and (np.diff(values) <= 0).all()


def test_confidence_is_higher_on_correct_than_on_wrong_propagations():
    x, y = blobs(n_per_class=100, spread=2.5, seed=1)  # overlapping classes: some errors
    labels = few_labels(y, 5, seed=1)
    result = InfluencePropagation().fit(x, labels)
    pool = labels < 0
    correct = result.transduction_[pool] == y[pool]
    assert 0.5 < correct.mean() < 1.0
    confidence = result.confidence_[pool]
    assert confidence[correct].mean() > confidence[~correct].mean() + 0.03
    confident = confidence >= np.median(confidence)
    assert correct[confident].mean() > correct[~confident].mean()


def test_support_is_first_order_leave_one_out_change_of_the_logit():
    """``s(i, u)`` (exact curvature) predicts the drop of u's class-y_i logit on refitting without
    i, and it agrees in sign with the retrained change for most pairs."""
    x, y = blobs(n_per_class=15, n_classes=3, dim=4, spread=1.5, seed=2)
    l2 = 0.05
    weight = np.ones(len(y))
    model = SoftmaxRegression.fit(x, y, 3, l2, weight)
    support = support_matrix(x, support_directions(model, x, y, weight, "exact"))
    predicted, actual = [], []
    for i in range(0, len(y), 5):
        keep = np.arange(len(y)) != i
        refit = SoftmaxRegression.fit(x[keep], y[keep], 3, l2)
        logit = np.hstack([x, np.ones((len(x), 1))]) @ (model.weights - refit.weights).T
        actual.append(logit[:, y[i]] - logit.mean(1))
        predicted.append(support[:, i])
    predicted, actual = np.concatenate(predicted), np.concatenate(actual)
    assert np.corrcoef(predicted, actual)[0, 1] > 0.9


def test_softmax_hessian_matches_finite_differences_of_the_gradient():
    x, y = blobs(n_per_class=10, n_classes=3, dim=3, seed=3)
    weight = np.ones(len(y))
    model = SoftmaxRegression.fit(x, y, 3, 0.1, weight)
    hessian = SoftmaxHessian(model, x, weight).dense()
    xa = np.hstack([x, np.ones((len(x), 1))])

    def gradient(flat):
        p = SoftmaxRegression(flat.reshape(model.weights.shape), 0.1).probabilities(x)
        return ((p - np.eye(3)[y]).T @ xa / len(y)).ravel()

    eps = 1e-6
    flat = model.weights.ravel()
    numeric = np.stack(
        [
            (gradient(flat + eps * e) - gradient(flat - eps * e)) / (2 * eps)
            for e in np.eye(flat.size)
        ],
        axis=1,
    )
    assert np.allclose(hessian, numeric, atol=1e-6)
    assert np.isclose(np.trace(hessian), SoftmaxHessian(model, x, weight).trace())


def test_self_training_rounds_fix_labels_by_round_and_stay_correct_on_blobs():
    x, y = blobs()
    labels = few_labels(y, 2)
    result = InfluencePropagation(PropagationConfig(rounds=2, grow=0.3)).fit(x, labels)
    assert set(np.unique(result.round_)) == {0, 1, 2, 3}
    assert (result.transduction_ == y).mean() == 1.0


def test_inputs_and_config_are_not_changed_and_results_are_deterministic():
    x, y = blobs()
    labels = few_labels(y, 2)
    x_before, labels_before = x.copy(), labels.copy()
    config = PropagationConfig(rounds=1)
    first = InfluencePropagation(config).fit(x, labels)
    second = InfluencePropagation(config).fit(x, labels)
    assert np.array_equal(x, x_before) and np.array_equal(labels, labels_before)
    assert config == PropagationConfig(rounds=1)
    assert np.array_equal(first.transduction_, second.transduction_)
    assert np.array_equal(first.label_distributions_, second.label_distributions_)
    assert np.array_equal(first.support_, second.support_)


def test_ids_name_the_supporting_examples_and_predict_labels_new_points():
    x, y = blobs()
    labels = few_labels(y, 2)
    ids = [f"ex{i}" for i in range(len(y))]
    result = InfluencePropagation().fit(x, labels, ids=ids)
    u = int(np.flatnonzero(labels < 0)[0])
    assert result.supporting_ids(u) == [ids[r] for r in result.support_[u] if r >= 0]
    new, new_y = blobs(n_per_class=5, seed=0)  # same centres, new noise
    assert (result.predict(new) == new_y).mean() == 1.0


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros((4, 2)), np.array([0, 1, -1]), "labels must be 4"),
        (np.zeros(4), np.array([0, 1, -1, -1]), "features must be"),
        (
            np.array([[0.0, 1], [np.nan, 1], [1, 1], [1, np.inf]]),
            np.array([0, 1, -1, -1]),
            "rows [1, 3]",
        ),
        (np.ones((4, 2)), np.array([0, 2, -1, -1]), "classes [1] have no labelled"),
        (np.ones((4, 2)), np.array([0, 0, -1, -1]), "at least 2 classes"),
        (np.ones((4, 2)), np.array([0, 1, -2, -1]), ">= 0, or -1"),
        (np.ones((4, 2)), np.array([0.0, 1, -1, -1]), "integer class"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_error(features, labels, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        InfluencePropagation().fit(features, labels)


def test_bad_config_is_refused():
    with pytest.raises(InputError, match="curvature"):
        PropagationConfig(curvature="diagonal")
    with pytest.raises(InputError, match="l2"):
        PropagationConfig(l2=0.0)
    with pytest.raises(InputError, match="grow"):
        PropagationConfig(grow=0.0)


def test_a_fully_labelled_set_keeps_its_labels_and_predicts_new_points():
    x, y = blobs(n_per_class=5)
    result = InfluencePropagation().fit(x, y)
    assert np.array_equal(result.transduction_, y) and (result.confidence_ == 1).all()
    assert (result.predict(x) == y).all()
