"""The front door: ``import infscope`` is light, and the README's Python flows — Analysis.extract
then infscope.score, and the eigen projection's bases per checkpoint then EK-FAC — give exactly
what the lower-level calls they stand for give."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from torch import nn

import infscope
from infscope.attribution import EKFAC, TracIn
from infscope.curvature import KFACFactors, fit_kronecker_basis
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    pairs = [(x[i], y[i]) for i in range(30)]
    train = infscope.ExampleSet(pairs[:24], tuple(f"t{i}" for i in range(24)))
    tests = infscope.ExampleSet(pairs[24:], tuple(f"q{i}" for i in range(6)))
    later = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    early = {k: v.clone() for k, v in model.state_dict().items()}
    return model, train, tests, [("early", early), ("late", later)]


def test_import_infscope_loads_nothing_heavy():
    code = "import sys, infscope; print(any(m in sys.modules for m in ('torch', 'numpy')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_extract_then_score_is_featurize_then_tracin(tmp_path):
    model, train, tests, checkpoints = _problem()
    task = ClassificationTask()
    analysis = infscope.Analysis(model, task, projection="kronecker", dim=16)
    manual = GradientExtractor(model, task, ProjectionConfig("kronecker", 16))
    for name, state in checkpoints:
        model.load_state_dict(state)
        analysis.extract(train, tmp_path / "train", name, learning_rate=0.1, progress=False)
        analysis.extract(tests, tmp_path / "test", name, gradient="measurement", progress=False)
        featurize(manual, train, tmp_path / "mt", name, learning_rate=0.1, progress=False)
        featurize(manual, tests, tmp_path / "mq", name, gradient="measurement", progress=False)
    scores = infscope.score(tmp_path / "train", tmp_path / "test", method="tracin")
    expected = TracIn().fit(FeatureStore.open(tmp_path / "mt"))
    np.testing.assert_array_equal(
        scores.values, expected.score(FeatureStore.open(tmp_path / "mq")).values
    )
    suspects = infscope.score(tmp_path / "train", method="tracin")
    np.testing.assert_array_equal(suspects.values, expected.self_influence().values)
    top = infscope.score(tmp_path / "train", tmp_path / "test", top=3)
    np.testing.assert_array_equal(top.arrays["helpful"], scores.top(3)[0])


def test_bases_per_checkpoint_then_ekfac_is_the_manual_trajectory(tmp_path):
    model, train, tests, checkpoints = _problem()
    task = ClassificationTask()
    analysis = infscope.Analysis(model, task, projection="eigen", dim=20)
    identity = GradientExtractor(model, task, ProjectionConfig("identity", None))
    bases = []
    for _, state in checkpoints:
        model.load_state_dict(state)
        analysis.fit_basis(train, progress=False)
        bases.append(fit_kronecker_basis(identity, train, progress=False))
    assert [b.digest for b in analysis.bases] == [b.digest for b in bases]
    eigen = GradientExtractor(model, task, ProjectionConfig("eigen", 20, basis=bases))
    for name, state in checkpoints:
        model.load_state_dict(state)
        analysis.extract(train, tmp_path / "train", name, progress=False)
        analysis.extract(tests, tmp_path / "test", name, gradient="measurement", progress=False)
        featurize(eigen, train, tmp_path / "mt", name, progress=False)
        featurize(eigen, tests, tmp_path / "mq", name, gradient="measurement", progress=False)
    ours = infscope.score(tmp_path / "train", tmp_path / "test", method="ekfac",
                          factors=analysis.bases)  # fmt: skip
    manual = EKFAC(bases).fit(FeatureStore.open(tmp_path / "mt"))
    np.testing.assert_array_equal(
        ours.values, manual.score(FeatureStore.open(tmp_path / "mq")).values
    )


def test_factors_fit_in_the_extraction_pass_equal_a_pass_of_their_own(tmp_path):
    model, train, _, _ = _problem()
    task = ClassificationTask()
    analysis = infscope.Analysis(model, task, projection="kronecker", dim=16)
    store = analysis.extract(
        train, tmp_path / "train", fit_factors=tmp_path / "f.safetensors", progress=False
    )
    saved = KFACFactors.load(tmp_path / "f.safetensors")
    alone = KFACFactors.fit(analysis.extractor, train, store, progress=False)
    for a, b in zip(saved.blocks, alone.blocks):
        np.testing.assert_allclose(a.corrected, b.corrected, rtol=1e-6)
        assert a.tokens == b.tokens
