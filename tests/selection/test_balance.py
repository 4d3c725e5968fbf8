"""Label balance of ranking selectors (on by default), the skew measure and its warning."""

import warnings

import numpy as np
import pytest

from infscope.errors import InfscopeWarning, InputError
from infscope.selection import (
    BIDS,
    LESS,
    LabelBalance,
    Pool,
    RandomSelection,
    SoftmaxSampling,
    TopK,
    build_selector,
    label_skew,
)


def collapsing_pool(n_per_task=200, seed=0):
    """Two tasks; within each, label 'x' (40% of the task's rows) has by far the best scores and
    influence, as gradient similarity to a target does for the target's own label."""
    rng = np.random.default_rng(seed)
    task = np.repeat(["t1", "t2"], n_per_task)
    label = np.where(rng.random(2 * n_per_task) < 0.4, "x", "y")
    score = rng.normal(size=2 * n_per_task) + 3.0 * (label == "x")
    influence = np.stack([score + rng.normal(0, 0.1, len(score)) * (task == t) for t in task[::50]])
    query_tasks = list(task[::50])
    tags = {"task": task.tolist(), "label": [f"{t}:{lab}" for t, lab in zip(task, label)]}
    pool = Pool(
        ids=[str(i) for i in range(len(task))],
        scores=score,
        influence=influence,
        query_tasks=query_tasks,
        tags=tags,
    )
    return pool, task, label


def max_share(label, task, indices):
    return max(np.mean(label[indices][task[indices] == t] == "x") for t in np.unique(task[indices]))


@pytest.mark.parametrize(
    "make", [TopK, LESS, BIDS, lambda **kw: SoftmaxSampling(temperature=0.2, **kw)]
)
def test_ranking_selectors_keep_label_shares_by_default(make):
    pool, task, label = collapsing_pool()
    with pytest.warns(InfscopeWarning, match="skewed toward one label within task"):
        off = make(balance=None).select(pool, 120)
    assert max_share(label, task, off.indices) > 0.9  # the collapse
    with warnings.catch_warnings():
        warnings.simplefilter("error", InfscopeWarning)  # a balanced selection does not warn
        on = make().select(pool, 120)
    assert "within each 'task'" in on.info["label_balance"]
    # every prefix keeps x's share of each task's picks within 0.4 + 0.1 (up to rounding)
    for prefix in (20, 60, 120):
        assert max_share(label, task, on.indices[:prefix]) <= 0.5 + 1 / 10
    # and what it keeps are still the best-ranked of each label
    chosen = set(on.indices.tolist())
    for t in ("t1", "t2"):
        for lab in ("x", "y"):
            members = np.flatnonzero((task == t) & (label == lab))
            got = [i for i in members if i in chosen]
            if make is TopK:
                best = members[np.argsort(-pool.scores[members])[: len(got)]]
                assert set(got) == set(best.tolist())


def test_tolerance_and_scope():
    pool, task, label = collapsing_pool()
    loose = TopK(balance=LabelBalance(tolerance=0.3)).select(pool, 120)
    assert 0.55 < max_share(label, task, loose.indices) <= 0.7 + 1 / 60
    # labels are compared inside a task only; without the task tag the pool is one group
    flat = Pool(ids=pool.ids, scores=pool.scores, tags={"label": label.tolist()})
    sel = TopK().select(flat, 120)
    assert np.mean(label[sel.indices] == "x") <= 0.5 + 1 / 120
    assert sel.info["label_balance"] == "'label' shares at most 0.1 above the pool's"
    # no label tag: plain top-k, and info says so
    bare = Pool(ids=pool.ids, scores=pool.scores)
    plain = TopK().select(bare, 50)
    assert list(plain.indices) == list(np.argsort(-pool.scores)[:50])
    assert plain.info["label_balance"] == "off (the pool has no 'label' tag)"


def test_label_skew_and_summary():
    pool, task, label = collapsing_pool()
    top = TopK(balance=None)
    with pytest.warns(InfscopeWarning):
        sel = top.select(pool, 100)
    skew = label_skew(pool, sel.indices)
    pool_share = np.mean(
        [
            max(np.mean(label[task == t] == "x"), np.mean(label[task == t] == "y"))
            for t in ("t1", "t2")
        ]
    )
    assert skew.within == "task" and skew.selected_share > 0.95
    assert skew.pool_share == pytest.approx(pool_share, abs=0.03)
    text = sel.summary(pool)
    assert "most frequent label's share within task: pool" in text
    assert "warning: the selection is skewed" in text
    assert "share 50.0% -> " in text  # task shares before -> after
    rand = RandomSelection(seed=0).select(pool, 100)
    assert abs(label_skew(pool, rand.indices).excess) < 0.15
    assert "warning" not in rand.summary(pool)
    assert label_skew(Pool(ids=["a", "b"]), [0]) is None


def test_balance_options_from_text():
    assert build_selector("top-k", balance=False).balance is None
    assert build_selector("less", balance=0.25).balance == LabelBalance(tolerance=0.25)
    assert build_selector("bids").balance == LabelBalance()
    with pytest.raises(InputError, match="balance must be"):
        build_selector("top-k", balance="yes")
    with pytest.raises(InputError, match="tolerance"):
        LabelBalance(tolerance=1.5)
