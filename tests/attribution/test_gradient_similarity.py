"""Dot product, cosine and TracIn: the sign convention, TracIn vs dot, blocks, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.attribution import GradientSimilarity, TracIn, load_scores
from infscope.data import ExampleSet
from infscope.errors import StoreError, StoreMismatchError
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask

IDENTITY = ProjectionConfig(kind="identity", dim=None)


def _setup(n_train=12, n_query=4, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(n_train + n_query, 6), torch.randint(0, 3, (n_train + n_query,))
    pairs = [(x[i], y[i]) for i in range(len(y))]
    train = ExampleSet(pairs[:n_train], tuple(f"t{i}" for i in range(n_train)))
    query = ExampleSet(pairs[n_train:], tuple(f"q{i}" for i in range(n_query)))
    return model, ClassificationTask(), train, query


def _stores(tmp_path, model, task, train, query, config=IDENTITY, checkpoints=(("c0", 0.5),)):
    extractor = GradientExtractor(model, task, config)
    for name, lr in checkpoints:
        featurize(
            extractor,
            train,
            tmp_path / "train",
            name,
            learning_rate=lr,
            shard_size=5,
            progress=False,
        )
        featurize(
            extractor,
            query,
            tmp_path / "query",
            name,
            gradient="measurement",
            learning_rate=lr,
            progress=False,
        )
    return FeatureStore.open(tmp_path / "train"), FeatureStore.open(tmp_path / "query")


def test_sign_convention_positive_means_helps(tmp_path):
    """One SGD step on training example z changes the query loss by about -lr * score(q, z):
    positive scores lower the query's loss."""
    model, task, train, query = _setup()
    train_store, query_store = _stores(tmp_path, model, task, train, query)
    scores = GradientSimilarity().fit(train_store).score(query_store).values
    lr = 1e-3
    qx = torch.stack([q[0] for q in query])
    qy = torch.stack([q[1] for q in query])
    before = task.train_loss(model, (qx, qy)).detach()
    for j, (x, y) in enumerate(train):
        step = [p.detach().clone() for p in model.parameters()]
        loss = task.train_loss(model, (x[None], y[None])).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lr * g
            change = (task.train_loss(model, (qx, qy)) - before).numpy()
            for p, saved in zip(model.parameters(), step):
                p.copy_(saved)
        np.testing.assert_allclose(change, -lr * scores[:, j], rtol=0.05, atol=1e-6)
    assert (scores > 0).any() and (scores < 0).any()


def test_tracin_single_checkpoint_is_dot_times_learning_rate(tmp_path):
    model, task, train, query = _setup()
    train_store, query_store = _stores(
        tmp_path, model, task, train, query, ProjectionConfig(kind="sjlt", dim=32)
    )
    dot = GradientSimilarity().fit(train_store).score(query_store).values
    tracin = TracIn().fit(train_store).score(query_store).values
    np.testing.assert_allclose(tracin, 0.5 * dot, rtol=1e-6)
    override = TracIn(learning_rates={"c0": 2.0}).fit(train_store).score(query_store).values
    np.testing.assert_allclose(override, 2.0 * dot, rtol=1e-6)


