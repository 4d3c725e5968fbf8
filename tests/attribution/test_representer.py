"""Representer points: at a stationary point of the L2-regularised final layer the representer
values of all training examples sum to the query's logit (the representer theorem)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.attribution.representer import RepresenterPoints
from infscope.data import ExampleSet
from infscope.errors import StoreMismatchError
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask


def test_representer_values_decompose_the_logits(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(60, 5, dtype=torch.float64)
    y = (x[:, 0] - x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    features = nn.Sequential(nn.Linear(5, 8), nn.Tanh()).double().requires_grad_(False)
    head = nn.Linear(8, 3).double()
    model = nn.Sequential(features, head)
    lam = 0.01
    optimizer = torch.optim.LBFGS(
        head.parameters(),
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:50]), y[:50]) + lam * sum(
            (p**2).sum() for p in head.parameters()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    pairs = [(x[i], y[i]) for i in range(60)]
    train = ExampleSet(pairs[:50], tuple(map(str, range(50))))
    query = ExampleSet(pairs[50:], tuple(f"q{i}" for i in range(10)))
    selection = ModuleSelection(include=("1",))
    identity = ProjectionConfig(kind="identity", dim=None)
    featurize(
        GradientExtractor(model, ClassificationTask(), identity, selection),
        train,
        tmp_path / "train",
        progress=False,
    )
    featurize(
        GradientExtractor(model, ClassificationTask("logit"), identity, selection),
        query,
        tmp_path / "query",
        gradient="measurement",
        progress=False,
    )
    scores = (
        RepresenterPoints(lam)
        .fit(FeatureStore.open(tmp_path / "train"))
        .score(FeatureStore.open(tmp_path / "query"))
        .values
    )
    with torch.no_grad():
        logits = model(x[50:]).gather(1, y[50:, None])[:, 0].numpy()
    np.testing.assert_allclose(scores.sum(axis=1), logits, rtol=1e-4, atol=1e-5)

    with pytest.raises(StoreMismatchError, match="'logit' measurement"):
        RepresenterPoints(lam).fit(FeatureStore.open(tmp_path / "train")).score(
            FeatureStore.open(tmp_path / "train")
        )
    two_layers = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    featurize(
        GradientExtractor(two_layers, ClassificationTask(), identity),
        train,
        tmp_path / "all",
        progress=False,
    )
    with pytest.raises(StoreMismatchError, match="final layer only"):
        RepresenterPoints(lam).fit(FeatureStore.open(tmp_path / "all"))
