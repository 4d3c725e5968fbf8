"""K-FAC factors: covariances and corrected eigenvalues that do not depend on the batch size or
on fitting in one or two steps, projected factors equal projected covariances, and the factors
file (round trip, refused mismatches and malformed files), also for an eigen store's factors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from infscope.attribution.kfac import EKFAC
from infscope.curvature.kfac import KFACFactors
from infscope.data import ExampleSet
from infscope.errors import InputError, StoreMismatchError
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask
from tests.attribution.conftest import IDENTITY


def assert_same_factors(ours: KFACFactors, reference: KFACFactors) -> None:
    """Equal covariances (eigendecompositions compared as matrices, so signs do not matter),
    corrected eigenvalues, traces and token counts, module by module.

    The covariances are means of products of float32 activations and output gradients, and a
    float32 forward pass depends on the batch size (BLAS sums in another order: outputs of the
    test MLP move by ~1e-7 relative between batches of 7 and 60). Each entry therefore agrees to
    a few float32 round-offs of the *matrix's* scale, not of its own (small off-diagonal entries
    differ by up to ~1e-5 relative, ~7e-8 of the largest entry): compared at 1e-6 of the largest
    entry. Corrected eigenvalues are second moments of the same stored features in those
    eigenbases, so they inherit that round-off (up to ~2e-8 of the largest seen): compared the
    same way. Traces read only the store: tight."""
    for a, b in zip(ours.blocks, reference.blocks):
        assert a.tokens == b.tokens
        for values, vectors in (("a_values", "a_vectors"), ("s_values", "s_vectors")):
            expected = covariance_matrix(getattr(b, values), getattr(b, vectors))
            np.testing.assert_allclose(
                covariance_matrix(getattr(a, values), getattr(a, vectors)),
                expected,
                rtol=1e-6,
                atol=1e-6 * np.abs(expected).max(),
            )
        np.testing.assert_allclose(
            a.corrected, b.corrected, rtol=1e-6, atol=1e-6 * np.abs(b.corrected).max()
        )
        assert a.trace == pytest.approx(b.trace, rel=1e-12)


def covariance_matrix(values, vectors):
    return (vectors * values) @ vectors.T


def test_projected_factors_are_projected_covariances(tmp_path):
    """Kronecker projection: A_p = P_in A P_inᵀ and S_p = P_out S P_outᵀ with A, S from the
    identity projection of the same model. Embedding inputs are one-hot (A is diagonal, token
    counts) and padding positions (no output gradient) are left out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(9, 5, padding_idx=0), nn.Flatten(), nn.Linear(15, 3))
    ids = torch.randint(1, 9, (20, 3))
    ids[::4, 2] = 0  # padding
    data = ExampleSet(list(zip(ids, torch.randint(0, 3, (20,)))), tuple(map(str, range(20))))
    selection = ModuleSelection(types=("Embedding", "Linear"))
    task = ClassificationTask()
    full = KFACFactors.fit(
        GradientExtractor(model, task, IDENTITY, selection), data, progress=False
    )
    embedding = full._block("0")
    counts = np.bincount(ids[ids != 0].numpy(), minlength=9) / int((ids != 0).sum())
    np.testing.assert_allclose(
        covariance_matrix(embedding.a_values, embedding.a_vectors), np.diag(counts), atol=1e-12
    )
    assert embedding.tokens == int((ids != 0).sum())

    config = ProjectionConfig(kind="kronecker", factor_dims=(4, 3), seed=1)
    projected_extractor = GradientExtractor(model, task, config, selection)
    projected = KFACFactors.fit(projected_extractor, data, batch_size=7, progress=False)
    for index, (ours, theirs) in enumerate(zip(projected.blocks, full.blocks)):
        p_in, p_out = (
            p.double().numpy() for p in projected_extractor.projector.matrices(index, "cpu")
        )
        a, s = (
            covariance_matrix(v, q)
            for v, q in ((theirs.a_values, theirs.a_vectors), (theirs.s_values, theirs.s_vectors))
        )
        np.testing.assert_allclose(
            covariance_matrix(ours.a_values, ours.a_vectors), p_in @ a @ p_in.T, rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            covariance_matrix(ours.s_values, ours.s_vectors), p_out @ s @ p_out.T, rtol=1e-5, atol=1e-9
        )