def test_tracin_sums_checkpoints_and_self_influence(tmp_path):
    model, task, train, query = _setup()
    extractor = GradientExtractor(model, task, IDENTITY)
    expected = np.zeros((len(query), len(train)))
    expected_self = np.zeros(len(train))
    for name, lr in (("c0", 0.5), ("c1", 0.25)):
        featurize(extractor, train, tmp_path / "train", name, learning_rate=lr, progress=False)
        featurize(
            extractor,
            query,
            tmp_path / "query",
            name,
            gradient="measurement",
            learning_rate=lr,
            progress=False,
        )
        t = extractor.features(task.collate(list(train))).double().numpy()
        q = extractor.features(task.collate(list(query)), "measurement").double().numpy()
        expected += lr * q @ t.T
        expected_self += lr * (t * t).sum(1)
        with torch.no_grad():  # move to a new checkpoint
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    estimator = TracIn(block_size=5).fit(FeatureStore.open(tmp_path / "train"))
    np.testing.assert_allclose(
        estimator.score(FeatureStore.open(tmp_path / "query")).values,
        expected,
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(estimator.self_influence().values, expected_self, rtol=1e-5)
    last = GradientSimilarity().fit(FeatureStore.open(tmp_path / "train"))
    assert last.describe()["checkpoints"] == {"c1": 1.0}


def test_cosine_and_block_size_invariance(tmp_path):
    model, task, train, query = _setup()
    train_store, query_store = _stores(tmp_path, model, task, train, query)
    t, q = train_store.features("c0"), query_store.features("c0")
    cosine = GradientSimilarity(normalize="unit", block_size=3).fit(train_store).score(query_store)
    expected = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        t / np.linalg.norm(t, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(cosine.values, expected, rtol=1e-5, atol=1e-6)
    assert cosine.method == "cosine"
    np.testing.assert_allclose(
        GradientSimilarity(normalize="unit").fit(train_store).self_influence().values,
        1.0,
        rtol=1e-5,
    )
    big = GradientSimilarity(block_size=4096).fit(train_store).score(query_store).values
    small = GradientSimilarity(block_size=2).fit(train_store).score(query_store).values
    np.testing.assert_allclose(big, small, rtol=1e-6)


def test_scores_persist_and_rank(tmp_path):
    model, task, train, query = _setup()
    train_store, query_store = _stores(tmp_path, model, task, train, query)
    scores = TracIn().fit(train_store).score(query_store, out=tmp_path / "memmap.npy")
    scores.save(tmp_path / "scores")
    loaded = load_scores(tmp_path / "scores")
    np.testing.assert_array_equal(loaded.values, scores.values)
    assert loaded.train_ids == list(train.ids) and loaded.query_ids == list(query.ids)
    index, values = loaded.top(3)
    assert (np.diff(values, axis=1) <= 0).all()
    assert values[0, 0] == loaded.values[0].max()
    index, values = loaded.top(3, harmful=True)
    assert values[0, 0] == loaded.values[0].min()
    self_scores = TracIn().fit(train_store).self_influence()
    self_scores.save(tmp_path / "self")
    assert load_scores(tmp_path / "self").values.shape == (len(train),)


def test_mismatched_or_incomplete_stores_are_refused(tmp_path):
    model, task, train, query = _setup()
    train_store, _ = _stores(
        tmp_path, model, task, train, query, ProjectionConfig(kind="sjlt", dim=16)
    )
    other = GradientExtractor(model, task, ProjectionConfig(kind="sjlt", dim=16, seed=1))
    featurize(other, query, tmp_path / "other", "c0", gradient="measurement", progress=False)
    with pytest.raises(StoreMismatchError, match="in projection.seed: 1 vs 0 ") as raised:
        GradientSimilarity().fit(train_store).score(FeatureStore.open(tmp_path / "other"))
    assert len(str(raised.value)) < 400  # the cause, not two dumps of the projection
    with pytest.raises(StoreMismatchError, match="needs loss gradients"):
        GradientSimilarity().fit(FeatureStore.open(tmp_path / "other"))
    featurize(
        GradientExtractor(model, task, ProjectionConfig(kind="sjlt", dim=16)),
        query,
        tmp_path / "q2",
        "c9",
        gradient="measurement",
        progress=False,
    )
    with pytest.raises(StoreMismatchError, match="c0"):
        TracIn().fit(train_store).score(FeatureStore.open(tmp_path / "q2"))
    store = FeatureStore.open(tmp_path / "train")
    store.add_checkpoint("unfinished", learning_rate=0.1)
    with pytest.raises(StoreError, match="incomplete"):
        TracIn().fit(FeatureStore.open(tmp_path / "train"))
    featurize(
        GradientExtractor(model, task, ProjectionConfig(kind="sjlt", dim=16)),
        train,
        tmp_path / "nolr",
        "c0",
        progress=False,
    )
    with pytest.raises(StoreError, match="no learning rate"):
        TracIn().fit(FeatureStore.open(tmp_path / "nolr"))
