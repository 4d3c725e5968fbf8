"""Every damped estimator: ``with_damping`` equals a fresh fit at that damping (and shares the
λ-independent work), ``fit`` leaves its arguments alone, and ``describe`` reports what ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.attribution import TRAK, DataInf, InfluenceFunction
from infscope.attribution.kfac import EKFAC
from infscope.curvature.hessian import ModelHessian
from infscope.curvature.kfac import KFACFactors
from infscope.curvature.solvers import LissaSolver
from infscope.curvature.spectrum import (
    DAMPING_SHARE,
    FISHER_DAMPING_SHARE,
    HESSIAN_DAMPING_SHARE,
)
from infscope.errors import InputError, StoreCorruptError
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask
from tests.attribution.test_influence import _split, _stores
from tests.curvature.test_solvers import _store


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A 5-8-3 tanh MLP after 40 Adam steps; loss and margin stores, K-FAC factors without the
    corrected eigenvalues (so EK-FAC must compute them on fit)."""
    torch.manual_seed(0)
    x, y = torch.randn(60, 5), torch.randint(0, 3, (60,))
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:50]), y[:50]).backward()
        optimizer.step()
    root = tmp_path_factory.mktemp("damped")
    train, query = _split(x, y, 50)
    extractor, train_store, query_store = _stores(root, model, ClassificationTask(), train, query)
    margin = GradientExtractor(
        model, ClassificationTask("margin"), ProjectionConfig("identity", None)
    )
    featurize(margin, train, root / "mtrain", gradient="measurement", progress=False)
    featurize(margin, query, root / "mquery", gradient="measurement", progress=False)
    factors = KFACFactors.fit(extractor, train, progress=False)  # no store: K-FAC only
    return {
        "extractor": extractor,
        "train": train,
        "stores": (train_store, query_store),
        "margin": (FeatureStore.open(root / "mtrain"), FeatureStore.open(root / "mquery")),
        "factors": factors,
    }


