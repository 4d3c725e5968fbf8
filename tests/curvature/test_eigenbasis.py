"""Kronecker eigenbases: exact factors equal the covariances of the captured activations and
output gradients, traces equal the mean squared per-example gradient norm, a sketched side
recovers a low-rank factor (one that keeps too little is fit again), the budget goes where the
curvature mass is, eigen features are the rotated gradient matrices, persistence is validated,
and sampled labels are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.curvature import basis_fit, eigenbasis
from infscope.curvature.basis_fit import fit_kronecker_basis
from infscope.curvature.covariance import accumulate
from infscope.curvature.eigenbasis import KroneckerBasis
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.gradients.passes import per_example_features
from infscope.tasks import ClassificationTask, HFCausalLMTask
from tests.conftest import tiny_gpt2

IDENTITY = ProjectionConfig(kind="identity", dim=None)


def _mlp_data(n=80, width=12, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 6)
    y = (x @ torch.randn(6, 3)).argmax(1)
    model = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 3)).eval()
    return model, ExampleSet([(x[i], y[i]) for i in range(n)], tuple(map(str, range(n))))


def _matrix(values, vectors):
    return (vectors * values) @ vectors.T


def test_exact_factors_traces_and_eigen_features():
    model, data = _mlp_data()
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    basis = fit_kronecker_basis(extractor, data, batch_size=7, progress=False)
    reference = accumulate(extractor, data, batch_size=32, progress=False, features=True)
    full = per_example_features(extractor, list(data)).double().numpy()
    start = 0
    for index, module in enumerate(basis.modules):
        for side, values, vectors in (
            ("inputs", module.a_values, module.a_vectors),
            ("outputs", module.s_values, module.s_vectors),
        ):  # float32 products summed in float64
            expected = reference.covariance(index, side)
            atol = 1e-6 * np.abs(expected).max()
            np.testing.assert_allclose(_matrix(values, vectors), expected, atol=atol)
        assert np.all(np.diff(module.s_values) <= 1e-15)  # descending
        block = full[:, start : start + module.rows * module.cols]
        assert module.trace == pytest.approx((block**2).sum(1).mean(), rel=1e-5)
        assert module.s_total == pytest.approx(module.s_values.sum())
        start += module.rows * module.cols

    # eigen features are Q_Sᵀ M Q_A of the full gradient matrices, at any budget
    for dim in (None, 30):
        eigen = GradientExtractor(
            model, ClassificationTask(), ProjectionConfig(kind="eigen", dim=dim, basis=basis)
        )
        features = per_example_features(eigen, list(data)).double().numpy()
        cut, start, offset = basis.truncate(dim), 0, 0
        for module in cut.modules:
            m = full[:, start : start + module.rows * module.cols].reshape(
                -1, module.rows, module.cols
            )
            rotated = module.s_vectors.T @ m @ module.a_vectors
            np.testing.assert_allclose(
                features[:, offset : offset + module.dim], rotated.reshape(len(m), -1), atol=1e-5
            )
            start += module.rows * module.cols
            offset += module.dim
        assert features.shape[1] == cut.feature_dim <= (dim or basis.feature_dim)


def test_sketched_side_recovers_a_low_rank_factor():
    """Inputs in a 4-dimensional subspace of 40: A has rank 5 (with the bias column), so a
    Nyström sketch of 8 columns recovers its eigenpairs."""
    torch.manual_seed(1)
    n = 60
    x = torch.randn(n, 4) @ torch.randn(4, 40)
    y = torch.randint(0, 3, (n,))
    model = nn.Sequential(nn.Linear(40, 3)).eval()
    data = ExampleSet([(x[i], y[i]) for i in range(n)], tuple(map(str, range(n))))
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    exact = fit_kronecker_basis(extractor, data, progress=False).modules[0]
    sketched_basis = fit_kronecker_basis(
        extractor, data, max_exact_dim=16, sketch_rank=8, progress=False
    )
    sketched = sketched_basis.modules[0]
    assert sketched.a_vectors.shape == (41, 8) and exact.a_vectors.shape == (41, 41)
    np.testing.assert_allclose(sketched.a_values[:5], exact.a_values[:5], rtol=1e-3)
    np.testing.assert_allclose(
        _matrix(sketched.a_values[:5], sketched.a_vectors[:, :5]),
        _matrix(exact.a_values[:5], exact.a_vectors[:, :5]),
        atol=1e-3 * exact.a_values[0],
    )
    assert sketched.a_total == pytest.approx(exact.a_total)
    np.testing.assert_allclose(sketched.s_values, exact.s_values)  # 3 outputs: exact both times
    assert "refit" not in sketched_basis.settings  # the sketch holds the whole (rank-5) side


def test_a_sketch_that_keeps_too_little_is_refit():
    """Inputs spread over all 40 directions (a decaying spectrum): a 4-column sketch keeps too
    little of the effective dimension, so the side is fit again — at a rank past half the side,
    exactly — and equals the exact fit; without the refit it stays a 4-column sketch."""
    torch.manual_seed(2)
    n = 60
    x = torch.randn(n, 40) * torch.logspace(0, -1, 40)
    y = torch.randint(0, 3, (n,))
    model = nn.Sequential(nn.Linear(40, 3)).eval()
    data = ExampleSet([(x[i], y[i]) for i in range(n)], tuple(map(str, range(n))))
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    exact = fit_kronecker_basis(extractor, data, progress=False).modules[0]
    refit = fit_kronecker_basis(extractor, data, max_exact_dim=16, sketch_rank=4, progress=False)
    assert refit.settings["refit"] == {"0": {"in": "exact"}}
    np.testing.assert_allclose(refit.modules[0].a_values, exact.a_values, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(refit.modules[0].s_values, exact.s_values)
    assert refit.modules[0].trace == pytest.approx(exact.trace)
    kept = fit_kronecker_basis(
        extractor, data, max_exact_dim=16, sketch_rank=4, progress=False, refit_sketches=False
    )
    assert kept.modules[0].a_vectors.shape == (41, 4) and "refit" not in kept.settings


def test_budget_follows_curvature_mass():
    model, data = _mlp_data(width=16)
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    basis = fit_kronecker_basis(extractor, data, progress=False)
    total = basis.feature_dim
    previous = 0.0
    for budget in (2, 10, 40, 100, total):
        ranks = basis.allocate(budget)
        used = sum(r_out * r_in for r_out, r_in in ranks)
        assert used <= budget
        cut = basis.truncate(budget)
        assert cut.feature_dim == used or budget == total
        mass = sum(
            m.trace * m.captured("out", m.out_rank) * m.captured("in", m.in_rank)
            for m in cut.modules
        )
        assert mass >= previous - 1e-12  # more budget never captures less
        previous = mass
    assert basis.truncate(total) is basis and basis.truncate(None) is basis
    # an even split would give both modules the same share; this one follows the mass: the
    # module with the larger Fisher trace gets the larger block at a small budget
    big, small = sorted(basis.modules, key=lambda m: -m.trace)
    ranks = dict(zip(basis.module_names, basis.allocate(20)))
    assert ranks[big.name][0] * ranks[big.name][1] >= ranks[small.name][0] * ranks[small.name][1]
    with pytest.raises(InputError, match="below"):
        basis.allocate(1)
    with pytest.raises(InputError, match="positive int"):
        basis.allocate(0)


def test_save_load_digest_and_validation(tmp_path):
    model, data = _mlp_data()
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    basis = fit_kronecker_basis(extractor, data, fisher="true", sample_seed=3, progress=False)
    path = basis.save(tmp_path / "basis.safetensors")
    loaded = KroneckerBasis.load(path)
    assert loaded.digest == basis.digest and loaded.fisher == "true"
    for a, b in zip(loaded.modules, basis.modules):
        np.testing.assert_array_equal(a.s_vectors, b.s_vectors)
    assert basis.truncate(20).digest != basis.digest
    # stores record the digest, not the path
    described = GradientExtractor(
        model, ClassificationTask(), ProjectionConfig(kind="eigen", basis=loaded)
    ).describe()["projection"]
    assert described["basis"] == basis.digest and described["fisher"] == "true"
    with pytest.raises(InputError, match=r"KroneckerBasis.load\(path\)"):
        GradientExtractor(model, ClassificationTask(), ProjectionConfig(kind="eigen", basis=path))

    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(InputError, match="not a readable"):
        KroneckerBasis.load(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="no eigenbasis"):
        KroneckerBasis.load(tmp_path / "missing.safetensors")
    other, _ = _mlp_data(width=10)
    with pytest.raises(InputError, match="other modules"):
        GradientExtractor(other, ClassificationTask(), ProjectionConfig(kind="eigen", basis=loaded))
    with pytest.raises(InputError, match="only it"):
        ProjectionConfig(kind="kronecker", dim=8, basis=path)
    with pytest.raises(InputError, match="only it"):
        ProjectionConfig(kind="eigen")


def test_wide_sides_are_eigendecomposed_in_float32(monkeypatch, tmp_path):
    """Above ``FLOAT32_EIGH_DIM`` a side's eigenvectors are float32 (what the projection applies)
    and still reproduce the covariance; the file keeps them float32 and the digest is unchanged."""
    model, data = _mlp_data(width=12)
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    reference = fit_kronecker_basis(extractor, data, progress=False)
    monkeypatch.setattr(basis_fit, "FLOAT32_EIGH_DIM", 10)  # the 12-wide sides only
    basis = fit_kronecker_basis(extractor, data, progress=False)
    for fast, exact in zip(basis.modules, reference.modules):
        for side, values, vectors, ref_values, ref_vectors in (
            ("out", fast.s_values, fast.s_vectors, exact.s_values, exact.s_vectors),
            ("in", fast.a_values, fast.a_vectors, exact.a_values, exact.a_vectors),
        ):
            wide = len(values) > 10
            assert vectors.dtype == (np.float32 if wide else np.float64), (fast.name, side)
            assert values.dtype == np.float64 and np.all(np.diff(values) <= 0)
            expected = _matrix(ref_values, ref_vectors)
            np.testing.assert_allclose(
                _matrix(values, vectors.astype(np.float64)),
                expected,
                atol=1e-5 * np.abs(expected).max(),
            )
            gram = vectors.astype(np.float64).T @ vectors
            np.testing.assert_allclose(gram, np.eye(len(values)), atol=1e-5)
    assert any(m.s_vectors.dtype == np.float32 for m in basis.modules)
    loaded = KroneckerBasis.load(basis.save(tmp_path / "basis.safetensors"))
    assert loaded.digest == basis.digest
    for a, b in zip(loaded.modules, basis.modules):
        assert a.s_vectors.dtype == b.s_vectors.dtype
        np.testing.assert_array_equal(a.s_vectors, b.s_vectors)
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(tmp_path / "basis.safetensors"), framework="numpy") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(tmp_path / "basis.safetensors"))
    tensors["0.s_vectors"] = tensors["0.s_vectors"].astype(np.float16)
    save_file(tensors, str(tmp_path / "half.safetensors"), metadata=metadata)
    with pytest.raises(InputError, match="float16, not float32/64"):
        KroneckerBasis.load(tmp_path / "half.safetensors")


def test_a_float32_eigh_that_fails_to_converge_falls_back_to_float64(monkeypatch):
    model, data = _mlp_data(width=12)
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    reference = fit_kronecker_basis(extractor, data, progress=False)
    monkeypatch.setattr(basis_fit, "FLOAT32_EIGH_DIM", 10)
    eigh = torch.linalg.eigh

    def float32_fails(matrix):
        if matrix.dtype == torch.float32:
            raise torch.linalg.LinAlgError("the algorithm failed to converge")
        return eigh(matrix)

    monkeypatch.setattr(torch.linalg, "eigh", float32_fails)
    basis = fit_kronecker_basis(extractor, data, progress=False)
    wide = [m for m in basis.modules if m.rows > 10]
    assert wide and all(m.s_vectors.dtype == np.float64 for m in wide)
    for fast, exact in zip(wide, (m for m in reference.modules if m.rows > 10)):
        expected = _matrix(exact.s_values, exact.s_vectors)
        np.testing.assert_allclose(
            _matrix(fast.s_values, fast.s_vectors), expected, atol=1e-6 * np.abs(expected).max()
        )


def test_auto_budget_is_chosen_once_per_basis_and_rule(monkeypatch):
    model, data = _mlp_data(width=16)
    basis = fit_kronecker_basis(
        GradientExtractor(model, ClassificationTask(), IDENTITY), data, progress=False
    )
    calls = []
    chosen = eigenbasis.choose_budget
    monkeypatch.setattr(
        eigenbasis, "choose_budget", lambda *args: calls.append(args[1:]) or chosen(*args)
    )
    first, again = basis.truncate("auto"), basis.truncate("auto")
    assert [m.dim for m in first.modules] == [m.dim for m in again.modules]
    assert first.settings["budget"] == again.settings["budget"] and len(calls) == 1
    basis.truncate("auto", share=0.5)
    assert calls == [(None, None), (0.5, None)]
    for module in basis.modules:  # the cumulative shares the greedy layout reads
        for rank in range(module.out_rank + 1):
            direct = module.s_values[:rank].sum() / module.s_total
            assert module.captured("out", rank) == pytest.approx(direct, rel=1e-12, abs=1e-15)


def test_true_fisher_is_seeded_and_differs_from_the_empirical_one():
    model, data = _mlp_data()
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    runs = [
        fit_kronecker_basis(extractor, data, fisher="true", sample_seed=s, progress=False)
        for s in (0, 0, 1)
    ]
    empirical = fit_kronecker_basis(extractor, data, progress=False)
    assert runs[0].digest == runs[1].digest != runs[2].digest
    assert runs[0].modules[1].trace != pytest.approx(empirical.modules[1].trace, rel=1e-3)
    # the input factor does not depend on the labels
    np.testing.assert_allclose(runs[0].modules[0].a_values, empirical.modules[0].a_values)
    with pytest.raises(InputError, match="fisher must be"):
        fit_kronecker_basis(extractor, data, fisher="sampled", progress=False)


def test_sequence_model_traces_and_token_counts(tokenizer):
    """Tiny GPT-2: the T × T Gram form of ‖M_i‖² equals the norm of the full gradient, and only
    positions with a non-zero output gradient enter the factors."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    records = [
        {"prompt": " ".join(rng.choice(words, 4)), "completion": " ".join(rng.choice(words, 3))}
        for _ in range(12)
    ]
    data = ExampleSet(records, tuple(map(str, range(12))))
    model = tiny_gpt2(tokenizer.vocab_size).eval()
    task = HFCausalLMTask(tokenizer, max_length=16)
    selection = ModuleSelection(types=("Conv1D", "LayerNorm"))
    extractor = GradientExtractor(model, task, IDENTITY, selection)
    basis = fit_kronecker_basis(extractor, data, batch_size=5, progress=False)
    full = per_example_features(extractor, list(data), batch_size=5).double().numpy()
    start = 0
    for module in basis.modules:
        block = full[:, start : start + module.rows * module.cols]
        assert module.trace == pytest.approx((block**2).sum(1).mean(), rel=1e-4)
        start += module.rows * module.cols
    labels = task.collate(list(data))["labels"]
    last = [m for m in basis.modules if m.name == "transformer.h.1.mlp.c_proj"][0]
    assert last.tokens == int((labels != -100).sum())
    assert not [m for m in basis.modules if m.name == "transformer.h.0.ln_1"][0].kronecker


