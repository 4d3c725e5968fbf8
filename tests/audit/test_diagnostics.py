"""infscope.audit.diagnostics: the audit says when its evidence is too weak to trust — and stays
quiet on informative data."""

import warnings

import numpy as np
import pytest

from infscope.audit import AuditConfig, ProbeConfig, audit, check_evidence, probe_fit_predict
from infscope.errors import InfscopeWarning

PROBE = ProbeConfig(hidden=16, epochs=8, lr=1e-2)


def run(features, labels, folds=4):
    ids = [f"ex{i}" for i in range(labels.size)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfscopeWarning)
        result = audit(
            labels,
            ids=ids,
            fit_predict=probe_fit_predict(features, labels, int(labels.max()) + 1, ids, PROBE),
            features=features,
            config=AuditConfig(folds=folds),
        )
    shown = [str(w.message) for w in caught if issubclass(w.category, InfscopeWarning)]
    assert shown == result.warnings  # every check is both warned and kept in the result
    return result


def labels_of(classes, per_class, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


def test_all_zero_features_are_reported_as_uninformative():
    y = labels_of(4, 40)
    result = run(np.zeros((y.size, 8), np.float32), y)
    text = " | ".join(result.warnings)
    assert "weak evidence" in text and "same for every example" in text
    check = result.info["evidence_check"]
    assert check["constant_features"] and check["p_value"] > 0.01


def test_random_features_are_reported_as_uninformative():
    y = labels_of(4, 40)
    x = np.random.default_rng(1).normal(size=(y.size, 32)).astype(np.float32)
    result = run(x, y)
    assert any("weak evidence" in w for w in result.warnings)
    assert not result.info["evidence_check"]["constant_features"]


@pytest.mark.parametrize("per_class", [1, 2])
def test_one_or_two_examples_per_class_are_too_few(per_class):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), per_class)
    probs = rng.dirichlet(np.ones(6), size=y.size)
    with pytest.warns(InfscopeWarning, match="too few examples per class: 6 of 6 classes"):
        result = audit(y, pred_probs=probs)
    assert result.info["evidence_check"]["smallest_class"] == per_class


def test_informative_blobs_raise_no_warning():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 3
    y = labels_of(4, 60)
    x = (centres[y] + rng.normal(size=(y.size, 8))).astype(np.float32)
    noisy = y.copy()
    flipped = rng.choice(y.size, 24, replace=False)
    noisy[flipped] = (y[flipped] + 1 + rng.integers(0, 3, 24)) % 4
    result = run(x, noisy)
    assert result.warnings == []
    check = result.info["evidence_check"]
    assert check["accuracy"] > 0.8 and check["p_value"] < 1e-6


def test_check_evidence_reports_implausible_error_counts_and_zero_rows():
    y = np.repeat(np.arange(3), 10)
    probs = np.eye(3)[y] * 0.8 + 0.2 / 3
    x = np.ones((30, 4))
    x[:2] = 0
    check = check_evidence(probs, y, 3, estimated_errors=20, features=x)
    assert check.accuracy == 1.0 and not check.constant_features and check.zero_feature_rows == 2
    assert [w.split(" ")[0] for w in check.warnings] == ["2", "confident"]
    assert not check.trustworthy
    informative = np.random.default_rng(0).normal(size=(30, 4))
    assert check_evidence(probs, y, 3, estimated_errors=2, features=informative).trustworthy
