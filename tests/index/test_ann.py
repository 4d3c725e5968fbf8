"""FAISS indexes over influence vectors: the factorisation into query and training vectors
reproduces every estimator's scores, exact (flat) search equals streaming top-k, IVF searched
everywhere is exact, IVF-PQ with exact re-scoring finds the clustered neighbours, and saved
indexes reopen only beside the estimator they were built for."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from infscope.attribution import GradientSimilarity, InfluenceFunction, TracIn  # noqa: E402
from infscope.errors import InputError, StoreMismatchError  # noqa: E402
from infscope.index import IndexConfig, InfluenceIndex, recall_at_k  # noqa: E402
from infscope.index.ann import MAX_NLIST  # noqa: E402
from infscope.index.calibration import MAX_RERANK_GROWTH  # noqa: E402
from infscope.store import FeatureStore, StoreSpec  # noqa: E402


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Rows around ``clusters`` random centres: the structure real gradient features have."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    return centres[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))


def write_store(root, features: dict[str, np.ndarray], gradient: str, prefix: str) -> FeatureStore:
    n, dim = next(iter(features.values())).shape
    spec = StoreSpec(
        feature_dim=dim, gradient=gradient, shard_size=64, projection={"kind": "identity"}
    )
    store = FeatureStore.create(root, [f"{prefix}{i}" for i in range(n)], spec)
    for checkpoint, values in features.items():
        store.add_checkpoint(checkpoint, learning_rate=0.1)
        for start, stop in store.missing_shards(checkpoint):
            store.write_shard(checkpoint, start, values[start:stop])
    return FeatureStore.open(root)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann")
    train = {c: clustered(600, 32, 12, seed) for c, seed in (("a", 0), ("b", 1))}
    query = {c: clustered(20, 32, 12, seed + 10) for c, seed in (("a", 0), ("b", 1))}
    return (
        write_store(root / "train", train, "loss", "t"),
        write_store(root / "query", query, "measurement", "q"),
    )


@pytest.mark.parametrize(
    "estimator",
    [TracIn(), GradientSimilarity(normalize="unit"), InfluenceFunction(normalize="relatif")],
    ids=["tracin", "cosine", "relatif"],
)
def test_vectors_reproduce_the_scores(stores, estimator):
    train, query = stores
    estimator.fit(train)
    full = estimator.score(query).values
    checkpoints = [c for c, _ in estimator.checkpoint_weights(train)]
    rows = np.arange(train.n_examples)
    q = estimator.query_vectors([query.features(c) for c in checkpoints])
    t = estimator.train_vectors(
        [train.features(c) for c in checkpoints], rows, estimator.train_scales()
    )
    np.testing.assert_allclose(q @ t.T, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_flat_index_is_exact_top_k(stores):
    train, query = stores
    estimator = TracIn().fit(train)
    exact = estimator.score_top(query, 10)
    for rerank in (0, 3):
        found = InfluenceIndex.build(estimator, IndexConfig("flat", rerank=rerank)).search(
            query, 10
        )
        for direction in ("helpful", "harmful"):
            assert recall_at_k(found, exact, direction) == 1.0
            np.testing.assert_allclose(
                found.arrays[f"{direction}_values"],
                exact.arrays[f"{direction}_values"],
                rtol=1e-4,
            )


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_searched_everywhere_is_exact_and_pq_with_rescoring_recalls(stores, metric):
    train, query = stores
    estimator = GradientSimilarity(normalize="unit", checkpoints="b").fit(train)
    exact = estimator.score_top(query, 10)
    ivf = InfluenceIndex.build(estimator, IndexConfig("ivf-flat", nlist=8, rerank=0, metric=metric))
    assert recall_at_k(ivf.search(query, 10, nprobe=8), exact) == 1.0
    # the index's own scores (no re-scoring) are the inner products, lifted or not
    own = ivf.search(query, 10, nprobe=8)
    np.testing.assert_allclose(
        own.arrays["helpful_values"], exact.arrays["helpful_values"], rtol=1e-4, atol=1e-4
    )
    partial = recall_at_k(ivf.search(query, 10, nprobe=1), exact)
    pq = InfluenceIndex.build(
        estimator, IndexConfig("ivf-pq", nlist=8, pq_bytes=8, nprobe=8, metric=metric)
    )
    rescored = pq.search(query, 10, directions=("helpful",))
    assert recall_at_k(rescored, exact) >= 0.9 >= partial - 0.5
    assert rescored.directions == ["helpful"]
    with pytest.raises(InputError, match="no harmful"):
        rescored.top(harmful=True)
    # re-scored values are exact scores of the returned examples
    full = estimator.score(query).values
    np.testing.assert_allclose(
        rescored.arrays["helpful_values"],
        np.take_along_axis(full, rescored.arrays["helpful"], 1),
        rtol=1e-4,
    )


def test_save_load_and_mismatches(stores, tmp_path):
    train, query = stores
    estimator = InfluenceFunction().fit(train)
    index = InfluenceIndex.build(estimator, IndexConfig("ivf-flat", nlist=4))
    path = index.save(tmp_path / "index")
    loaded = InfluenceIndex.load(path, InfluenceFunction().fit(train))
    np.testing.assert_array_equal(
        loaded.search(query, 5).arrays["helpful"], index.search(query, 5).arrays["helpful"]
    )
    with pytest.raises(StoreMismatchError, match="other estimator settings"):
        InfluenceIndex.load(path, InfluenceFunction(damping=3.0).fit(train))
    with pytest.raises(StoreMismatchError, match="another training store"):
        InfluenceIndex.load(path, InfluenceFunction().fit(query_as_train(query, tmp_path)))
    (path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a FAISS index"):
        InfluenceIndex.load(path, InfluenceFunction().fit(train))
    with pytest.raises(InputError, match="no readable index"):
        InfluenceIndex.load(tmp_path / "missing", estimator)


def query_as_train(query: FeatureStore, tmp_path) -> FeatureStore:
    features = {c.id: query.features(c.id) for c in query.checkpoints}
    return write_store(tmp_path / "other", features, "loss", "o")


def test_config_validation():
    with pytest.raises(InputError, match="unknown index kind"):
        IndexConfig("lsh")
    with pytest.raises(InputError, match="nprobe"):
        IndexConfig(nprobe=0)
    with pytest.raises(InputError, match="unknown metric"):
        IndexConfig(metric="cosine")
    with pytest.raises(InputError, match="divide"):
        IndexConfig(pq_bytes=7).factory(1000, 32)
    with pytest.raises(InputError, match="unknown refine"):
        IndexConfig(refine="sq4")
    # 4-bit fast-scan codes, one per 4 dimensions; 4·√n cells, each with 39 sampled rows; a
    # one-byte-per-dimension refine copy
    assert IndexConfig().factory(10_000, 1024) == "IVF256,PQ256x4fs,Refine(SQ8)"
    assert IndexConfig().factory(1_000_000, 256) == "IVF4000,PQ64x4fs,Refine(SQ8)"
    assert IndexConfig(pq_bytes=16, refine="none").factory(1_000_000, 256) == "IVF4000,PQ32x4fs"
    assert IndexConfig(refine="fp16").factory(1_000_000, 256) == "IVF4000,PQ64x4fs,Refine(SQfp16)"
    # 4·√10⁷ = 12,649 cells would cost 3× more to add to: capped
    assert IndexConfig().factory(10_000_000, 256) == f"IVF{MAX_NLIST},PQ64x4fs,Refine(SQ8)"
    assert IndexConfig(train_size=65_536).factory(10_000_000, 256).startswith("IVF1680,")
    # the other kinds hold (nearly) exact vectors already
    assert IndexConfig("ivf-sq8").factory(10_000, 32) == "IVF256,SQ8"


def test_a_query_whose_cells_hold_fewer_than_k_vectors_searches_more_cells(stores):
    """One probed cell of an IVF index over 600 rows holds far fewer than k = 100 vectors: the
    search widens to more cells and still returns k distinct training examples per query with
    their exact scores (and, probing every cell, the exact top-k)."""
    train, query = stores
    estimator = TracIn().fit(train)
    full = estimator.score(query).values
    index = InfluenceIndex.build(estimator, IndexConfig("ivf-flat", nlist=15, nprobe=1))
    found = index.search(query, 100, directions=("helpful",))
    picked = found.arrays["helpful"]
    assert picked.shape == (20, 100) and (picked >= 0).all()
    assert all(len(set(row)) == 100 for row in picked)
    np.testing.assert_allclose(
        found.arrays["helpful_values"], np.take_along_axis(full, picked, 1), rtol=1e-4, atol=1e-4
    )
    everywhere = index.search(query, 100, directions=("helpful",), nprobe=15)
    assert recall_at_k(everywhere, estimator.score_top(query, 100), "helpful") == 1.0


def test_each_direction_is_searched_in_the_cells_it_needs(tmp_path):
    """Before: harmful search probed as many cells as helpful search and silently found far
    less (0.42 of the exact top-100 at 10⁶ rows). Now each direction's nprobe is calibrated
    at build time, and the recall it measured is what a search at that setting finds."""
    rng = np.random.default_rng(0)
    centres, shared = rng.normal(size=(20, 32)) * 2, rng.normal(size=(4, 32))

    def population(n: int) -> np.ndarray:
        picked = centres[rng.integers(20, size=n)]
        return picked + rng.normal(size=(n, 4)) @ shared + 0.3 * rng.normal(size=(n, 32))

    train = write_store(tmp_path / "train", {"a": population(2000)}, "loss", "t")
    query = write_store(tmp_path / "query", {"a": population(30)}, "measurement", "q")
    estimator = GradientSimilarity().fit(train)
    exact = estimator.score_top(query, 20)
    config = IndexConfig(
        "ivf-flat", nlist=40, nprobe=1, rerank=0, target_recall=0.95, calibration_k=20
    )
    index = InfluenceIndex.build(estimator, config)
    calibration = index.calibration
    assert calibration["queries"] == 128 and calibration["k"] == 20
    for direction in ("helpful", "harmful"):
        measured = calibration[direction]
        assert measured["recall"] >= 0.95 or measured["nprobe"] == 40
        assert index.nprobe_for(direction) == measured["nprobe"]
    assert calibration["harmful"]["nprobe"] > calibration["helpful"]["nprobe"]
    found = index.search(query, 20)
    assert found.metadata["approximate"] is True
    assert found.metadata["nprobe"] == {d: index.nprobe_for(d) for d in ("helpful", "harmful")}
    assert set(found.metadata["expected_recall"]) == {"helpful", "harmful"}
    narrow = index.search(query, 20, nprobe=1)
    assert recall_at_k(found, exact, "harmful") >= 0.9 > recall_at_k(narrow, exact, "harmful")
    # uncalibrated: the config's nprobe for both, no recall to report
    plain = InfluenceIndex.build(
        estimator, IndexConfig("ivf-flat", nlist=40, nprobe=3, calibration_queries=0)
    )
    assert plain.calibration is None and plain.nprobe_for("harmful") == 3
    assert plain.search(query, 5).metadata["expected_recall"] is None


def test_shards_checked_at_build_are_not_hashed_again_at_load(stores, tmp_path, monkeypatch):
    """Before: every `infscope query` call re-hashed every shard its candidates touched (3 s
    per call on a 400k-row store); the build records the shards it checked, and a load trusts
    those whose file is unchanged — a changed one is hashed again."""
    import os

    from infscope.store import shards

    train, query = stores
    path = InfluenceIndex.build(TracIn().fit(train), IndexConfig("ivf-flat", nlist=4)).save(
        tmp_path / "index"
    )
    hashed = []  # the training store's shards hashed (the query store's are checked as always)
    real_hash = shards.sha256_file

    def counting(p):
        if train.root in p.parents:
            hashed.append(p)
        return real_hash(p)

    monkeypatch.setattr(shards, "sha256_file", counting)
    shards._VERIFIED.clear()  # as in a fresh process
    fresh = FeatureStore.open(train.root)
    InfluenceIndex.load(path, TracIn().fit(fresh)).search(query, 5)
    assert hashed == []
    touched = fresh.shard_path("a", 0)
    os.utime(touched, ns=(0, 0))  # a changed file: checked again when read
    shards._VERIFIED.clear()
    fresh = FeatureStore.open(train.root)
    InfluenceIndex.load(path, TracIn().fit(fresh)).search(query, 600)
    assert hashed == [touched]
    # a record of files outside the training store is ignored
    import json

    foreign = tmp_path / "foreign.npy"
    foreign.write_bytes(b"x")
    meta = json.loads((path / "index.json").read_text())
    meta["checked_shards"][str(foreign)] = list(shards._file_state(foreign))
    (path / "index.json").write_text(json.dumps(meta))
    InfluenceIndex.load(path, TracIn().fit(fresh))
    assert str(foreign) not in shards._VERIFIED


def test_when_every_cell_is_not_enough_calibration_rescores_more_candidates(stores):
    """Coarse product-quantised codes miss exact neighbours even in every cell: the build
    then doubles the re-scored candidates until the target (or the cap on the config's)."""
    train, _ = stores
    estimator = GradientSimilarity(checkpoints="a").fit(train)
    config = IndexConfig(
        "ivf-pq", nlist=2, pq_bytes=1, rerank=1, target_recall=0.99, calibration_k=20
    )
    calibration = InfluenceIndex.build(estimator, config).calibration
    for direction in ("helpful", "harmful"):
        measured = calibration[direction]
        assert measured["nprobe"] == 2 and measured["rerank"] > 1
        assert measured["recall"] > calibration[direction]["curve"]["2/1"]
        assert measured["recall"] >= 0.99 or measured["rerank"] == MAX_RERANK_GROWTH


def test_calibration_grows_whichever_of_cells_and_candidates_finds_more(stores):
    """Exact codes: more candidates from the same cells find nothing new, so only the cells
    grow. Coarse codes: re-scoring more candidates finds neighbours before every cell is
    probed (before, the candidates grew only once every cell was)."""
    train, _ = stores
    estimator = GradientSimilarity(checkpoints="a").fit(train)
    exact_codes = IndexConfig(
        "ivf-flat", nlist=40, nprobe=1, rerank=2, target_recall=0.99, calibration_k=20
    )
    calibration = InfluenceIndex.build(estimator, exact_codes).calibration
    for direction in ("helpful", "harmful"):
        assert calibration[direction]["rerank"] == 2 and calibration[direction]["nprobe"] > 1
    coarse = IndexConfig(
        "ivf-pq", nlist=16, pq_bytes=1, nprobe=1, rerank=1, target_recall=0.99, calibration_k=20
    )
    calibration = InfluenceIndex.build(estimator, coarse).calibration
    tried = [tuple(map(int, key.split("/"))) for d in ("helpful", "harmful")
             for key in calibration[d]["curve"]]  # fmt: skip
    assert any(nprobe < 16 and rerank > 1 for nprobe, rerank in tried)


def test_rescoring_one_query_or_many_keeps_the_exact_top_k_with_ties_by_the_lower_index(
    tmp_path,
):
    """Every training row twice (each score tied): searched in every cell and re-scored, one
    query (each unique candidate scored once) and seven (scored per query) both return the
    exact top-k, the lower index of a tie first."""
    rows = clustered(150, 12, 5, 3)
    train = write_store(tmp_path / "train", {"a": np.repeat(rows, 2, axis=0)}, "loss", "t")
    queries = clustered(7, 12, 5, 4)
    many = write_store(tmp_path / "many", {"a": queries}, "measurement", "q")
    one = write_store(tmp_path / "one", {"a": queries[:1]}, "measurement", "q")
    estimator = GradientSimilarity(checkpoints="a").fit(train)
    config = IndexConfig("ivf-flat", nlist=4, rerank=3, calibration_queries=0)
    index = InfluenceIndex.build(estimator, config)
    for query in (one, many):
        found, exact = index.search(query, 6, nprobe=4), estimator.score_top(query, 6)
        for direction in ("helpful", "harmful"):
            np.testing.assert_array_equal(found.arrays[direction], exact.arrays[direction])


def test_calibration_and_search_in_small_steps_find_the_same(stores, monkeypatch):
    """Re-scoring a few queries at a time (bounded memory: 32 probe queries × 32,000 candidates
    at 10⁷ took 10.8 GB at once) measures the same recall and returns the same top-k."""
    from infscope.index import ann

    train, query = stores
    estimator = GradientSimilarity(checkpoints="a").fit(train)
    config = IndexConfig("ivf-flat", nlist=8, nprobe=1, rerank=2, calibration_k=10)
    whole = InfluenceIndex.build(estimator, config)
    monkeypatch.setattr(ann, "RESCORE_VALUES", 1)  # one query per step
    stepped = InfluenceIndex.build(estimator, config)
    assert stepped.calibration == whole.calibration
    for direction in ("helpful", "harmful"):
        np.testing.assert_array_equal(
            stepped.search(query, 10).arrays[direction], whole.search(query, 10).arrays[direction]
        )