def test_a_basis_over_repeated_weights_equals_the_single_one():
    model, data = _mlp_data()
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    single = fit_kronecker_basis(extractor, data, progress=False)
    twice = fit_kronecker_basis(extractor, data, weights=[state, state], progress=False)
    for a, b in zip(single.modules, twice.modules):
        np.testing.assert_allclose(
            _matrix(a.s_values, a.s_vectors), _matrix(b.s_values, b.s_vectors), atol=1e-12
        )
        np.testing.assert_allclose(
            _matrix(a.a_values, a.a_vectors), _matrix(b.a_values, b.a_vectors), atol=1e-10
        )
        assert a.trace == pytest.approx(b.trace) and a.tokens == b.tokens
    assert twice.fingerprints == single.fingerprints * 2


def test_sequence_features_in_either_contraction_order(tokenizer):
    """Tiny GPT-2: eigen features equal Q_Sᵀ M Q_A of the full gradients both for square blocks
    and for blocks with one input direction and every output one (which sum over positions
    before the output projection)."""
    rng = np.random.default_rng(1)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    records = [
        {"prompt": " ".join(rng.choice(words, 5)), "completion": " ".join(rng.choice(words, 4))}
        for _ in range(6)
    ]
    model = tiny_gpt2(tokenizer.vocab_size).eval()
    task = HFCausalLMTask(tokenizer, max_length=16)
    selection = ModuleSelection(types=("Conv1D",))
    identity = GradientExtractor(model, task, IDENTITY, selection)
    data = ExampleSet(records, tuple(map(str, range(6))))
    basis = fit_kronecker_basis(identity, data, progress=False)
    full = per_example_features(identity, records).double().numpy()
    for ranks in (
        [(min(4, m.out_rank), min(4, m.in_rank)) for m in basis.modules],
        [(m.out_rank, 1) for m in basis.modules],
    ):
        cut = basis.truncate_to(ranks)
        eigen = GradientExtractor(model, task, ProjectionConfig("eigen", basis=cut), selection)
        features = per_example_features(eigen, records).double().numpy()
        start = offset = 0
        for module in cut.modules:
            m = full[:, start : start + module.rows * module.cols]
            m = m.reshape(-1, module.rows, module.cols)
            expected = (module.s_vectors.T @ m @ module.a_vectors).reshape(len(m), -1)
            np.testing.assert_allclose(
                features[:, offset : offset + module.dim], expected, rtol=1e-4, atol=1e-6
            )
            start += module.rows * module.cols
            offset += module.dim
