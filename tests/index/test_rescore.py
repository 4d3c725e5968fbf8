"""The refine copy: candidates of coarse codes scored in an in-memory scalar-quantised copy, only
its best ``REFINE_KEEP × k`` read from the store and scored exactly — the same recall as
re-scoring every candidate from the store, exact scores, calibrated on the path searches take,
saved and reopened only when the file holds the copy its metadata names."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

import infscope.index.ann as ann_module  # noqa: E402
from infscope.attribution import GradientSimilarity  # noqa: E402
from infscope.errors import InputError  # noqa: E402
from infscope.index import IndexConfig, InfluenceIndex, recall_at_k  # noqa: E402
from infscope.index.rescore import REFINE_KEEP  # noqa: E402
from tests.index.test_ann import clustered, write_store  # noqa: E402

DIRECTIONS = ("helpful", "harmful")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    return (
        write_store(root / "train", {"a": clustered(3000, 32, 12, 0)}, "loss", "t"),
        write_store(root / "query", {"a": clustered(20, 32, 12, 10)}, "measurement", "q"),
    )


def coarse(refine: str, **settings) -> IndexConfig:
    """Coarse 4-byte codes in 4 of 16 cells: re-scoring decides what is found."""
    return IndexConfig(
        "ivf-pq", nlist=16, nprobe=4, pq_bytes=4, rerank=20, refine=refine, **settings
    )


def test_the_refine_copy_reads_2k_rows_and_finds_what_rescoring_every_candidate_finds(
    stores, monkeypatch
):
    train, query = stores
    estimator = GradientSimilarity().fit(train)
    exact, full = estimator.score_top(query, 20), estimator.score(query).values
    settings = dict(calibration_queries=0)
    plain = InfluenceIndex.build(estimator, coarse("none", **settings))
    refined = InfluenceIndex.build(estimator, coarse("sq8", **settings))
    assert refined.info["factory"].endswith(",Refine(SQ8)")
    widths = []  # candidates per query that each search re-scores exactly from the store
    real = ann_module.exact_top_k
    monkeypatch.setattr(
        ann_module, "exact_top_k", lambda *a: widths.append(a[3].shape[1]) or real(*a)
    )
    for direction in DIRECTIONS:
        before = recall_at_k(plain.search(query, 20, (direction,)), exact, direction)
        found = refined.search(query, 20, (direction,))
        assert recall_at_k(found, exact, direction) >= max(before - 0.02, 0.9)
        # the scores returned are the estimator's own, with its sign, not the copy's
        np.testing.assert_allclose(
            found.arrays[f"{direction}_values"],
            np.take_along_axis(full, found.arrays[direction], 1),
            rtol=1e-6,
        )
    assert widths == [20 * 20, REFINE_KEEP * 20, 20 * 20, REFINE_KEEP * 20]
    # no re-scoring: the copy's own (near-exact) scores, in the estimator's sign
    own = refined.search(query, 20, rerank=0)
    for direction in DIRECTIONS:
        picked = own.arrays[direction]
        np.testing.assert_allclose(
            own.arrays[f"{direction}_values"],
            np.take_along_axis(full, picked, 1),
            atol=0.05 * np.abs(full).max(),
        )


def test_calibration_measures_the_path_searches_take(stores, monkeypatch):
    """The build's recall is measured through the refine copy (2k exact re-scores per query),
    and a search at the calibrated settings finds about what it measured."""
    train, query = stores
    estimator = GradientSimilarity().fit(train)
    widths = []
    real = ann_module.exact_top_k
    monkeypatch.setattr(
        ann_module, "exact_top_k", lambda *a: widths.append(a[3].shape[1]) or real(*a)
    )
    index = InfluenceIndex.build(estimator, coarse("sq8", calibration_k=20, target_recall=0.95))
    assert widths and set(widths) == {REFINE_KEEP * 20}
    found, exact = index.search(query, 20), estimator.score_top(query, 20)
    for direction in DIRECTIONS:
        assert index.calibration[direction]["recall"] >= 0.95
        assert recall_at_k(found, exact, direction) >= 0.9


def test_save_load_round_trip_and_a_file_without_the_named_copy_is_refused(stores, tmp_path):
    train, query = stores
    estimator = GradientSimilarity().fit(train)
    settings = dict(calibration_queries=0)
    index = InfluenceIndex.build(estimator, coarse("sq8", **settings))
    path = index.save(tmp_path / "refined")
    loaded = InfluenceIndex.load(path, GradientSimilarity().fit(train))
    assert hasattr(loaded.index, "refine_index")
    assert loaded.index.refine_index.ntotal == train.n_examples
    for direction in DIRECTIONS:
        np.testing.assert_array_equal(
            loaded.search(query, 10).arrays[direction], index.search(query, 10).arrays[direction]
        )
    # an index file without the copy beside metadata that names one (and the reverse)
    other = InfluenceIndex.build(estimator, coarse("none", **settings)).save(tmp_path / "plain")
    swapped = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes((other / "index.faiss").read_bytes())
    with pytest.raises(InputError, match="refine copy does not match"):
        InfluenceIndex.load(path, estimator)
    (other / "index.faiss").write_bytes(swapped)
    with pytest.raises(InputError, match="refine copy does not match"):
        InfluenceIndex.load(other, estimator)
    # a truncated file
    (path / "index.faiss").write_bytes(swapped[: len(swapped) // 2])
    with pytest.raises(InputError, match="not a FAISS index"):
        InfluenceIndex.load(path, estimator)
    # an index of the previous format (no refine copy recorded) is rebuilt, not guessed at
    meta = json.loads((other / "index.json").read_text())
    (other / "index.json").write_text(json.dumps({**meta, "format": "infscope.index/3"}))
    with pytest.raises(InputError, match="rebuild it"):
        InfluenceIndex.load(other, estimator)


def test_mapping_the_training_shards_once_leaves_searches_no_files_to_open(
    stores, tmp_path, monkeypatch
):
    """A search re-scores a few hundred rows spread over many shards: a cold process opened
    a new shard file for most of them (10⁷ rows: 504 ms per query against 60 ms warm). After
    :func:`map_training_shards` (which `infscope serve` calls at start) a search opens none."""
    from infscope.index.rescore import map_training_shards
    from infscope.store import FeatureStore, feature_store

    train, query = stores
    config = coarse("sq8", calibration_queries=0)
    path = InfluenceIndex.build(GradientSimilarity().fit(train), config).save(tmp_path / "i")
    fresh = FeatureStore.open(train.root)
    index = InfluenceIndex.load(path, GradientSimilarity().fit(fresh))
    opened = []
    real = feature_store.open_shard
    monkeypatch.setattr(feature_store, "open_shard", lambda *a: opened.append(a[0]) or real(*a))
    map_training_shards(index)
    assert len(opened) == len(train.shard_ranges()) > 40
    opened.clear()
    index.search(query, 20)
    assert opened == []
