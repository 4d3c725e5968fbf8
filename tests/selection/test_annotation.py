import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import Pool, RandomSelection
from infscope.selection.annotation import (
    IDEAL,
    KMeansCentres,
    VoteK,
    activation_probabilities,
    cosine_knn,
)


def clusters(n_clusters=4, per=25, dim=8, seed=0):
    """Well-separated clusters in angle (cosine), cluster ``c`` around axis ``c``."""
    rng = np.random.default_rng(seed)
    centers = 10 * np.eye(dim)[:n_clusters]
    x = np.concatenate([c + rng.normal(scale=0.5, size=(per, dim)) for c in centers])
    labels = np.repeat(np.arange(n_clusters), per)
    return Pool(ids=[f"x{i}" for i in range(len(x))], features=x), labels


def angles(degrees):
    """Unit vectors at the given angles in the plane: cosine neighbours are angular ones."""
    rad = np.radians(degrees)
    return Pool(ids=[str(d) for d in degrees], features=np.stack([np.cos(rad), np.sin(rad)], 1))


@pytest.mark.parametrize(
    "make",
    [lambda: VoteK(k=10), lambda: IDEAL(k=10, n_simulations=50), lambda: KMeansCentres()],
)
def test_budget_of_one_per_cluster_covers_every_cluster_where_random_misses(make):
    random_covers = 0
    for seed in range(8):
        pool, labels = clusters(seed=seed)
        picked = make().select(pool, 4)
        assert sorted(labels[picked.indices]) == [0, 1, 2, 3], seed
        random = RandomSelection(seed=seed).select(pool, 4)
        random_covers += len(set(labels[random.indices])) == 4
    assert random_covers <= 3  # random hits all four clusters with probability 4!/4^4 ~ 0.1


def test_kmeans_centres_picks_the_member_nearest_each_centre_largest_cluster_first():
    rng = np.random.default_rng(0)
    big = np.array([1.0, 0.0]) + rng.normal(scale=0.05, size=(30, 2))
    small = np.array([0.0, 1.0]) + rng.normal(scale=0.05, size=(10, 2))
    x = np.concatenate([big, small])
    pool = Pool(ids=[str(i) for i in range(len(x))], features=x)
    sel = KMeansCentres(seed=3).select(pool, 2)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centre_big, centre_small = unit[:30].mean(0), unit[30:].mean(0)
    assert sel.indices[0] == np.argmin(np.linalg.norm(unit[:30] - centre_big, axis=1))
    assert sel.indices[1] == 30 + np.argmin(np.linalg.norm(unit[30:] - centre_small, axis=1))
    assert "30 candidates" in sel.reasons[0]
    again = KMeansCentres(seed=3).select(pool, 2)
    assert list(again.ids) == list(sel.ids)


def test_vote_k_hand_example():
    # nearest angular neighbours (k=1): 0->10, 10->0, 25->10, 45->25
    pool = angles([0, 10, 25, 45])
    sel = VoteK(k=1).select(pool, 2)
    # votes: "10" has two (from 0 and 25); once it is taken, 0 and 25 are covered and the
    # uncovered 45 makes "25" the best (score 1) while "0" has no unselected voter left
    assert sel.ids == ["10", "25"]
    assert sel.reasons[0] == "vote score 2 (rank 1 of 4 unselected)"
    assert sel.reasons[1] == "vote score 1 (rank 1 of 3 unselected)"


def test_ideal_exact_on_a_deterministic_graph():
    # k=1: each node's single edge has probability 1, so a cascade follows nearest neighbours;
    # from 45 it reaches 25, 10 and 0: all four
    sel = IDEAL(k=1, n_simulations=5).select(angles([0, 10, 25, 45]), 1)
    assert sel.ids == ["45"]
    assert sel.info["influence"] == 4.0
    assert sel.reasons == ["marginal diffusion gain 4 (expected reach 4 of 4)"]


def naive_cascade_reach(neighbours, prob, seeds, runs, rng):
    """A plain independent-cascade simulation, for checking IDEAL's live-edge estimate."""
    total = 0
    for _ in range(runs):
        active, frontier = set(seeds), list(seeds)
        while frontier:
            nxt = []
            for u in frontier:
                for v, p in zip(neighbours[u], prob[u]):
                    if v not in active and rng.random() < p:
                        active.add(int(v))
                        nxt.append(int(v))
            frontier = nxt
        total += len(active)
    return total / runs


