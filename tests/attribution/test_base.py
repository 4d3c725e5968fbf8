"""The Estimator interface: block-wise query × train products in NumPy or in torch on a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infscope.attribution import EKFAC, GradientSimilarity, InfluenceFunction
from infscope.errors import InputError


@pytest.mark.parametrize("block_size", [4096, 7])
def test_torch_products_equal_numpy_ones(eigen, block_size):
    """The torch path (here on the CPU: the same code runs on a GPU) gives NumPy's scores, for a
    plain dot product and for preconditioned queries, whatever the block size."""
    _, _, _, _, basis, (_, it, iq), (_, et, eq), _ = eigen
    for make, train, query in (
        (lambda: GradientSimilarity(block_size=block_size), it, iq),
        (lambda: InfluenceFunction(block_size=block_size), it, iq),
        (lambda: EKFAC(basis, block_size=block_size), et, eq),
    ):
        reference = make().fit(train).score(query).values
        estimator = make().to("cpu").fit(train)
        assert estimator.describe()["device"] == "cpu"
        np.testing.assert_allclose(estimator.score(query).values, reference, rtol=1e-6, atol=1e-6)


def test_device_errors():
    estimator = GradientSimilarity()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            estimator.to("cuda")
    with pytest.raises(InputError, match="not a torch device"):
        estimator.to("tpu:seven")
    assert estimator.to(None).device is None


def _weights_store(root, gradient, fingerprints, rows=6, dim=4):
    """A store with one checkpoint per ``(id, fingerprint)`` and random features."""
    from infscope.store import FeatureStore, StoreSpec

    spec = StoreSpec(feature_dim=dim, gradient=gradient, projection={"kind": "gaussian"})
    store = FeatureStore.create(root, [f"{root.name}{i}" for i in range(rows)], spec)
    rng = np.random.default_rng(len(root.name))
    for checkpoint, fingerprint in fingerprints:
        store.add_checkpoint(checkpoint, learning_rate=0.1, fingerprint=fingerprint)
        store.write_shard(checkpoint, 0, rng.standard_normal((rows, dim)))
    return store


def test_queries_from_other_weights_are_refused_unless_allowed(tmp_path):
    from infscope.attribution import TracIn
    from infscope.errors import ProvenanceError

    train = _weights_store(tmp_path / "t", "loss", [("a", "w-a"), ("b", "w-b")])
    same = _weights_store(tmp_path / "q", "measurement", [("a", "w-a"), ("b", "w-b")])
    other = _weights_store(tmp_path / "x", "measurement", [("a", "w-a"), ("b", "w-other")])
    estimator = TracIn().fit(train)
    estimator.score(same)
    with pytest.raises(ProvenanceError, match=r"checkpoint 'b'.*other model weights"):
        estimator.score(other)
    allowed = estimator.score(other, allow_other_weights=True)
    assert allowed.metadata["allow_other_weights"] is True
    # only the checkpoints that are scored must agree
    assert GradientSimilarity(checkpoints="a").fit(train).score(other).values.shape == (6, 6)
    for estimator in (GradientSimilarity(), InfluenceFunction()):
        with pytest.raises(ProvenanceError):
            estimator.fit(train).score(other)


def test_a_trajectory_of_identical_weights_is_refused(tmp_path):
    from infscope.attribution import TracIn
    from infscope.errors import ProvenanceError

    train = _weights_store(tmp_path / "t", "loss", [("a", "w"), ("b", "w"), ("c", "w2")])
    with pytest.raises(ProvenanceError, match=r"'a', 'b'.*identical model weights"):
        TracIn().fit(train)
    with pytest.raises(ProvenanceError):
        InfluenceFunction(checkpoints="all").fit(train)
    TracIn(checkpoints=["a", "c"]).fit(train)  # distinct weights: fine
    GradientSimilarity(checkpoints="b").fit(train)
