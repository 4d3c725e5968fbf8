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
