import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection
from infscope.selection.transport import (
    TAROT,
    round_robin,
    transport_distance,
    unit_distances,
    whitened_features,
)


def two_blobs(seed=0, n_a=120, n_b=280, m=80, d=3, shift=4.0):
    """Blob A around +shift·e0, blob B around -shift·e0; the target is drawn from A."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = shift
    x = np.concatenate([rng.normal(size=(n_a, d)) + mu, rng.normal(size=(n_b, d)) - mu])
    target = rng.normal(size=(m, d)) + mu
    pool = Pool(ids=[f"c{i}" for i in range(len(x))], features=x, target_features=target)
    return pool, np.arange(len(x)) < n_a


def buried_clusters(seed=0, per=60, m=60, nuisance=4, nuisance_sd=20.0):
    """Six tight clusters at ±3·e_i in 3 signal dimensions (clusters 0-2 form group A), plus
    ``nuisance`` dimensions of large variance that every point shares: the 'dominant feature
    components' that swamp plain cosine distance. The target is drawn from the A clusters."""
    rng = np.random.default_rng(seed)
    centers = np.concatenate([np.eye(3), -np.eye(3)]) * 3.0

    def draw(cluster):
        signal = centers[cluster] + rng.normal(size=(len(cluster), 3)) * 0.5
        return np.concatenate([signal, rng.normal(size=(len(cluster), nuisance)) * nuisance_sd], 1)

    cluster = np.repeat(np.arange(6), per)
    pool = Pool(
        ids=[str(i) for i in range(len(cluster))],
        features=draw(cluster),
        target_features=draw(rng.integers(0, 3, m)),
    )
    return pool, cluster


def cholesky_whitened(features, target, ridge):
    """The reference construction: joint centring, Cholesky of the ridged joint covariance."""
    x = np.concatenate([features, target])
    x = x - x.mean(0)
    cov = x.T @ x / len(x)
    cov += ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    z = np.linalg.solve(np.linalg.cholesky(cov), x.T).T
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(50, 6), (12, 40)])  # d <= N (covariance), d > N (Gram)
def test_whitening_matches_cholesky_whitening_distances(shape):
    rng = np.random.default_rng(0)
    n, d = shape
    mix = rng.normal(size=(d, d)) * np.logspace(0, 2, d)  # strongly anisotropic
    features, target = rng.normal(size=(n, d)) @ mix, rng.normal(size=(5, d)) @ mix + 1.0
    ridge = 1e-3
    cand, targ = whitened_features(features, target, ridge=ridge)
    ours = np.concatenate([cand, targ])
    ref = cholesky_whitened(features, target, ridge)
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0)


def test_unwhitened_features_are_centred_cosine():
    rng = np.random.default_rng(1)
    features, target = rng.normal(size=(20, 4)) * [1, 10, 1, 1], rng.normal(size=(3, 4))
    cand, targ = whitened_features(features, target, whiten=False)
    x = np.concatenate([features, target])
    x = x - x.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([cand, targ]), x)
    dist = unit_distances(targ, cand)
    np.testing.assert_allclose(dist, np.sqrt(np.clip(2 - 2 * targ @ cand.T, 0, None)))


def test_transport_distance_known_answer_and_solvers():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    cost = np.abs(x[:, None] - y[None, :])
    assert transport_distance(cost) == pytest.approx(1.0)  # shift every point by 1
    assert transport_distance(cost, exact=False, reg=0.02) == pytest.approx(1.0, abs=0.02)
    # a regularisation far below the cost scale switches Sinkhorn to the log domain: still finite
    assert transport_distance(cost, exact=False, reg=1e-3) == pytest.approx(1.0, abs=0.01)
    # unequal sizes: two points at 0 and 4 against one at 1 -> (1 + 3) / 2
    assert transport_distance(np.array([[1.0], [3.0]])) == pytest.approx(2.0)


def test_round_robin_gives_each_target_its_nearest_free_candidate():
    # targets at 0, 10, 20 on a line; candidates at 0, 1, ..., 29
    targets, cands = np.array([0.0, 10.0, 20.0]), np.arange(30.0)
    dist = np.abs(targets[:, None] - cands[None, :])
    picks, owners = round_robin(dist, 9, np.random.default_rng(0))
    assert len(set(picks.tolist())) == 9
    for r in range(3):  # every round serves every target once
        assert sorted(owners[3 * r : 3 * r + 3].tolist()) == [0, 1, 2]
    by_target = {j: sorted(picks[owners == j].tolist()) for j in range(3)}
    assert by_target[0] == [0, 1, 2]
    assert by_target[2] == [19, 20, 21]
    assert picks[owners == 1].tolist() == [10, 9, 11]  # nearest first, ties by lower index
    full, _ = round_robin(dist, 30, np.random.default_rng(0))
    assert sorted(full.tolist()) == list(range(30))
    with pytest.raises(InputError):
        round_robin(dist, 31, np.random.default_rng(0))