def test_save_load_round_trip_and_mismatches(mlp, tmp_path):
    extractor, train, train_store, query_store, factors = mlp
    path = factors.save(tmp_path / "factors.safetensors")
    loaded = KFACFactors.load(path)
    assert loaded.metadata() == factors.metadata()
    assert loaded.corrected and loaded.checkpoint == "final"
    for corrected in (True, False):
        ours = EKFAC(factors, correct_eigenvalues=corrected).fit(train_store)
        theirs = EKFAC(loaded, correct_eigenvalues=corrected).fit(train_store)
        np.testing.assert_array_equal(
            ours.score(query_store).values, theirs.score(query_store).values
        )

    # other weights (same architecture and projection): refused at fit and at scoring
    model = copy.deepcopy(extractor.model)
    with torch.no_grad():
        model[0].weight.add_(0.01)
    moved = GradientExtractor(model, extractor.task, IDENTITY)
    featurize(moved, train, tmp_path / "moved", progress=False)
    moved_store = FeatureStore.open(tmp_path / "moved")
    with pytest.raises(StoreMismatchError, match="different weights"):
        EKFAC(loaded).fit(moved_store)
    with pytest.raises(StoreMismatchError, match="different weights"):
        EKFAC(loaded).fit(train_store).score(moved_store)
    # another projection, other modules
    kron = GradientExtractor(extractor.model, extractor.task, ProjectionConfig(dim=40))
    featurize(kron, train, tmp_path / "kron", progress=False)
    with pytest.raises(StoreMismatchError, match="projection"):
        EKFAC(loaded).fit(FeatureStore.open(tmp_path / "kron"))
    last = GradientExtractor(
        extractor.model, extractor.task, IDENTITY, ModuleSelection(include=("2",))
    )
    featurize(last, train, tmp_path / "last", progress=False)
    with pytest.raises(StoreMismatchError, match="modules"):
        loaded.correct_eigenvalues(FeatureStore.open(tmp_path / "last"))

    # not a factors file, or a tampered one
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable safetensors"):
        KFACFactors.load(tmp_path / "junk.safetensors")
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "bare.safetensors"))
    with pytest.raises(InputError, match="not an infscope K-FAC"):
        KFACFactors.load(tmp_path / "bare.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    tensors["0.corrected"] = tensors["0.corrected"][:, :-1].copy()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(InputError, match="shape"):
        KFACFactors.load(tmp_path / "bad.safetensors")


def test_batch_size_block_size_and_two_step_fit_agree(mlp):
    """Factors do not depend on the batch size; scores not on the block size; fitting without
    the store and correcting afterwards gives the same factors as fitting with it."""
    extractor, train, train_store, query_store, factors = mlp
    other = KFACFactors.fit(extractor, train, train_store, batch_size=7, progress=False)
    two_step = KFACFactors.fit(extractor, train, batch_size=64, progress=False)
    assert not two_step.corrected and two_step.statistics["source"] == "data"
    kfac_only = EKFAC(two_step, correct_eigenvalues=False).fit(train_store).score(query_store)
    two_step.correct_eigenvalues(train_store)
    for ours in (other, two_step):
        assert_same_factors(ours, factors)
    reference = EKFAC(factors).fit(train_store).score(query_store).values
    blocked = EKFAC(factors, block_size=7).fit(train_store).score(query_store).values
    np.testing.assert_allclose(blocked, reference, rtol=1e-6, atol=1e-9)
    kfac = EKFAC(factors, correct_eigenvalues=False).fit(train_store).score(query_store).values
    np.testing.assert_allclose(kfac_only.values, kfac, rtol=1e-5, atol=1e-8)


def test_eigen_factors_persist_and_refuse_other_stores(eigen, tmp_path):
    model, x, y, n, basis, (_, it, _), (_, et, eq), _ = eigen
    factors = KFACFactors.from_basis(basis, et)
    loaded = KFACFactors.load(factors.save(tmp_path / "f.safetensors"))
    assert loaded._block("0").diagonal
    np.testing.assert_allclose(
        EKFAC(loaded).fit(et).score(eq).values, EKFAC(basis).fit(et).score(eq).values
    )
    with pytest.raises(StoreMismatchError, match="not projected with this eigenbasis"):
        KFACFactors.from_basis(basis, it)
    with pytest.raises(StoreMismatchError, match="not projected with this eigenbasis"):
        KFACFactors.from_basis(basis.truncate(30), et)
