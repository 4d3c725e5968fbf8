"""Mislabel detection metrics on rankings whose AUC, AP and recall are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import SelfInfluence
from infscope.errors import InputError
from infscope.evaluation import mislabel_detection

# 20 examples, 4 mislabeled
FLAGS = np.zeros(20, dtype=bool)
FLAGS[[2, 7, 11, 19]] = True


def test_perfect_ranking():
    values = np.where(FLAGS, 10.0, 1.0) + np.arange(20) * 0.01
    report = mislabel_detection(values, FLAGS, fractions=(0.05, 0.1, 0.2, 0.5))
    assert report.auc == 1.0 and report.average_precision == 1.0
    # top 1, 2, 4, 10 examples are mislabeled-first: found 1/4, 2/4, 4/4, 4/4
    assert report.found_at == {0.05: 0.25, 0.1: 0.5, 0.2: 1.0, 0.5: 1.0}
    assert (report.n_mislabeled, report.n) == (4, 20)


def test_reversed_ranking():
    values = np.where(FLAGS, -10.0 - np.arange(20), 1.0)  # mislabeled ranked 17th..20th
    report = mislabel_detection(values, FLAGS)
    assert report.auc == 0.0
    assert report.found_at == {0.05: 0.0, 0.1: 0.0, 0.2: 0.0}
    # AP of the worst ranking: positives at ranks 17..20 -> mean of 1/17, 2/18, 3/19, 4/20
    assert report.average_precision == pytest.approx(np.mean([1 / 17, 2 / 18, 3 / 19, 4 / 20]))


def test_partial_ranking_by_hand():
    # order (highest first): 2, 5, 7, 0, 11, then the rest; 19 last
    values = np.zeros(20)
    values[[2, 5, 7, 0, 11]] = [5, 4, 3, 2, 1]
    values[19] = -1
    report = mislabel_detection(SelfInfluence(values, [str(i) for i in range(20)], "x"), FLAGS)
    # top 1: {2} -> 1/4; top 2: {2,5} -> 1/4; top 4: {2,5,7,0} -> 2/4
    assert report.found_at == {0.05: 0.25, 0.1: 0.25, 0.2: 0.5}
    # pairs (mislabeled, clean) ranked right: 2 beats 16, 7 beats 15, 11 beats 14, 19 beats 0
    # (14 clean examples tied at 0 with 11 above them); total 4 * 16 = 64
    assert report.auc == pytest.approx((16 + 15 + 14 + 0) / 64)
    # AP: precision at each positive's rank: 1/1, 2/3, 3/5, 4/20
    assert report.average_precision == pytest.approx(np.mean([1, 2 / 3, 3 / 5, 4 / 20]))


def test_validation():
    values = np.arange(20.0)
    with pytest.raises(InputError, match="20 self-influence values but 19"):
        mislabel_detection(values, FLAGS[:19])
    with pytest.raises(InputError, match="no example is marked"):
        mislabel_detection(values, np.zeros(20, bool))
    with pytest.raises(InputError, match="every example is marked"):
        mislabel_detection(values, np.ones(20, bool))
    with pytest.raises(InputError, match="booleans"):
        mislabel_detection(values, np.full(20, 2))
    with pytest.raises(InputError, match="fractions"):
        mislabel_detection(values, FLAGS, fractions=(0.0,))
    with pytest.raises(InputError, match="non-finite"):
        mislabel_detection(np.where(FLAGS, np.inf, 0.0), FLAGS)
    # 0/1 integers are fine
    assert mislabel_detection(values, FLAGS.astype(int)).n_mislabeled == 4


def test_a_label_column_is_not_taken_for_mislabel_flags(tmp_path):
    import json

    from infscope.evaluation import mislabel_flags

    ids = [f"t{i}" for i in range(10)]
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "label": int(k % 2 == 0 or k < 4), "is_mislabeled": k < 2}) + "\n"
            for k, i in enumerate(ids)
        )
    )
    assert sum(mislabel_flags(ids, data=path, field="is_mislabeled")) == 2
    with pytest.raises(InputError, match="'label' marks 7 of 10 .* looks like a label column"):
        mislabel_flags(ids, data=path, field="label")
