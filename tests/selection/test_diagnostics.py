"""Selection diagnostics: composition, scores, coverage, near-duplicates; text and figure."""

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import Pool, RandomSelection, TopK, diagnose
from infscope.selection.diagnostics import expected_random_hits, near_duplicate_rate


def pool_with_duplicates(seed=0):
    rng = np.random.default_rng(seed)
    n = 400
    x = rng.normal(size=(n, 6))
    x[300:] = x[300] + rng.normal(0, 0.01, (100, 6))  # 100 near-copies of one point
    scores = np.r_[rng.normal(size=300), 5 + rng.random(100)]  # the copies score highest
    texts = [f"text {i}" for i in range(300)] + ["the same text"] * 100
    tags = {"task": ["a"] * 200 + ["b"] * 200, "label": list("xy") * 200}
    return Pool(ids=[str(i) for i in range(n)], scores=scores, features=x, texts=texts, tags=tags)


def test_report_flags_a_narrow_redundant_selection(tmp_path):
    pool = pool_with_duplicates()
    top = TopK(balance=None).select(pool, 80)
    report = diagnose(top, pool, n_clusters=10)
    assert report.duplicates.selected == 1.0 and report.duplicates.random < 0.5
    assert report.duplicates.text_selected == 1.0
    assert report.coverage.hit <= 0.2 < report.coverage.random_hit
    assert report.scores.selected[1] > 5 > report.scores.rest[1]
    assert report.counts["task"] == {"a": (200, 0), "b": (200, 80)}
    text = report.text()
    assert "near-duplicates (cosine >= 0.95): 100.0% of the picks" in text
    assert "b: 200 -> 80, 50.0% -> 100.0%" in text and "clusters hit" in text
    path = report.plot(tmp_path / "report.png")
    assert path.stat().st_size > 10_000
    rand = diagnose(RandomSelection(seed=0).select(pool, 80), pool, n_clusters=10)
    assert rand.coverage.hit > report.coverage.hit
    assert rand.duplicates.selected < report.duplicates.selected


def test_report_without_features_scores_or_tags(tmp_path):
    pool = Pool(ids=["a", "b", "c"])
    sel = RandomSelection().select(pool, 2)
    report = diagnose(sel, pool)
    assert report.coverage is None and report.scores is None and report.skew is None
    assert report.text().startswith("random: 2 of 3 selected")
    assert report.plot(tmp_path / "r.png").exists()
    with pytest.raises(InputError, match="scores have shape"):
        diagnose(sel, pool, scores=np.ones(2))


def test_expected_random_hits_and_duplicate_rate():
    sizes = np.array([1, 1, 98])
    # a random 1 of 100 hits the big cluster with p .98, each small with p .01
    assert expected_random_hits(sizes, 100, 1) == pytest.approx((0.98 + 0.02) / 3)
    assert expected_random_hits(sizes, 100, 100) == 1.0
    x = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]])
    assert near_duplicate_rate(x, 0.99) == pytest.approx(2 / 3)
    assert near_duplicate_rate(x[:1], 0.99) == 0.0
