"""TRAK: the ensemble formula with re-weighting, and the projected estimate approaching the
unprojected limit as k grows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.attribution.influence import TRAK
from infscope.data import ExampleSet
from infscope.errors import StoreMismatchError
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask


def _data(n=80, n_query=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_query, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    pairs = [(x[i], y[i]) for i in range(len(y))]
    return ExampleSet(pairs[:n], tuple(map(str, range(n)))), ExampleSet(
        pairs[n:], tuple(f"q{i}" for i in range(n_query))
    )


def _ensemble(tmp_path, config, n_models=2, name=""):
    """Two independently initialised and trained models: TRAK's ensemble."""
    train, query = _data()
    task = ClassificationTask("margin")
    for seed in range(n_models):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
        x = torch.stack([e[0] for e in train])
        y = torch.stack([e[1] for e in train])
        for _ in range(100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        extractor = GradientExtractor(model, task, config)
        featurize(
            extractor,
            train,
            tmp_path / f"train{name}",
            f"model-{seed}",
            gradient="measurement",
            progress=False,
        )
        featurize(
            extractor,
            query,
            tmp_path / f"query{name}",
            f"model-{seed}",
            gradient="measurement",
            progress=False,
        )
    return FeatureStore.open(tmp_path / f"train{name}"), FeatureStore.open(
        tmp_path / f"query{name}"
    )


def test_trak_formula_with_ensemble_and_reweighting(tmp_path):
    train, query = _ensemble(tmp_path, ProjectionConfig(kind="identity", dim=None))
    damping = 0.01
    estimator = TRAK(damping=damping).fit(train)
    scores = estimator.score(query).values
    assert estimator.describe()["reweight"] is True
    kernel_part, q_weights = 0.0, 0.0
    for checkpoint in ("model-0", "model-1"):
        phi, psi = (
            train.features(checkpoint).astype(np.float64),
            query.features(checkpoint).astype(np.float64),
        )
        gram = phi.T @ phi
        lam = damping * np.trace(gram / len(phi)) / min(len(phi), gram.shape[0])
        kernel_part = (
            kernel_part
            + psi @ np.linalg.solve(gram + len(phi) * lam * np.eye(len(gram)), phi.T) / 2
        )
        margin = -train.losses(checkpoint)  # stored measurement is the negative margin
        q_weights = q_weights + (1 - 1 / (1 + np.exp(-margin))) / 2
    expected = kernel_part * q_weights
    # scores are float32 products (summed in float64): agreement to ~1e-6 of the largest score
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * abs(expected).max())


def test_large_projection_approaches_unprojected_trak(tmp_path):
    """Gradient dimension is 6*16+16+16*3+3 = 163; a Gaussian projection to k = 150 keeps most
    of the kernel; correlation with the unprojected TRAK scores rises with k."""
    train, query = _ensemble(tmp_path, ProjectionConfig(kind="identity", dim=None))
    reference = TRAK(damping=0.01).fit(train).score(query).values.ravel()
    correlations = []
    for k in (20, 150):
        t, q = _ensemble(tmp_path, ProjectionConfig(kind="gaussian", dim=k, seed=3), name=f"-{k}")
        projected = TRAK(damping=0.01).fit(t).score(q).values.ravel()
        correlations.append(np.corrcoef(projected, reference)[0, 1])
    # measured: 0.40 at k=20, 0.93 at k=150
    assert correlations[1] > 0.9 and correlations[1] > correlations[0], correlations


def test_trak_needs_margin_gradients(tmp_path):
    train, _ = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    featurize(
        GradientExtractor(model, ClassificationTask(), ProjectionConfig(kind="identity", dim=None)),
        train,
        tmp_path / "loss",
        progress=False,
    )
    with pytest.raises(StoreMismatchError, match="measurement"):
        TRAK().fit(FeatureStore.open(tmp_path / "loss"))
    featurize(
        GradientExtractor(model, ClassificationTask(), ProjectionConfig(kind="identity", dim=None)),
        train,
        tmp_path / "m",
        gradient="measurement",
        progress=False,
    )
    with pytest.raises(StoreMismatchError, match="margin"):
        TRAK().fit(FeatureStore.open(tmp_path / "m"))


def test_trak_without_reweighting_runs_on_any_measurement(tmp_path):
    train, query = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    extractor = GradientExtractor(
        model, ClassificationTask(), ProjectionConfig(kind="identity", dim=None)
    )
    featurize(extractor, train, tmp_path / "t", gradient="measurement", progress=False)
    featurize(extractor, query, tmp_path / "q", gradient="measurement", progress=False)
    t, q = FeatureStore.open(tmp_path / "t"), FeatureStore.open(tmp_path / "q")
    scores = TRAK(reweight=False).fit(t).score(q).values
    phi, psi = t.features().astype(np.float64), q.features().astype(np.float64)
    gram = phi.T @ phi
    lam = 1.0 * np.trace(gram) / len(phi) / min(len(phi), len(gram))  # the default damping
    expected = psi @ np.linalg.solve(gram + len(phi) * lam * np.eye(len(gram)), phi.T)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-8)
