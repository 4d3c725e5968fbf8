"""Similarity top-k and cluster matching toward a target set in a feature space."""

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import (
    ClusterMatch,
    Pool,
    TargetSimilarity,
    build_selector,
    proportional_quotas,
    target_similarity,
)


def mixture_pool(seed=0):
    """Three well separated groups of 200; the target is group 0, whose points form four
    sub-modes (like the intents of one task); the targets sample every sub-mode, but sub-mode 0
    lies closest to the targets' mean, so similarity to it ranks sub-mode 0 first."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 10
    group = np.repeat(np.arange(3), 200)
    sub = np.tile(np.arange(4), 150)
    offsets = np.zeros((4, 8))
    offsets[np.arange(4), 3 + np.arange(4)] = [1.0, 3.0, 3.0, 3.0]
    x = centres[group] + offsets[sub] * (group == 0)[:, None] + rng.normal(0, 0.3, (600, 8))
    targets = centres[0] + offsets[np.arange(40) % 4] + rng.normal(0, 0.3, (40, 8))
    return Pool(ids=[str(i) for i in range(600)], features=x, target_features=targets), group, sub


def test_target_similarity_mean_and_max():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(target_similarity(x, t), [1.0, 0.0, np.sqrt(0.5)])
    np.testing.assert_allclose(target_similarity(x, t, "max"), [1.0, 0.0, np.sqrt(0.5)])
    with pytest.raises(InputError, match="aggregate"):
        target_similarity(x, t, "sum")


def test_similarity_top_k_is_the_most_similar():
    pool, group, _ = mixture_pool()
    sel = TargetSimilarity().select(pool, 50)
    sim = target_similarity(pool.features, pool.target_features)
    assert set(sel.indices) == set(np.argsort(-sim)[:50])
    assert (group[sel.indices] == 0).all()


def test_cluster_match_covers_the_target_distribution():
    pool, group, sub = mixture_pool()
    top = TargetSimilarity().select(pool, 100)
    match = ClusterMatch(n_clusters=8, seed=0).select(pool, 100)
    assert (group[match.indices] == 0).mean() >= 0.95  # the target group, no tags read
    top_modes = np.bincount(sub[top.indices[group[top.indices] == 0]], minlength=4)
    match_modes = np.bincount(sub[match.indices[group[match.indices] == 0]], minlength=4)
    assert top_modes[0] == top_modes.max() >= 45 > match_modes.max()  # top-k piles onto mode 0
    assert match_modes.min() >= 15  # matching takes every sub-mode about equally
    assert match.info["similarity_fill"] == 0 and match.info["target_clusters"] >= 3
    again = ClusterMatch(n_clusters=8, seed=0).select(pool, 100)
    np.testing.assert_array_equal(again.indices, match.indices)


def test_cluster_match_fills_beyond_the_target_clusters_by_similarity():
    pool, group, _ = mixture_pool()
    sel = ClusterMatch(n_clusters=3, within="similar").select(pool, 300)
    assert sel.info["similarity_fill"] == 100  # group 0 holds 200
    assert (group[sel.indices[:200]] == 0).all() and len(set(sel.indices)) == 300
    assert "beyond the target clusters" in sel.reasons[-1]


def test_proportional_quotas_redistribute_and_skip_unwanted():
    sizes = np.array([5, 100, 100, 100])
    shares = np.array([0.5, 0.25, 0.25, 0.0])
    q = proportional_quotas(shares, sizes, 40)
    assert q.tolist() == [5, 18, 17, 0] or q.tolist() == [5, 17, 18, 0]
    assert proportional_quotas(shares, sizes, 500).tolist() == [5, 100, 100, 0]


def test_registry_and_validation():
    assert isinstance(build_selector("cluster-match", n_clusters=4), ClusterMatch)
    assert isinstance(build_selector("similarity", aggregate="max"), TargetSimilarity)
    with pytest.raises(InputError, match="within"):
        ClusterMatch(within="best")
    with pytest.raises(InputError, match="needs features"):
        ClusterMatch().select(Pool(ids=["a", "b"]), 1)
