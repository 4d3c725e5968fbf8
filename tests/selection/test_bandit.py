import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import ClusterBandit, Pool


def clustered_pool(seed=0, n_clusters=10, per=200):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 16)) * 5
    cluster = np.repeat(np.arange(n_clusters), per)
    features = centres[cluster] + rng.normal(size=(len(cluster), 16))
    influence = rng.normal(0, 1, len(cluster)) + np.where(cluster == 7, 3.0, 0.0)  # planted
    return features, influence, cluster


def test_bandit_finds_the_planted_cluster_scoring_a_fraction():
    features, influence, cluster = clustered_pool()
    calls = []

    def score_fn(indices):
        calls.append(len(indices))
        return influence[indices]

    pool = Pool(ids=[str(i) for i in range(len(cluster))], features=features)
    sel = ClusterBandit(n_clusters=10, probe_size=10, take=0.5, score_fn=score_fn).select(pool, 200)
    share = np.mean(cluster[sel.indices] == 7)
    assert share >= 0.4, share  # a uniform pick would give 10%
    planted_arm = np.bincount(
        [int(r.split()[1]) for r, i in zip(sel.reasons, sel.indices) if cluster[i] == 7]
    ).argmax()
    assert int(np.argmax(sel.info["pulls"])) == planted_arm  # the most pulled arm
    assert sel.info["n_scored"] == sum(calls) <= 0.25 * len(cluster)
    assert len(set(cluster[sel.indices])) >= 5  # every arm was explored at least once
    assert influence[sel.indices].mean() > 1.5


def test_bandit_with_pool_scores_and_determinism():
    features, influence, _ = clustered_pool(seed=1)
    pool = Pool(ids=[str(i) for i in range(len(influence))], features=features, scores=influence)
    a = ClusterBandit(seed=3).select(pool, 50)
    b = ClusterBandit(seed=3).select(pool, 50)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_bandit_fills_budget_when_probes_run_out():
    features, influence, _ = clustered_pool(n_clusters=3, per=10)
    pool = Pool(ids=[str(i) for i in range(30)], features=features, scores=influence)
    sel = ClusterBandit(n_clusters=3, probe_size=4, take=0.25).select(pool, 25)
    assert len(sel) == 25 and sel.info["n_scored"] == 30


def test_bandit_validates():
    features, _, _ = clustered_pool(n_clusters=2, per=5)
    pool = Pool(ids=[str(i) for i in range(10)], features=features)
    with pytest.raises(InputError, match="score_fn or pool scores"):
        ClusterBandit(n_clusters=2).select(pool, 3)
    with pytest.raises(InputError, match="one finite score"):
        ClusterBandit(n_clusters=2, score_fn=lambda idx: np.ones(1)).select(pool, 3)
    with pytest.raises(InputError):
        ClusterBandit(take=0)
