"""infscope.audit: the evidence functions, K-fold retraining, duplicates and the whole audit."""

import numpy as np
import pytest

from infscope.attribution import SelfInfluence
from infscope.audit import (
    AuditConfig,
    AuditResult,
    FoldRun,
    ProbeConfig,
    audit,
    cross_validate,
    find_duplicates,
    label_suspicion,
    neighbour_votes,
    noise_structure,
    probe_fit_predict,
    stack_weights,
)
from infscope.errors import InputError


def blobs(n_per_class=120, classes=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + rng.normal(size=(y.size, dim))
    return x.astype(np.float32), y


def flip(y, classes, rate=0.1, seed=0, to=None):
    rng = np.random.default_rng(seed)
    noisy, flipped = y.copy(), np.zeros(y.size, bool)
    rows = rng.choice(y.size, int(rate * y.size), replace=False)
    flipped[rows] = True
    noisy[rows] = (
        (y[rows] + 1) % classes
        if to == "next"
        else (y[rows] + rng.integers(1, classes, rows.size)) % classes
    )
    return noisy, flipped


@pytest.fixture(scope="module")
def audited():
    x, y = blobs()
    noisy, flipped = flip(y, 4)
    ids = [f"ex{i}" for i in range(y.size)]
    texts = [f"text {i}" for i in range(y.size)]
    texts[5] = texts[7] = "The SAME  text"  # an exact duplicate (case and spaces differ below)
    texts[7] = "the same text"
    noisy[7] = (noisy[5] + 1) % 4
    config = ProbeConfig(hidden=16, epochs=8, lr=1e-2)
    result = audit(
        noisy,
        ids=ids,
        fit_predict=probe_fit_predict(x, noisy, 4, ids, config),
        features=x,
        texts=texts,
        class_names=["a", "b", "c", "<d>"],
        config=AuditConfig(folds=4),
    )
    return result, y, noisy, flipped


def test_audit_finds_flipped_labels_and_suggests_the_true_ones(audited):
    from sklearn.metrics import average_precision_score

    result, clean, noisy, flipped = audited
    assert average_precision_score(flipped, result.suspicion) > 0.8  # random: 0.1
    top = result.ranking()[: flipped.sum()]
    assert flipped[top].mean() > 0.7
    hits = top[flipped[top]]
    assert (result.suggested[hits] == clean[hits]).mean() > 0.9
    # flagged = the estimated number of errors, most suspicious first
    assert result.flagged[result.ranking()[: result.flagged.sum()]].all()
    assert 0.5 * flipped.sum() <= result.flagged.sum() <= 2 * flipped.sum()
    assert set(result.info["sources"]) == {
        "out_of_fold",
        "out_of_fold_epoch_mean",
        "neighbour_votes",
    }
    assert sum(result.info["sources"].values()) == pytest.approx(1.0)
    assert {"aum", "forgetting_events", "el2n", "out_of_fold_label_probability"} <= set(
        result.evidence
    )


def test_explanations_carry_the_suggested_and_the_given_label(audited):
    result, _, noisy, _ = audited
    for i in result.ranking()[:20]:
        support = [j for j in result.supporting[i] if j >= 0]
        against = [j for j in result.contradicting[i] if j >= 0]
        assert all(noisy[j] == result.suggested[i] for j in support) and i not in support
        assert all(noisy[j] == noisy[i] for j in against) and i not in against
    assert any(len([j for j in result.supporting[i] if j >= 0]) == 3 for i in result.ranking()[:5])


def test_duplicates_with_conflicting_labels_are_grouped(audited):
    result = audited[0]
    exact = [g for g in result.duplicates if 5 in g.members]
    assert len(exact) == 1 and set(exact[0].members) >= {5, 7} and exact[0].conflicting
    assert result.records(len(result))[0]["rank"] == 1
    row = next(r for r in result.records() if r["id"] == "ex7")
    assert "conflicting labels" in row["duplicates"]


def test_result_round_trips_and_displays_escaped(audited, tmp_path):
    result = audited[0]
    result.save(tmp_path / "audit")
    loaded = AuditResult.load(tmp_path / "audit")
    np.testing.assert_array_equal(loaded.suspicion, result.suspicion)
    np.testing.assert_array_equal(loaded.supporting, result.supporting)
    assert loaded.records(5) == result.records(5)
    assert loaded.duplicates == result.duplicates and loaded.info == result.info
    frame = result.to_pandas(10)
    assert list(frame.index) == [result.ids[i] for i in result.ranking()[:10]]
    assert "<d>" not in result._repr_html_()
    with pytest.raises(InputError, match="no readable audit"):
        AuditResult.load(tmp_path)


def test_pred_probs_alone_equal_a_fixed_beta_score():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    result = audit(y, pred_probs=probs, config=AuditConfig(beta=0.0))
    np.testing.assert_allclose(result.suspicion, 1 - probs[np.arange(50), y])
    assert result.info["sources"] == {"out_of_fold": 1.0}
    with pytest.raises(InputError, match="at most one"):
        audit(y, pred_probs=probs, fit_predict=lambda a, b, f: probs[b])
    with pytest.raises(InputError, match="sum to 1"):
        audit(y, pred_probs=probs * 2)


def test_self_influence_is_reported_by_id():
    probs = np.full((3, 2), 0.5)
    si = SelfInfluence(np.array([3.0, 1.0, 2.0]), ["c", "a", "b"], "tracin")
    result = audit([0, 1, 0], ids=["a", "b", "c"], pred_probs=probs, self_influence=si)
    np.testing.assert_array_equal(result.evidence["self_influence"], [1.0, 2.0, 3.0])


def test_label_suspicion_interpolates_self_confidence_and_margin():
    q = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    y = np.array([1, 1])
    s0, suggested, support = label_suspicion(q, y, 0.0)
    np.testing.assert_allclose(s0, [0.7, 0.3])
    np.testing.assert_array_equal(suggested, [0, 0])
    np.testing.assert_allclose(support, [0.6, 0.2])
    s1, _, _ = label_suspicion(q, y, 1.0)
    np.testing.assert_allclose(s1, [(0.7 + 0.6) / 2, (0.3 + 0.2) / 2])


def test_stack_weights_prefer_the_source_that_predicts_the_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    good = np.full((400, 4), 0.05)
    good[np.arange(400), y] = 0.85
    useless = np.full((400, 4), 0.25)
    w = stack_weights([useless, good], y)
    assert w[1] > 0.95 and w.sum() == pytest.approx(1.0)
    # a mixture is the maximum when each source explains different examples
    half = np.where((np.arange(400) < 200)[:, None], good, useless)
    other = np.where((np.arange(400) >= 200)[:, None], good, useless)
    assert stack_weights([half, other], y) == pytest.approx([0.5, 0.5], abs=0.02)


def test_neighbour_votes_leave_the_example_out():
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [0.0, 1.0], [0.1, 0.99]])
    y = np.array([0, 0, 1, 1, 1])
    votes = neighbour_votes(y, 2, features=x, k=2)
    assert votes.k == 2 and 2 not in votes.index[2]
    assert votes.probs[2].argmax() == 0  # both neighbours of example 2 say 0: its own 1 is unheard
    assert votes.probs[0, 0] > 0.5
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T  # cosine: the same votes from a given similarity matrix
    from_matrix = neighbour_votes(y, 2, similarity=sim, k=2)
    np.testing.assert_allclose(from_matrix.probs, votes.probs, rtol=1e-5)


