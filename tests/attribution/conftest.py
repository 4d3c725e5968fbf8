"""Fixtures of the attribution tests: small models with identity- and eigen-projected stores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infscope.curvature.kfac import KFACFactors
from infscope.data import ExampleSet
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask

IDENTITY = ProjectionConfig(kind="identity", dim=None)


def stores(root, model, task, train, query, config=IDENTITY, selection=None):
    extractor = GradientExtractor(model, task, config, selection)
    featurize(extractor, train, root / "train", progress=False)
    featurize(extractor, query, root / "query", gradient="measurement", progress=False)
    return extractor, FeatureStore.open(root / "train"), FeatureStore.open(root / "query")


def split_examples(x, y, n):
    pairs = [(x[i], y[i]) for i in range(len(y))]
    return ExampleSet(pairs[:n], tuple(map(str, range(n)))), ExampleSet(
        pairs[n:], tuple(f"q{i}" for i in range(len(y) - n))
    )


def trained_mlp(n: int, n_query: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 6-12-3 tanh MLP trained for 30 Adam steps on the first ``n`` of ``n + n_query`` points
    of a noisy linear 3-class problem (seed 0)."""
    torch.manual_seed(0)
    x = torch.randn(n + n_query, 6)
    y = (x @ torch.randn(6, 3) + 0.5 * torch.randn(n + n_query, 3)).argmax(1)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:n]), y[:n]).backward()
        optimizer.step()
    return model, x, y


def later_state(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> dict:
    """The weights after 20 more SGD steps on the first ``n`` points (a later checkpoint); the
    model itself is not changed."""
    import copy

    late = copy.deepcopy(model)
    optimizer = torch.optim.SGD(late.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(late(x[:n]), y[:n]).backward()
        optimizer.step()
    return late.state_dict()


@pytest.fixture(scope="module")
def eigen(tmp_path_factory):
    """The MLP's full-rank eigenbasis and eigen-projected train/query stores."""
    from infscope.curvature.basis_fit import fit_kronecker_basis

    n = 120
    model, x, y = trained_mlp(n, 10)
    model.eval()
    train, query = split_examples(x, y, n)
    root = tmp_path_factory.mktemp("eigen")
    task = ClassificationTask()
    identity = stores(root / "identity", model, task, train, query)
    basis = fit_kronecker_basis(identity[0], train, progress=False)
    config = ProjectionConfig(kind="eigen", basis=basis)
    extractor, train_store, query_store = stores(root / "eigen", model, task, train, query, config)
    return model, x, y, n, basis, identity, (extractor, train_store, query_store), root


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A 6-12-3 tanh MLP trained for 30 Adam steps on 60 examples (identity-projected stores)."""
    n = 60
    model, x, y = trained_mlp(n, 10)
    train, query = split_examples(x, y, n)
    root = tmp_path_factory.mktemp("mlp")
    extractor, train_store, query_store = stores(root, model, ClassificationTask(), train, query)
    factors = KFACFactors.fit(extractor, train, train_store, progress=False)
    return extractor, train, train_store, query_store, factors