def test_ideal_influence_matches_a_plain_cascade_simulation():
    pool, _ = clusters(n_clusters=2, per=30, seed=1)
    sel = IDEAL(k=5, n_simulations=400, seed=0).select(pool, 3)
    neighbours, sim = cosine_knn(pool.features, 5)
    prob = activation_probabilities(sim)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    seeds = sel.indices.tolist()
    reach = naive_cascade_reach(neighbours, prob, seeds, 4000, np.random.default_rng(1))
    # the picked subset looks a little better on the draws that picked it (winner's curse) ...
    assert sel.info["influence"] == IDEAL(k=5, n_simulations=400, seed=0).influence(pool, seeds)
    assert sel.info["influence"] >= reach
    # ... while fresh draws estimate it without bias
    fresh = IDEAL(k=5, n_simulations=2000, seed=9).influence(pool, seeds)
    assert fresh == pytest.approx(reach, rel=0.03)
    gains = [float(r.split()[3]) for r in sel.reasons]
    assert gains == sorted(gains, reverse=True)  # submodular estimate: gains never grow


def test_selections_are_deterministic_given_seed():
    pool, _ = clusters(seed=3)
    for make in (lambda s: VoteK(k=10, seed=s), lambda s: IDEAL(n_simulations=20, seed=s)):
        a, b = make(7).select(pool, 6), make(7).select(pool, 6)
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.reasons == b.reasons


def test_cosine_knn_matches_brute_force_across_blocks():
    x = np.random.default_rng(0).normal(size=(23, 5))
    neighbours, sim = cosine_knn(x, 4, block=7)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(neighbours, np.argsort(-full, axis=1)[:, :4])
    np.testing.assert_allclose(sim, np.take_along_axis(full, neighbours, axis=1))


def test_two_stage_vote_k_votes_within_confidence_buckets():
    pool, _ = clusters(per=50, seed=2)
    n = len(pool)
    conf = np.random.default_rng(5).normal(size=n)
    calls = []

    def confidence(selected, candidates):
        calls.append((selected, candidates))
        return conf[candidates]

    sel = VoteK(k=10, confidence=confidence).select(pool, 20)
    assert len(calls) == 1
    selected, candidates = calls[0]
    first = sel.indices[:2]  # ceil(20 / 10) by voting
    np.testing.assert_array_equal(selected, first)
    np.testing.assert_array_equal(candidates, np.setdiff1d(np.arange(n), first))
    # the least confident 90% of the rest, cut into 18 buckets: one pick each, in bucket order
    by_conf = candidates[np.argsort(conf[candidates])]
    kept = int(0.9 * len(candidates))
    bucket_of = {
        int(i): b for b, part in enumerate(np.array_split(by_conf[:kept], 18)) for i in part
    }
    assert [bucket_of.get(int(i)) for i in sel.indices[2:]] == list(range(18))
    assert sel.info["buckets"] == 18 and sel.info["first_stage"] == 2
    assert "confidence bucket 1/18" in sel.reasons[2]
    # without confidence: pure voting for the whole budget, confidence never consulted
    assert len(VoteK(k=10).select(pool, 20)) == 20


def test_two_stage_vote_k_with_a_tight_pool_keeps_one_candidate_per_bucket():
    pool, _ = clusters(n_clusters=2, per=6, seed=0)
    sel = VoteK(k=3, confidence=lambda s, c: -np.asarray(c, float)).select(pool, 12)
    assert sorted(sel.indices) == list(range(12))  # the whole pool, no bucket left empty


def test_tiny_pools():
    one = Pool(ids=["only"], features=[[1.0, 2.0]])
    assert VoteK().select(one, 1).ids == ["only"]
    assert IDEAL().select(one, 1).ids == ["only"]


def test_input_validation():
    pool, _ = clusters()
    with pytest.raises(InputError, match="needs features"):
        VoteK().select(Pool(ids=["a", "b"]), 1)
    with pytest.raises(InputError, match="needs features"):
        IDEAL().select(Pool(ids=["a", "b"]), 1)
    with pytest.raises(InputError, match="k \\(neighbours\\) must be a positive count"):
        VoteK(k=0)
    with pytest.raises(InputError, match="rho must be a number above 1"):
        VoteK(rho=1)
    with pytest.raises(InputError, match="confidence must be a callable"):
        VoteK(confidence=3)
    with pytest.raises(InputError, match="n_simulations must be a positive count"):
        IDEAL(n_simulations=0)
    with pytest.raises(InputError, match="positions in the pool"):
        IDEAL().influence(pool, [0, 100])
    with pytest.raises(InputError, match="budget 500 must lie in 1..100"):
        IDEAL().select(pool, 500)
    with pytest.raises(InputError, match="all zeros"):
        VoteK().select(Pool(ids=["a", "b"], features=[[0.0, 0.0], [1.0, 0.0]]), 1)
    with pytest.raises(InputError, match="one value per candidate"):
        VoteK(k=5, confidence=lambda s, c: [0.0]).select(pool, 20)
    with pytest.raises(InputError, match="NaN or inf"):
        VoteK(k=5, confidence=lambda s, c: np.full(len(c), np.nan)).select(pool, 20)
