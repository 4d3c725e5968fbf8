"""One query's search split over threads finds what the plain FAISS search finds: the same
candidates from the same cells, scored in the SQ8 refine copy as FAISS scores them; and it steps
aside wherever the plain search is the one to run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")

import infscope.index.parallel as parallel  # noqa: E402
from infscope.attribution import GradientSimilarity  # noqa: E402
from infscope.index import IndexConfig, InfluenceIndex, recall_at_k  # noqa: E402
from tests.index.test_ann import clustered, write_store  # noqa: E402


@pytest.fixture(scope="module")
def refined():
    rows = clustered(6000, 32, 12, 0).astype(np.float32)
    index = faiss.index_factory(32, "IVF32,PQ16x4fs,Refine(SQ8)", faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.add(rows)
    return index, faiss.extract_index_ivf(index), clustered(12, 32, 12, 5).astype(np.float32)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("nprobe", [8, 7])  # 7: the second thread's share padded with no cell
def test_split_search_finds_what_faiss_finds(refined, two_threads, nprobe):
    index, ivf, queries = refined
    ivf.nprobe, count = nprobe, 20
    index.k_factor = 20.5  # the codes propose 410 candidates, the copy keeps 20
    for query in queries:
        split = parallel.split_search(index, ivf, query[None], count, min_codes=0)
        plain = index.search(query[None], count)
        assert split is not None and split[1].shape == (1, count)
        same = np.intersect1d(split[1], plain[1])
        assert len(same) >= count - 1  # a near-tie at the boundary may swap
        ours = dict(zip(split[1][0], split[0][0]))
        theirs = dict(zip(plain[1][0], plain[0][0]))
        for row in same:  # the copy's decoded inner products are FAISS's
            assert ours[row] == pytest.approx(theirs[row], rel=1e-4, abs=1e-4)
        assert (np.diff(split[0][0]) <= 0).all()  # best first


def test_split_search_steps_aside(refined, two_threads):
    index, ivf, queries = refined
    ivf.nprobe = 8
    assert parallel.split_search(index, ivf, queries[:2], 20, min_codes=0) is None  # a batch
    assert parallel.split_search(index, ivf, queries[:1], 20) is None  # too few codes probed
    assert parallel.split_search(index, None, queries[:1], 20, min_codes=0) is None
    fp16 = faiss.index_factory(32, "IVF32,PQ16x4fs,Refine(SQfp16)", faiss.METRIC_INNER_PRODUCT)
    fp16.train(clustered(2000, 32, 12, 0).astype(np.float32))
    ivf16 = faiss.extract_index_ivf(fp16)
    assert parallel.split_search(fp16, ivf16, queries[:1], 20, min_codes=0) is None
    torch.set_num_threads(1)
    assert parallel.split_search(index, ivf, queries[:1], 20, min_codes=0) is None


def test_an_index_search_split_over_threads_finds_what_the_plain_one_finds(
    tmp_path, two_threads, monkeypatch
):
    """Through :class:`InfluenceIndex`, both directions: exact scores, and the recall of the
    plain search (the shares' fast-scan distances are quantised per call, so a near-tie at the
    codes' boundary may fall either way)."""
    train = write_store(tmp_path / "train", {"a": clustered(3000, 32, 12, 0)}, "loss", "t")
    queries = [
        write_store(tmp_path / f"q{i}", {"a": clustered(1, 32, 12, 10 + i)}, "measurement", "q")
        for i in range(6)
    ]
    estimator = GradientSimilarity().fit(train)
    config = IndexConfig("ivf-pq", nlist=16, nprobe=4, pq_bytes=4, rerank=20, refine="sq8")
    index = InfluenceIndex.build(estimator, config)
    exact = [estimator.score_top(query, 10) for query in queries]
    plain = [index.search(query, 10) for query in queries]
    calls = []
    real = parallel.split_search
    monkeypatch.setattr(
        "infscope.index.ann.split_search",
        lambda *a: calls.append(1) or real(*a, min_codes=0),
    )
    split = [index.search(query, 10) for query in queries]
    assert len(calls) == 2 * len(queries)  # one split search per query and direction
    for direction in ("helpful", "harmful"):
        before = np.mean([recall_at_k(p, e, direction) for p, e in zip(plain, exact)])
        after = np.mean([recall_at_k(s, e, direction) for s, e in zip(split, exact)])
        assert after >= before - 0.05
        for found, query in zip(split, queries):  # exact scores, the estimator's sign
            full = estimator.score(query).values
            np.testing.assert_allclose(
                found.arrays[f"{direction}_values"],
                np.take_along_axis(full, found.arrays[direction], 1),
                rtol=1e-5,
                atol=1e-5,
            )
