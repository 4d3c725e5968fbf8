"""Streaming top-k: the accumulator equals a full sort of the matrix for any block partition
(ties by the lower index), estimators' score_top equals score().top at every checkpoint count
and block size, and TopScores persist and validate."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import EKFAC, TracIn
from infscope.attribution.top_k import TopKAccumulator, TopScores
from infscope.errors import InputError, NonFiniteError
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask
from tests.attribution.conftest import later_state, split_examples, stores, trained_mlp


def _reference(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, ties by the lower index."""
    return np.argsort(-values, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("blocks", [(7, 5), (3, 11), (20, 40)])
def test_accumulator_equals_a_full_sort_for_any_partition(blocks):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 40)).round(1)  # rounding makes ties
    top = TopKAccumulator(20, 40, k=6, per_train=4)
    q_step, t_step = blocks
    for t in range(0, 40, t_step):  # train-major order on purpose
        for q in range(0, 20, q_step):
            top.add(q, t, values[q : q + q_step, t : t + t_step])
    result = top.result([f"q{i}" for i in range(20)], [f"t{j}" for j in range(40)], "x", {})
    np.testing.assert_array_equal(result.top()[0], _reference(values, 6))
    np.testing.assert_array_equal(result.top(harmful=True)[0], _reference(-values, 6))
    np.testing.assert_allclose(
        result.top()[1], np.take_along_axis(values, _reference(values, 6), 1)
    )
    np.testing.assert_array_equal(result.arrays["train_helpful"], _reference(values.T, 4))


def test_accumulator_keeps_the_lower_index_among_ties_in_any_block_order():
    """The merge sorts only the scores that can enter (at least the running k-th best):
    ties with it, arriving in later or earlier blocks, still rank by the lower index."""
    rng = np.random.default_rng(1)
    values = rng.integers(-2, 3, size=(9, 300)).astype(float)  # five values: ties everywhere
    top = TopKAccumulator(9, 300, k=25, per_train=3)
    for t in reversed(range(0, 300, 37)):
        top.add(0, t, values[:, t : t + 37])
    result = top.result([f"q{i}" for i in range(9)], [f"t{j}" for j in range(300)], "x", {})
    np.testing.assert_array_equal(result.top()[0], _reference(values, 25))
    np.testing.assert_array_equal(result.top(harmful=True)[0], _reference(-values, 25))
    np.testing.assert_array_equal(result.arrays["train_helpful"], _reference(values.T, 3))


def test_accumulator_checks_its_inputs():
    with pytest.raises(InputError, match="k must"):
        TopKAccumulator(2, 3, 0)
    with pytest.raises(InputError, match="per_train"):
        TopKAccumulator(2, 3, 1, per_train=-1)
    top = TopKAccumulator(2, 3, 5)  # k is capped at the training-set size
    top.add(0, 0, np.ones((2, 2)))
    with pytest.raises(InputError, match="expected"):
        top.result(["a", "b"], ["x", "y", "z"], "x", {})
    assert top.k == 3


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """A 6-12-3 MLP's identity stores at two checkpoints, with learning rates (TracIn)."""
    n = 50
    model, x, y = trained_mlp(n, 12)
    train, query = split_examples(x, y, n)
    root = tmp_path_factory.mktemp("top")
    task = ClassificationTask()
    extractor, _, _ = stores(root / "first", model, task, train, query)
    for name, state in (("early", dict(model.state_dict())), ("late", later_state(model, x, y, n))):
        model.load_state_dict(state)
        featurize(extractor, train, root / "train", name, learning_rate=0.1, progress=False)
        featurize(extractor, query, root / "query", name, gradient="measurement", progress=False)
    return FeatureStore.open(root / "train"), FeatureStore.open(root / "query")


@pytest.mark.parametrize("block_size", [4, 4096])
def test_score_top_equals_the_full_matrix(trajectory, block_size):
    train, query = trajectory
    estimator = TracIn(block_size=block_size).fit(train)
    full = estimator.score(query)
    top = estimator.score_top(query, k=5, per_train=3)
    for harmful in (False, True):
        index, values = full.top(5, harmful=harmful)
        np.testing.assert_array_equal(top.top(harmful)[0], index)
        np.testing.assert_allclose(top.top(harmful)[1], values, rtol=1e-6)
    np.testing.assert_array_equal(
        top.arrays["train_helpful"], _reference(np.asarray(full.values, np.float64).T, 3)
    )
    assert top.top_rows(2)[:2] == full.top_rows(2)[:2]
    assert top.metadata["method"] == "tracin"


def test_score_top_with_low_rank_queries(eigen):
    *_, basis, _, (_, train_store, query_store), _ = eigen
    estimator = EKFAC(basis, query_rank=2).fit(train_store)
    index, _ = estimator.score(query_store).top(4)
    np.testing.assert_array_equal(estimator.score_top(query_store, 4).top()[0], index)


def test_non_finite_blocks_name_the_examples(trajectory, monkeypatch):
    train, query = trajectory
    estimator = TracIn().fit(train)
    blocks = estimator._score_blocks

    def poisoned(store):
        for q_start, t_start, block in blocks(store):
            block = block.copy()
            block[0, 1] = np.nan
            yield q_start, t_start, block

    monkeypatch.setattr(estimator, "_score_blocks", poisoned)
    with pytest.raises(NonFiniteError, match=f"train '{train.ids[1]}'"):
        estimator.score_top(query, 3)


def test_save_load_and_validation(trajectory, tmp_path):
    train, query = trajectory
    top = TracIn().fit(train).score_top(query, k=4, per_train=2)
    loaded = TopScores.load(top.save(tmp_path / "top"))
    assert loaded.query_ids == top.query_ids and loaded.method == top.method
    for name, array in top.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
    assert len(loaded.to_pandas()) == 2 * 4 * len(query.ids)
    arrays = dict(top.arrays, helpful=top.arrays["helpful"] + len(train.ids))
    np.savez(tmp_path / "top" / "top.npz", **arrays)
    with pytest.raises(InputError, match="out of range"):
        TopScores.load(tmp_path / "top")
    (tmp_path / "top" / "top.json").write_text("{}")
    with pytest.raises(InputError, match="not an infscope top-k"):
        TopScores.load(tmp_path / "top")
    with pytest.raises(InputError, match="no readable"):
        TopScores.load(tmp_path / "missing")
