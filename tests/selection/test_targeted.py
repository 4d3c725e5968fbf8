import numpy as np
import pytest

from infscope.selection import BIDS, LESS, Pool, normalize_instances


def inflated_pool(seed=0):
    """Three tasks with 10 queries each; 300 candidates, 100 useful to each task. Task 'big' has
    influences 20x larger (e.g. larger gradient norms), which biases un-normalised selection."""
    rng = np.random.default_rng(seed)
    n, tasks = 300, ["big", "mid", "small"]
    useful_for = np.repeat(np.arange(3), 100)
    rows, query_tasks = [], []
    for t, name in enumerate(tasks):
        scale = 20.0 if name == "big" else 1.0
        for _ in range(10):
            row = rng.normal(0, 0.3, n) + (useful_for == t) * rng.uniform(0.5, 1.5, n)
            rows.append(scale * row)
            query_tasks.append(name)
    pool = Pool(
        ids=[f"c{i}" for i in range(n)],
        influence=np.array(rows),
        query_tasks=query_tasks,
        tags={"task": [tasks[t] for t in useful_for]},
    )
    return pool, useful_for


def test_normalize_instances_is_row_zscore():
    x = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    z = normalize_instances(x)
    np.testing.assert_allclose(z[0], [-1.2247449, 0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(z[1], 0)


def test_less_is_biased_by_the_inflated_task_and_bids_restores_balance():
    pool, useful_for = inflated_pool()
    less = LESS().select(pool, 60)
    counts = np.bincount(useful_for[less.indices], minlength=3)
    assert counts[0] >= 55  # LESS-style max over tasks: nearly all for the inflated task
    bids = BIDS().select(pool, 60)
    counts = np.bincount(useful_for[bids.indices], minlength=3)
    assert counts.min() >= 18, counts  # balanced: ~20 each
    served = bids.info["served"]
    assert max(served.values()) - min(served.values()) < 0.5
    # without normalisation BIDS still balances (iteration), but on raw scale the 'served'
    # comparison is dominated by the big task
    raw = BIDS(normalize=False).select(pool, 60)
    assert np.bincount(useful_for[raw.indices], minlength=3)[0] < 55


def test_less_single_task_is_mean_influence_topk():
    rng = np.random.default_rng(1)
    influence = rng.normal(size=(5, 50))
    pool = Pool(ids=[str(i) for i in range(50)], influence=influence)
    sel = LESS().select(pool, 5)
    assert set(sel.indices) == set(np.argsort(-influence.mean(0))[:5])


def test_bids_deterministic_and_validates():
    pool, _ = inflated_pool()
    a, b = BIDS(seed=4).select(pool, 30), BIDS(seed=4).select(pool, 30)
    np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="aggregate"):
        BIDS(aggregate="median")