def test_noise_concentration_tells_structured_from_uniform_flips():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 200)
    probs = np.full((y.size, 6), 0.02)
    probs[np.arange(y.size), y] = 0.9  # the model recognises the true class
    uniform, _ = flip(y, 6, 0.15, seed=1)
    structured, _ = flip(y, 6, 0.15, seed=1, to="next")
    assert noise_structure(probs, uniform).concentration < 0.2
    assert noise_structure(probs, structured).concentration > 0.9
    two = noise_structure(probs[:, :2] / probs[:, :2].sum(1, keepdims=True), y % 2)
    assert two.concentration == 0.0 and two.beta == 0.0
    del rng


def test_cross_validate_predicts_every_example_out_of_fold():
    y = np.repeat(np.arange(3), 10)
    seen = []

    def fit_predict(train_idx, heldout_idx, fold):
        assert not set(train_idx) & set(heldout_idx)
        seen.extend(heldout_idx.tolist())
        return FoldRun(np.full((heldout_idx.size, 3), 1 / 3))

    oof = cross_validate(fit_predict, y, 3, folds=5, seed=0)
    assert sorted(seen) == list(range(30)) and oof.probs.shape == (30, 3)
    assert np.bincount(oof.fold).tolist() == [6] * 5
    with pytest.raises(InputError, match="shape"):
        cross_validate(lambda a, b, f: np.ones((b.size, 2)) / 2, y, 3)


def test_find_duplicates_exact_and_near():
    y = np.array([0, 1, 0, 1])
    groups = find_duplicates(y, texts=["Hello  World", "hello world", "x", "y"])
    assert len(groups) == 1 and groups[0].members == (0, 1) and groups[0].kind == "exact"
    assert groups[0].conflicting
    index = np.array([[1], [0], [3], [2]])
    similarity = np.array([[0.5], [0.5], [0.99], [0.99]])
    near = find_duplicates(y, neighbours=(index, similarity), threshold=0.95)
    assert [g.members for g in near] == [(2, 3)] and near[0].kind == "near" and near[0].conflicting


def test_inferred_classes_refuse_a_label_carried_once_and_warn_about_gaps():
    from infscope.audit import record_labels
    from infscope.data import ExampleSet
    from infscope.errors import InfscopeWarning

    def examples(labels):
        records = [{"id": f"r{i}", "label": v} for i, v in enumerate(labels)]
        return ExampleSet(records, [r["id"] for r in records])

    with pytest.raises(InputError, match=r"label 'caat' occurs once \(example 'r3'\)"):
        record_labels(examples(["cat", "cat", "dog", "caat", "dog"]))
    labels, names = record_labels(examples(["cat", "caat", "dog"] * 2))
    assert names == ["caat", "cat", "dog"] and labels.tolist() == [1, 0, 2] * 2
    with pytest.raises(InputError, match="label 7 occurs once"):
        record_labels(examples([0, 1, 0, 1, 7]))
    with pytest.warns(InfscopeWarning, match="classes 2, 3, 4 have no examples"):
        record_labels(examples([0, 1, 5] * 2))
    labels, names = record_labels(examples([0, 1, 2, 1]), class_names=["a", "b", "c"])
    assert names == ["a", "b", "c"]  # given class names settle a rare class
    with pytest.raises(InputError, match="example 'r2' has label 3, outside the 3 class names"):
        record_labels(examples([0, 1, 3]), class_names=["a", "b", "c"])
