"""Projections: Kronecker equals the explicit Kronecker matrix, JL kinds preserve inner products,
everything is seeded and deterministic, and bad configurations fail clearly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from infscope.errors import InputError
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.tasks import ClassificationTask, HFSequenceClassificationTask
from tests.conftest import tiny_bert


def _mlp_and_batch(n: int = 24):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 96), nn.LayerNorm(96), nn.Tanh(), nn.Linear(96, 5))
    x, y = torch.randn(n, 40), torch.randint(0, 5, (n,))
    return model, ClassificationTask(), (x, y)


ALL = ModuleSelection(types=("Linear", "Conv1D", "Conv2d", "Embedding", "LayerNorm"))


def _full(model, task, batch, selection=ALL):
    extractor = GradientExtractor(
        model, task, ProjectionConfig(kind="identity", dim=None), selection
    )
    return extractor, extractor.features(batch)


def test_kronecker_equals_explicit_kronecker_matrix(tokenizer, text_examples):
    """Per module, features == (P_out ⊗ P_in) vec(M) with M materialised (Linear, Embedding,
    LayerNorm's dense block) on a tiny BERT, and for a Conv2d."""
    model = tiny_bert(tokenizer.vocab_size)
    task = HFSequenceClassificationTask(tokenizer, max_length=32)
    selection = ModuleSelection(
        include=("bert.embeddings.word_embeddings", "bert.encoder.layer.0.*", "classifier"),
        types=ALL.types,
    )
    batch = task.collate(text_examples)
    _check_kronecker(
        model, task, batch, selection, ProjectionConfig(kind="kronecker", dim=600, seed=3)
    )
    _check_kronecker(
        model, task, batch, selection, ProjectionConfig(kind="kronecker", factor_dims=(5, 3))
    )

    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 16, 4)
    )
    images = (torch.randn(4, 2, 4, 4), torch.randint(0, 4, (4,)))
    _check_kronecker(
        cnn, ClassificationTask(), images, ALL, ProjectionConfig(kind="kronecker", dim=40)
    )


def _check_kronecker(model, task, batch, selection, config):
    extractor, full = _full(model, task, batch, selection)
    projected = GradientExtractor(model, task, config, selection)
    features = projected.features(batch)
    assert features.shape[1] == projected.feature_dim
    expected, offset = [], 0
    for index, module in enumerate(projected.modules):
        block = full[:, offset : offset + module.num_params].double()
        offset += module.num_params
        p_in, p_out = projected.projector.matrices(index, torch.device("cpu"))
        expected.append(block @ torch.kron(p_out.double(), p_in.double()).T)
    expected = torch.cat(expected, dim=1)
    torch.testing.assert_close(features.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kind,extra",
    [("gaussian", {}), ("rademacher", {}), ("sjlt", {}), ("sjlt", {"sjlt_nonzeros": 4})],
)
def test_projections_preserve_inner_products(kind, extra):
    """Johnson-Lindenstrauss: <Pg_i, Pg_j> ≈ <g_i, g_j>, error within a few 1/sqrt(k) of |g_i||g_j|."""
    model, task, batch = _mlp_and_batch()
    _, full = _full(model, task, batch)
    k = 1024
    features = GradientExtractor(
        model, task, ProjectionConfig(kind=kind, dim=k, seed=7, **extra), ALL
    ).features(batch)
    norms = full.norm(dim=1)
    error = (features @ features.T - full @ full.T) / torch.outer(norms, norms)
    bound = 5 / math.sqrt(features.shape[1])
    assert error.abs().max().item() < bound, (error.abs().max().item(), bound)
    # and not trivially: the relative error is not zero
    assert error.abs().max().item() > 1e-4