def test_round_robin_extends_lazily_past_the_first_prefix():
    # one target, 500 candidates: the 64-deep first prefix is exhausted and re-sorted deeper
    rng = np.random.default_rng(3)
    dist = rng.random((1, 500))
    picks, _ = round_robin(dist, 500, rng)
    np.testing.assert_array_equal(picks, np.argsort(dist[0], kind="stable"))


def test_tarot_picks_the_target_blob_and_finds_its_share():
    pool, is_a = two_blobs()
    tarot = TAROT()
    sel = tarot.select(pool, 60)
    assert len(sel) == 60
    assert is_a[sel.indices].mean() >= 0.9
    # the OT distance is smallest when the selection is roughly blob A: 30% of the pool
    assert sel.info["preferred_ratio"] == pytest.approx(0.3, abs=0.1)
    assert sel.info["preferred_size"] == round(sel.info["preferred_ratio"] * len(pool))
    sizes = [s for s, _ in sel.info["curve"]]
    assert sizes == sorted(sizes) and sizes[-1] == len(pool) and len(sizes) == 20
    assert sel.info["curve_solver"] == "exact" and sel.info["ot_solver"] == "exact"
    curve = tarot.ratio_curve(pool)
    assert curve.points() == sel.info["curve"]
    assert sel.reasons[0].startswith("nearest free candidate to target #")
    assert "whitened distance" in sel.reasons[0]


def test_tarot_selection_is_closer_to_the_target_than_random_subsets():
    pool, _ = two_blobs(seed=1)
    tarot = TAROT(curve=False)
    sel = tarot.select(pool, 60)
    assert sel.info["ot_distance"] == pytest.approx(tarot.ot_distance(pool, sel.indices))
    rng = np.random.default_rng(0)
    random = [tarot.ot_distance(pool, rng.choice(len(pool), 60, replace=False)) for _ in range(20)]
    assert sel.info["ot_distance"] < min(random)


def test_whitening_undoes_dominant_nuisance_components():
    pool, cluster = buried_clusters()
    is_a = cluster < 3
    whitened = TAROT(curve=False).select(pool, 90)
    plain = TAROT(whiten=False, curve=False).select(pool, 90)
    assert is_a[whitened.indices].mean() >= 0.9
    assert is_a[plain.indices].mean() <= 0.75  # cosine on raw features follows the nuisance
    # round-robin over target points covers every mode of the (three-cluster) target
    counts = np.bincount(cluster[whitened.indices], minlength=6)[:3]
    assert counts.min() >= 0.2 * len(whitened), counts
    assert plain.info["whitened"] is False


def test_tarot_is_deterministic_fills_any_budget_and_saves(tmp_path):
    pool, _ = two_blobs(n_a=40, n_b=60, m=20)
    a = TAROT(checkpoints=5, seed=3).select(pool, 0.25)
    b = TAROT(checkpoints=5, seed=3).select(pool, 0.25)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.info == b.info
    for budget in (1, 37, len(pool)):
        assert len(TAROT(curve=False).select(pool, budget)) == budget
    loaded = Selection.load(a.save(tmp_path))
    assert loaded.info["curve"] == a.info["curve"]


def test_sinkhorn_above_the_exact_threshold():
    pool, _ = two_blobs(n_a=60, n_b=60, m=30)
    exact = TAROT(checkpoints=4).select(pool, 40)
    entropic = TAROT(checkpoints=4, exact_max=0).select(pool, 40)
    assert entropic.info["ot_solver"] == entropic.info["curve_solver"] == "sinkhorn(reg=0.02)"
    np.testing.assert_array_equal(exact.indices, entropic.indices)  # only the measure differs
    assert entropic.info["ot_distance"] == pytest.approx(exact.info["ot_distance"], abs=0.05)


def test_tarot_validates_inputs():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(10)]
    with pytest.raises(InputError, match="target_features"):
        TAROT().select(Pool(ids=ids, features=rng.normal(size=(10, 3))), 3)
    with pytest.raises(InputError, match="columns"):  # dimension mismatch
        Pool(ids=ids, features=rng.normal(size=(10, 3)), target_features=rng.normal(size=(4, 2)))
    empty = Pool(ids=ids, features=rng.normal(size=(10, 3)), target_features=np.empty((0, 3)))
    with pytest.raises(InputError, match="empty"):
        TAROT().select(empty, 3)
    one = Pool(ids=ids, features=rng.normal(size=(10, 3)), target_features=rng.normal(size=(1, 3)))
    with pytest.raises(InputError, match="curve=False"):
        TAROT().select(one, 3)
    assert len(TAROT(curve=False).select(one, 3)) == 3
    flat = Pool(ids=ids, features=np.ones((10, 3)), target_features=np.ones((2, 3)))
    with pytest.raises(InputError, match="no variance"):
        TAROT().select(flat, 3)
    with pytest.raises(InputError, match="non-empty"):
        TAROT().ot_distance(one, [])
    with pytest.raises(InputError, match="0..9"):
        TAROT().ot_distance(one, [3, 10])
    for bad in ({"ridge": 0}, {"folds": 1}, {"checkpoints": 0}, {"reg": 0}, {"exact_max": -1}):
        with pytest.raises(InputError):
            TAROT(**bad)
