"""Every dynamics score against values computed by hand from the 3 x 3 table in ``table.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infscope.attribution import SelfInfluence
from infscope.dynamics import (
    SCORES,
    DynamicsRecorder,
    aum,
    class_normalize,
    compute_score,
    confidence,
    correctness,
    data_map,
    el2n,
    forgetting_events,
    grand,
    hardness,
    mean_loss,
    self_influence_score,
    variability,
)
from infscope.errors import InputError
from tests.dynamics.table import IDS, table_recorder

LN2, LN3 = math.log(2), math.log(3)


@pytest.fixture
def table():
    return table_recorder()


def close(score: SelfInfluence, expected, rtol=1e-9):
    assert score.train_ids == IDS
    np.testing.assert_allclose(score.values, expected, rtol=rtol, atol=1e-12)


def test_mean_loss(table):
    # a: -(ln .5 + ln .25 + ln .8)/3 = ln(1/.1)/3; b: same product .1; c: .25 * .2 * .1 = .005
    close(mean_loss(table), [math.log(10) / 3, math.log(10) / 3, math.log(200) / 3])
    assert mean_loss(table).metadata["higher_is_harder"] is True


def test_confidence_variability_correctness(table):
    # label probabilities: a .5 .25 .8; b .25 .5 .8; c .25 .2 .1
    close(confidence(table), [1.55 / 3, 1.55 / 3, 0.55 / 3])
    m = 1.55 / 3
    std_ab = math.sqrt(((0.5 - m) ** 2 + (0.25 - m) ** 2 + (0.8 - m) ** 2) / 3)
    m = 0.55 / 3
    std_c = math.sqrt(((0.25 - m) ** 2 + (0.2 - m) ** 2 + (0.1 - m) ** 2) / 3)
    close(variability(table), [std_ab, std_ab, std_c])
    assert std_ab == pytest.approx(0.224846, abs=1e-6) and std_c == pytest.approx(
        0.062361, abs=1e-6
    )
    close(correctness(table), [2 / 3, 2 / 3, 0.0])
    maps = data_map(table)
    assert set(maps) == {"confidence", "variability", "correctness"}
    close(maps["confidence"], [1.55 / 3, 1.55 / 3, 0.55 / 3])


def test_aum_and_forgetting(table):
    # margins ln(p_y / max other p): a: ln2, -ln2, ln8; b: -ln2, ln2, ln8; c: -ln2, -ln3, -ln8
    close(aum(table), [LN2, LN2, -(4 * LN2 + LN3) / 3])
    # a: right, wrong, right = 1 event; b: wrong, right, right = 0; c never learned = 3 epochs
    close(forgetting_events(table), [1.0, 0.0, 3.0])
    close(forgetting_events(table, never_learned=-1), [1.0, 0.0, -1.0])


def test_el2n_and_grand(table):
    # epoch 0: a p - e0 = [-.5, .25, .25]; b p - e1 = [.5, -.75, .25]; c p - e0 = [-.75, .5, .25]
    e0 = [math.sqrt(0.375), math.sqrt(0.875), math.sqrt(0.875)]
    close(el2n(table), e0)
    close(el2n(table, epoch=0), e0)
    close(el2n(table, epoch=2), [math.sqrt(0.06), math.sqrt(0.06), math.sqrt(1.46)])
    # GraNd = EL2N * ||[h, 1]|| with ||[h, 1]|| = 2, 1, 3
    close(grand(table), [2 * e0[0], e0[1], 3 * e0[2]])
    close(grand(table, epoch=2), [2 * math.sqrt(0.06), math.sqrt(0.06), 3 * math.sqrt(1.46)])


def test_ensemble_averages_recorders(table):
    # a second "seed" in which every example has p = [1/3, 1/3, 1/3] at epoch 0
    other = DynamicsRecorder()
    other.record(["c", "a", "b"], torch.zeros(3, 3), [0, 0, 1], 0, features=torch.zeros(3, 2))
    uniform = math.sqrt((2 / 3) ** 2 + 2 * (1 / 3) ** 2)
    expected = [
        (math.sqrt(0.375) + uniform) / 2,
        (math.sqrt(0.875) + uniform) / 2,
        (math.sqrt(0.875) + uniform) / 2,
    ]
    score = el2n([table, other], epoch=0)
    close(score, expected)
    assert score.metadata["n_recorders"] == 2
    # GraNd: ||[0, 0, 1]|| = 1 for the second seed
    close(
        grand([table, other], epoch=0),
        [
            (2 * math.sqrt(0.375) + uniform) / 2,
            (math.sqrt(0.875) + uniform) / 2,
            (3 * math.sqrt(0.875) + uniform) / 2,
        ],
    )
    with pytest.raises(InputError, match="disagree on the labels"):
        bad = DynamicsRecorder()
        bad.record(["a", "b", "c"], torch.zeros(3, 3), [2, 1, 0], 0)
        el2n([table, bad], epoch=0)


def test_grand_without_gradient_norms_is_an_error():
    recorder = DynamicsRecorder()
    recorder.record(["x"], torch.zeros(1, 2), [0], 0)
    with pytest.raises(InputError, match="no last-layer gradient norms"):
        grand(recorder)


def test_epoch_selection_and_ids_order(table):
    # epochs 1 and 2 only: a .25 .8, b .5 .8, c .2 .1
    close(confidence(table, epochs=[1, 2]), [1.05 / 2, 1.3 / 2, 0.3 / 2])
    reordered = confidence(table, ids=["c", "a", "b"])
    assert reordered.train_ids == ["c", "a", "b"]
    np.testing.assert_allclose(reordered.values, [0.55 / 3, 1.55 / 3, 1.55 / 3])
    arrays = table.to_arrays()
    np.testing.assert_allclose(confidence(arrays, ids=["b"]).values, [1.55 / 3])
    with pytest.raises(InputError, match="not recorded"):
        el2n(table, epoch=7)


def test_missing_epochs_are_skipped():
    recorder = DynamicsRecorder()
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.4, 0.6]], dtype=torch.float64))
    recorder.record(["x", "y"], logits, [0, 0], 0)
    recorder.record(["y"], logits[:1], [0], 1)  # x missing in epoch 1
    recorder.record(["x", "y"], logits.flip(0), [0, 0], 2)
    arrays = recorder.to_arrays(["x", "y"])
    assert arrays.recorded.tolist() == [[True, False, True], [True, True, True]]
    assert np.isnan(arrays.loss[0, 1]) and np.isnan(arrays.probs[0, 1]).all()
    np.testing.assert_allclose(
        confidence(recorder, ids=["x", "y"]).values, [0.6, (0.4 + 0.8 + 0.8) / 3]
    )
    # x: right, (missing), wrong -> one forgetting event across the gap
    np.testing.assert_allclose(forgetting_events(recorder, ids=["x", "y"]).values, [1.0, 0.0])


def test_constructed_sequences_forgetting_and_aum():
    """Two classes, label 0, logits [m, 0]: the margin is m and the example is right when m > 0."""
    sequences = {
        "flip": [2.0, -1.0, 3.0, -0.5],  # right wrong right wrong: 2 events, AUM 0.875
        "never": [-1.0, -2.0, -0.5, -3.0],  # never learned: n_epochs = 4
        "late": [-1.0, 1.0, 1.0, 1.0],  # learned once, kept: 0
        "lost": [1.0, 1.0, -1.0, -1.0],  # one event
    }
    recorder = DynamicsRecorder()
    for epoch in range(4):
        ids = list(sequences)
        logits = torch.tensor([[sequences[i][epoch], 0.0] for i in ids])
        recorder.record(ids, logits, [0] * 4, epoch)
    assert forgetting_events(recorder).values.tolist() == [2.0, 4.0, 0.0, 1.0]
    assert forgetting_events(recorder, never_learned=99).values.tolist() == [2.0, 99.0, 0.0, 1.0]
    np.testing.assert_allclose(aum(recorder).values, [0.875, -1.625, 0.5, 0.0], atol=1e-6)


def test_margin_uses_the_largest_other_logit():
    recorder = DynamicsRecorder()
    logits = torch.tensor([[1.0, 3.0, 2.0]] * 3)
    recorder.record(["y0", "y1", "y2"], logits, [0, 1, 2], "final")
    np.testing.assert_allclose(aum(recorder).values, [-2.0, 1.0, -1.0])
    np.testing.assert_allclose(correctness(recorder).values, [0.0, 1.0, 0.0])


def test_class_normalize_zscore_and_rank(table):
    # labels a:0, b:1, c:0 — class 0 {a, c} z-scores to -1, +1; class 1 has one example -> 0
    close(mean_loss(table, normalize="zscore"), [-1.0, 0.0, 1.0])
    close(mean_loss(table, normalize="rank"), [0.0, 0.5, 1.0])
    normalized = aum(table, normalize="zscore")
    assert normalized.method == "aum+class_zscore"
    assert normalized.metadata["class_normalized"] == "zscore"
    assert normalized.metadata["higher_is_harder"] is False

    generator = np.random.default_rng(0)
    labels = generator.integers(0, 4, size=200)
    values = generator.normal(size=200) * (labels + 1) + 10 * labels  # scale and shift by class
    values[5] = np.nan
    z = class_normalize(values, labels, "zscore")
    assert np.isnan(z[5])
    for c in range(4):
        rows = (labels == c) & ~np.isnan(values)
        assert z[rows].mean() == pytest.approx(0.0, abs=1e-12)
        assert z[rows].std() == pytest.approx(1.0, rel=1e-12)
        # order within the class is kept
        assert (np.argsort(z[rows]) == np.argsort(values[rows])).all()
    r = class_normalize(values, labels, "rank")
    for c in range(4):
        rows = (labels == c) & ~np.isnan(values)
        assert r[rows].min() == 0.0 and r[rows].max() == 1.0
    with pytest.raises(InputError, match="unknown normalisation"):
        class_normalize(values, labels, "minmax")


def test_hardness_orients_scores(table):
    assert hardness(mean_loss(table)).values.tolist() == mean_loss(table).values.tolist()
    flipped = hardness(confidence(table))
    np.testing.assert_allclose(flipped.values, -confidence(table).values)
    assert flipped.metadata["higher_is_harder"] is True
    # the never-learned example c is the hardest by every hardness-oriented score except
    # variability (c is consistently wrong: unambiguous, so low variability)
    for name in set(SCORES) - {"variability"}:
        kwargs = {"epoch": 2} if name in ("el2n", "grand") else {}
        score = hardness(compute_score(name, table, **kwargs))
        assert score.train_ids[int(np.argmax(score.values))] == "c", name
    assert hardness(variability(table)).train_ids[int(np.argmin(variability(table).values))] == "c"
    with pytest.raises(InputError, match="unknown dynamics score"):
        compute_score("vibes", table)


def test_self_influence_adapter():
    class Fitted:
        def self_influence(self):
            return SelfInfluence(
                np.array([1.0, 3.0, 5.0, 2.0], np.float32), ["p", "q", "r", "s"], "tracin"
            )

    score = self_influence_score(Fitted())
    assert score.method == "tracin" and score.metadata["higher_is_harder"] is True
    normalized = self_influence_score(Fitted(), labels=[0, 0, 1, 1], normalize="zscore")
    np.testing.assert_allclose(normalized.values, [-1.0, 1.0, 1.0, -1.0])
    with pytest.raises(InputError, match="needs the labels"):
        self_influence_score(Fitted(), normalize="rank")


def test_scores_save_like_self_influence(tmp_path, table):
    from infscope.attribution import load_scores

    score = el2n(table, normalize="rank")
    loaded = load_scores(score.save(tmp_path / "el2n"))
    assert loaded.method == "el2n+class_rank"
    np.testing.assert_array_equal(loaded.values, score.values)


def test_seed_average_is_the_mean_of_the_runs_aligned_by_id():
    from infscope.dynamics import DynamicsRecorder, seed_average
    from tests.dynamics.table import random_records

    runs = []
    for seed, order in ((0, None), (1, [2, 0, 1] * 1)):
        logits, labels, _ = random_records(n=3, seed=seed)
        recorder = DynamicsRecorder()
        ids = ["x", "y", "z"]
        for epoch in range(3):
            index = list(range(3)) if order is None else order
            recorder.record(
                [ids[i] for i in index],
                torch.tensor(logits[epoch][index]),
                torch.tensor(labels[index]),
                epoch,
            )
        runs.append(recorder)
    # labels differ between these random runs; aum only needs each run's own labels
    averaged = seed_average(aum, runs)
    by_hand = (aum(runs[0]).values + aum(runs[1], ids=aum(runs[0]).train_ids).values) / 2
    np.testing.assert_allclose(averaged.values, by_hand)
    assert averaged.metadata["ensemble"] == 2
    with pytest.raises(InputError, match="at least one"):
        seed_average(aum, [])