def test_kronecker_is_unbiased_with_factor_sized_error():
    """A Kronecker block multiplies two independent JL estimates of sizes k_in and k_out, so its
    error scales like sqrt(1/k_in + 1/k_out), not 1/sqrt(k); averaged over seeds it vanishes."""
    model, task, batch = _mlp_and_batch()
    _, full = _full(model, task, batch)
    exact = full @ full.T
    norms = full.norm(dim=1)
    estimates = []
    for seed in range(32):
        extractor = GradientExtractor(
            model, task, ProjectionConfig(kind="kronecker", dim=1024, seed=seed), ALL
        )
        features = extractor.features(batch)
        estimates.append(features @ features.T)
    blocks = [b for b in extractor.projector.blocks if b[1] > 1]
    scale = math.sqrt(1 / min(b[0] for b in blocks) + 1 / min(b[1] for b in blocks))
    single = ((estimates[0] - exact) / torch.outer(norms, norms)).abs().max().item()
    mean = ((torch.stack(estimates).mean(0) - exact) / torch.outer(norms, norms)).abs().max().item()
    assert single < 5 * scale
    assert mean < 5 * scale / math.sqrt(32)
    assert mean < single / 2


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "sjlt", "kronecker"])
def test_seeded_deterministic_and_batch_independent(kind):
    model, task, (x, y) = _mlp_and_batch()
    config = ProjectionConfig(kind=kind, dim=256, seed=11, chunk_elements=4096, cache_bytes=0)
    first = GradientExtractor(model, task, config, ALL).features((x, y))
    again = GradientExtractor(model, task, config, ALL).features((x, y))
    assert torch.equal(first, again)
    halves = torch.cat(
        [
            GradientExtractor(model, task, config, ALL).features((x[i : i + 5], y[i : i + 5]))
            for i in range(0, len(y), 5)
        ]
    )
    torch.testing.assert_close(first, halves, rtol=1e-5, atol=1e-6)
    other_seed = GradientExtractor(
        model, task, ProjectionConfig(kind=kind, dim=256, seed=12), ALL
    ).features((x, y))
    assert not torch.allclose(first, other_seed)
    cached = GradientExtractor(
        model, task, ProjectionConfig(kind=kind, dim=256, seed=11, chunk_elements=4096), ALL
    ).features((x, y))
    torch.testing.assert_close(first, cached, rtol=1e-5, atol=1e-6)


def test_default_kronecker_budget_is_capped_on_a_small_model():
    """The default k = 4096 on a 51-parameter model: every module is kept whole
    (blocks capped at the module's size) instead of an error."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    extractor = GradientExtractor(model, ClassificationTask(), ProjectionConfig())
    assert extractor.feature_dim == 6 * 5 + 3 * 7  # both [W | b] blocks at full size
    features = extractor.features((torch.randn(5, 4), torch.randint(0, 3, (5,))))
    assert features.shape == (5, 51) and torch.isfinite(features).all()


def test_bad_configurations():
    model, task, _ = _mlp_and_batch()
    gradient_size = 40 * 96 + 96 + 96 * 5 + 5
    with pytest.raises(InputError, match="larger than the tracked gradient"):
        GradientExtractor(model, task, ProjectionConfig(kind="gaussian", dim=gradient_size + 1))
    with pytest.raises(InputError, match="unknown projection kind"):
        ProjectionConfig(kind="fourier")
    with pytest.raises(InputError, match="positive dim"):
        ProjectionConfig(kind="sjlt", dim=0)
    with pytest.raises(InputError, match="divide"):
        ProjectionConfig(kind="sjlt", dim=10, sjlt_nonzeros=3)
    with pytest.raises(InputError, match="identity projection takes no dim"):
        ProjectionConfig(kind="identity", dim=5)
    with pytest.raises(InputError, match="matches no"):
        GradientExtractor(model, task, modules=ModuleSelection(include=("decoder.*",)))
    with pytest.raises(InputError, match="unknown module types"):
        GradientExtractor(model, task, modules=ModuleSelection(types=("RMSNorm",)))


def test_config_round_trips_through_json():
    config = ProjectionConfig(kind="kronecker", factor_dims=(8, 4), seed=5)
    assert ProjectionConfig.from_json(config.to_json()) == config
