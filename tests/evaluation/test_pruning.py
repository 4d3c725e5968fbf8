"""Pruning studies on a synthetic task with planted mislabeled examples: the right strategy finds
them, random does not; the study resumes, writes CSV, plots and a summary."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from infscope.errors import InputError
from infscope.evaluation.pruning import PruningStudy, prune_mask


def _task(n=300, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 400, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, int(noise * n), replace=False)] = True
    y_train = y[:n].copy()
    y_train[flipped] = 1 - y_train[flipped]
    # a loss-like "hardness" score: distance on the wrong side of the true boundary
    margin = (x[:n, 0] + x[:n, 1]) * (2 * y_train - 1)
    score = -margin  # high = hard (mislabeled examples sit on the wrong side)

    def train_fn(indices, seed):
        model = LogisticRegression(C=1e4).fit(x[indices], y_train[indices])
        return model.score(x[n:], y[n:])

    return score, y_train, flipped, train_fn


def test_prune_mask_strategies():
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.0])
    assert prune_mask(scores, 0.5, "keep-hard").nonzero()[0].tolist() == [0, 2, 4]
    assert prune_mask(scores, 0.5, "keep-easy").nonzero()[0].tolist() == [1, 3, 5]
    assert prune_mask(scores, 2 / 6, "drop-both-tails").nonzero()[0].tolist() == [3, 4]
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert prune_mask(scores, 2 / 3, "class-stratified", labels).nonzero()[0].tolist() == [
        0,
        2,
        3,
        4,
    ]
    with pytest.raises(InputError, match="unknown strategy"):
        prune_mask(scores, 0.5, "keep-middle")
    with pytest.raises(InputError, match="keep_fraction"):
        prune_mask(scores, 0.0, "keep-hard")


def test_study_finds_planted_mislabels_and_resumes(tmp_path):
    score, labels, flipped, train_fn = _task()
    calls = []

    def counted(indices, seed):
        calls.append(seed)
        if len(calls) == 7:
            raise RuntimeError("killed")
        return train_fn(indices, seed)

    study = PruningStudy(
        {"hardness": score},
        counted,
        keep_fractions=(0.7,),
        strategies=("keep-easy", "keep-hard"),
        seeds=(0, 1),
        labels=labels,
        cache_dir=tmp_path / "cache",
    )
    with pytest.raises(RuntimeError, match="killed"):
        study.run(progress=False)
    done = len(calls) - 1
    result = study.run(progress=False)
    assert len(calls) - 1 - done == len(result.runs) - done  # the rerun trained only the rest
    summary = {(r["score"], r["strategy"]): r["mean"] for r in result.summary()}
    full, _ = result.full_data()
    easy, hard, random = (
        summary[("hardness", "keep-easy")],
        summary[("hardness", "keep-hard")],
        summary[("random", "random")],
    )
    # dropping the hardest 30% removes the planted label noise: at least as good as full data
    assert easy >= full and easy > random and hard < random, (easy, hard, random, full)
    assert prune_mask(score, 0.7, "keep-easy")[flipped].mean() < 0.2
    assert result.largest_removable_fraction("hardness", "keep-easy") == pytest.approx(0.3)
    assert result.largest_removable_fraction("hardness", "keep-hard") == 0.0

    rows = list(csv.DictReader(result.to_csv(tmp_path / "runs.csv").open()))
    assert len(rows) == len(result.runs) == 2 * (1 + 1 + 2)
    png = result.plot(tmp_path / "curve.png", "test accuracy")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.plot(tmp_path / "curve.svg").read_text().lstrip().startswith("<?xml")
    text = result.text()
    assert "full data (300 examples)" in text and "up to 30% removable" in text


def test_bad_studies_are_refused():
    with pytest.raises(InputError, match="at least one score"):
        PruningStudy({}, lambda i, s: 0.0)
    with pytest.raises(InputError, match="differ in length"):
        PruningStudy({"a": np.zeros(3), "b": np.zeros(4)}, lambda i, s: 0.0)
    with pytest.raises(InputError, match="unknown strategies"):
        PruningStudy({"a": np.zeros(3)}, lambda i, s: 0.0, strategies=("keep-all",))


def test_cache_made_with_other_training_settings_is_refused(tmp_path):
    score, labels, _, train_fn = _task(n=60)
    common = dict(keep_fractions=(0.5,), seeds=(0,), cache_dir=tmp_path / "cache")
    PruningStudy({"s": score}, train_fn, training_key="C=1e4", **common).run(progress=False)
    with pytest.raises(InputError, match="training_key"):
        PruningStudy({"s": score}, train_fn, training_key="C=1", **common).run(progress=False)


def test_ties_break_by_index_or_by_seed():
    scores = np.zeros(10)
    assert prune_mask(scores, 0.3, "keep-hard").nonzero()[0].tolist() == [0, 1, 2]
    seeded = prune_mask(scores, 0.3, "keep-hard", tie_break_seed=4)
    assert seeded.sum() == 3 and seeded.nonzero()[0].tolist() != [0, 1, 2]
    assert (prune_mask(scores, 0.3, "keep-hard", tie_break_seed=4) == seeded).all()