CASES = {
    "influence-exact": lambda f: InfluenceFunction(),
    "influence-arnoldi": lambda f: InfluenceFunction(solver="arnoldi", solver_options={"rank": 10}),
    "influence-relatif": lambda f: InfluenceFunction(normalize="relatif"),
    "trak": lambda f: TRAK(),
    "datainf": lambda f: DataInf(),
    "ekfac": lambda f: EKFAC(f),
    "kfac": lambda f: EKFAC(f, correct_eigenvalues=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_with_damping_equals_a_fresh_fit(mlp, case):
    make = CASES[case]
    train, query = mlp["margin"] if case == "trak" else mlp["stores"]
    fitted = make(mlp["factors"]).fit(train)
    before = fitted.score(query).values.copy()
    for damping in (0.01, 3.0):
        moved = fitted.with_damping(damping)
        fresh = make(mlp["factors"])
        fresh.damping = damping
        np.testing.assert_allclose(
            moved.score(query).values, fresh.fit(train).score(query).values, rtol=1e-6, atol=1e-9
        )
        assert moved.describe()["damping"] == damping
    np.testing.assert_array_equal(fitted.score(query).values, before)  # the original is intact
    with pytest.raises(InputError, match="damping"):
        fitted.with_damping(-1.0)


def test_fit_leaves_its_arguments_alone(mlp):
    train, query = mlp["stores"]
    factors = mlp["factors"]
    assert not factors.corrected
    ekfac = EKFAC(factors).fit(train)
    assert not factors.corrected and ekfac.fitted_factors.corrected  # corrected into a copy
    solver = LissaSolver(depth=200)
    InfluenceFunction(solver=solver).fit(train).score(query)
    assert solver.scale is None  # the recursion's scale lives in the prepared inverse


def test_describe_reports_the_fitted_solver(mlp):
    train, query = mlp["stores"]
    estimator = InfluenceFunction(solver="cg").fit(train)
    estimator.score(query)
    described = estimator.describe()["solvers"]["final"]
    assert described["solver"] == "cg" and described["iterations"] > 0
    auto = InfluenceFunction().fit(train).describe()
    assert auto["solvers"]["final"]["solver"] == "exact"
    assert auto["absolute_damping"]["final"] == pytest.approx(auto["damping_unit"]["final"])


def test_unit_normalisation_applies_to_the_curvature(mlp):
    """``normalize="unit"``: ``H`` is the Fisher of the unit-norm features, not of the raw ones."""
    train, query = mlp["stores"]
    phi, psi = train.features().astype(np.float64), query.features().astype(np.float64)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    fisher = phi.T @ phi / len(phi)
    lam = np.trace(fisher) / min(fisher.shape[0], len(phi))
    expected = psi @ np.linalg.solve(fisher + lam * np.eye(len(fisher)), phi.T)
    scores = InfluenceFunction(normalize="unit").fit(train).score(query).values
    # features are normalised in float32: agreement to ~1e-6 of the largest score
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6 * abs(expected).max())


def test_model_hessian_relative_damping_is_matrix_free_and_shifts_an_indefinite_hessian(
    mlp, monkeypatch
):
    """Relative damping needs trace(H) and σ_min: Hutchinson and Lanczos, never the dense
    Hessian (which used to be built for the trace). Away from a minimum the Hessian is indefinite;
    the shift −σ_min makes H + λI positive definite, so the exact solver accepts it."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 4)).double()  # 344 params
    x, y = torch.randn(40, 12, dtype=torch.float64), torch.randint(0, 4, (40,))
    train, query = _split(x, y, 32)
    extractor = GradientExtractor(model, ClassificationTask(), ProjectionConfig("identity", None))
    featurize(extractor, train, mlp["stores"][0].root.parent / "h-train", progress=False)
    store = FeatureStore.open(mlp["stores"][0].root.parent / "h-train")
    hessian = ModelHessian.from_extractor(extractor, train, trace_probes=256)
    dense = hessian.dense()
    exact_trace, smallest = np.trace(dense), np.linalg.eigvalsh(dense).min()
    assert smallest < 0  # random weights: indefinite
    monkeypatch.setattr(ModelHessian, "dense", lambda *a, **k: pytest.fail("dense Hessian built"))
    estimator = InfluenceFunction(solver="cg", curvature=hessian).fit(store)
    assert hessian.trace() == pytest.approx(exact_trace, rel=0.15)  # Hutchinson, 256 probes
    assert estimator.describe()["indefinite_shift"]["final"] >= -smallest
    monkeypatch.undo()
    exact = InfluenceFunction(curvature=hessian).fit(store)  # the shift makes it invertible
    lam = exact.absolute_damping["final"]
    assert lam > -smallest
    vectors = store.features()[:3].T.astype(np.float64)
    np.testing.assert_allclose(
        exact.inverses["final"].solve(vectors, lam),
        np.linalg.solve(dense + lam * np.eye(len(dense)), vectors),
        rtol=1e-6,
    )


def test_non_finite_features_are_an_error_not_a_nan_score(tmp_path):
    """The store refuses to write NaN/inf, but a shard damaged on disk can still hold one: every
    estimator then raises, naming the shard (and the example, when the checksum was forged to
    match), instead of writing a matrix of NaN scores."""
    from infscope.io import sha256_file

    features = np.random.default_rng(0).standard_normal((20, 6))
    store = _store(tmp_path / "inf", features)
    damaged = features.astype(np.float32)
    damaged[3, 2] = np.inf
    path = store.shard_path("final", 0)
    np.save(path, damaged)
    for estimator in (InfluenceFunction(), InfluenceFunction(solver="cg"), DataInf()):
        with pytest.raises(StoreCorruptError, match=f"{path.name}.*sha256 mismatch"):
            estimator.fit(FeatureStore.open(store.root)).score(store)
    path.with_suffix(".sha256").write_text(sha256_file(path) + "\n")
    for estimator in (InfluenceFunction(), InfluenceFunction(solver="cg"), DataInf()):
        with pytest.raises(StoreCorruptError, match=f"non-finite.*{store.ids[3]!r}"):
            estimator.fit(FeatureStore.open(store.root)).score(store)


AUTO_CASES = {
    **CASES,
    "influence-cg": lambda f: InfluenceFunction(solver="cg"),
}


@pytest.mark.parametrize("case", sorted(AUTO_CASES))
def test_auto_damping_reads_the_fitted_spectrum(mlp, case):
    """``damping="auto"``: every estimator hands its eigenvalues to the spectrum rule, which
    reaches its target effective dimension; the chosen damping is recorded and scores like a
    fresh fit at that number."""
    make = AUTO_CASES[case]
    train, query = mlp["margin"] if case == "trak" else mlp["stores"]
    estimator = make(mlp["factors"])
    estimator.damping, estimator.auto_damping = 1.0, True
    fitted = estimator.fit(train)
    rule = fitted.describe()["damping_rule"]
    assert rule["effective_dimension"] == pytest.approx(rule["target_effective_dimension"], 1e-3)
    resolvable = rule["directions"]
    if case in ("ekfac", "kfac"):  # full-space factors: 75 Kronecker directions, 50 examples
        assert rule["n_examples"] == train.n_examples < rule["directions"]
        resolvable = train.n_examples
    else:
        assert rule["n_examples"] is None
    assert rule["share"] == fitted.damping_share == type(fitted).default_damping_share
    assert rule["target_effective_dimension"] == pytest.approx(fitted.damping_share * resolvable)
    assert fitted.damping == rule["relative"] != 1.0
    fresh = make(mlp["factors"])
    fresh.damping = fitted.damping
    np.testing.assert_allclose(
        fitted.score(query).values, fresh.fit(train).score(query).values, rtol=1e-6, atol=1e-9
    )
    assert "damping_rule" not in fitted.with_damping(0.5).describe()


def test_auto_damping_is_relative_only():
    with pytest.raises(InputError, match="relative"):
        InfluenceFunction(damping="auto", damping_mode="absolute")
    assert InfluenceFunction(damping="auto").auto_damping


def test_auto_damping_share_is_an_argument(mlp):
    """``damping_share`` moves the rule's target to that share of the directions; it needs
    ``damping="auto"`` and a share in (0, 1)."""
    train, _ = mlp["stores"]
    half = InfluenceFunction(damping="auto").fit(train).describe()["damping_rule"]
    most = InfluenceFunction(damping="auto", damping_share=0.9).fit(train)
    rule = most.describe()["damping_rule"]
    assert rule["share"] == 0.9 and half["share"] == FISHER_DAMPING_SHARE
    assert rule["target_effective_dimension"] == pytest.approx(0.9 * rule["directions"])
    assert rule["effective_dimension"] == pytest.approx(rule["target_effective_dimension"], 1e-3)
    assert most.damping < half["relative"]  # resolving more directions takes less damping
    with pytest.raises(InputError, match="damping='auto' only"):
        InfluenceFunction(damping=0.1, damping_share=0.9)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        InfluenceFunction(damping="auto", damping_share=1.0)


def test_auto_damping_share_is_declared_per_estimator(mlp):
    """Each estimator (or the curvature it inverts) declares the share ``damping="auto"``
    resolves: the Fisher family a small one (steep spectra), the model Hessian its own, EK-FAC
    and K-FAC on full-space factors half of at most ``n`` directions."""
    assert InfluenceFunction(damping="auto").damping_share == FISHER_DAMPING_SHARE
    assert TRAK(damping="auto").damping_share == FISHER_DAMPING_SHARE
    assert DataInf(damping="auto").damping_share == FISHER_DAMPING_SHARE
    assert EKFAC(mlp["factors"], damping="auto").damping_share == DAMPING_SHARE
    hessian = ModelHessian.from_extractor(mlp["extractor"], mlp["train"])
    on_hessian = InfluenceFunction(damping="auto", curvature=hessian)
    assert on_hessian.damping_share == HESSIAN_DAMPING_SHARE
    fixed = InfluenceFunction(curvature=hessian).fit(mlp["stores"][0])
    assert fixed.with_damping("auto").damping_share == HESSIAN_DAMPING_SHARE
    given = InfluenceFunction(damping="auto", damping_share=0.3, curvature=hessian)
    assert given.damping_share == 0.3


@pytest.mark.parametrize("case", ["influence-exact", "ekfac"])
def test_with_damping_auto_equals_an_auto_fit(mlp, case):
    """``with_damping("auto", damping_share=s)`` on a fit at a fixed damping scores like a fresh
    fit with ``damping="auto", damping_share=s``: one fit serves every share."""
    train, query = mlp["stores"]
    fitted = CASES[case](mlp["factors"]).fit(train)
    for share in (None, 0.3, 0.9):
        moved = fitted.with_damping("auto", damping_share=share)
        make = InfluenceFunction if case == "influence-exact" else EKFAC
        args = () if case == "influence-exact" else (mlp["factors"],)
        options = {} if share is None else {"damping_share": share}
        fresh = make(*args, damping="auto", **options).fit(train)
        assert moved.damping == pytest.approx(fresh.damping, rel=1e-9)
        assert moved.describe()["damping_rule"] == fresh.describe()["damping_rule"]
        np.testing.assert_allclose(
            moved.score(query).values, fresh.score(query).values, rtol=1e-6, atol=1e-9
        )
    assert "damping_rule" not in fitted.describe()  # the original is intact
    with pytest.raises(InputError, match="damping='auto' only"):
        fitted.with_damping(0.1, damping_share=0.5)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        fitted.with_damping("auto", damping_share=0.0)
