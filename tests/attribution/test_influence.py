"""Influence functions: closed forms on linear and logistic regression, agreement with
leave-one-out retraining, and convergence of CG, LiSSA and Arnoldi to the exact solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

from infscope.attribution.influence import InfluenceFunction
from infscope.curvature.fisher import FeatureFisher
from infscope.curvature.hessian import ModelHessian
from infscope.data import ExampleSet
from infscope.errors import InputError, StoreMismatchError
from infscope.gradients import GradientExtractor, ProjectionConfig
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask, RegressionTask

IDENTITY = ProjectionConfig(kind="identity", dim=None)


def _logistic_data(n=60, n_query=8, d=4, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, 2))
    x = rng.standard_normal((n + n_query, d))
    logits = x @ w
    y = (rng.random(n + n_query) < 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))).astype(int)
    return torch.tensor(x), torch.tensor(y)


def _fit_softmax_regression(x, y, reg, init=None):
    """Minimise mean cross-entropy + reg/2 |θ|² to convergence (float64, L-BFGS)."""
    model = nn.Linear(x.shape[1], 2).double()
    if init is not None:
        model.load_state_dict(init)
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + reg / 2 * sum(
            (p**2).sum() for p in model.parameters()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def _stores(tmp_path, model, task, train, query, config=IDENTITY):
    extractor = GradientExtractor(model, task, config)
    featurize(extractor, train, tmp_path / "train", progress=False)
    featurize(extractor, query, tmp_path / "query", gradient="measurement", progress=False)
    return extractor, FeatureStore.open(tmp_path / "train"), FeatureStore.open(tmp_path / "query")


def _split(x, y, n):
    pairs = [(x[i], y[i]) for i in range(len(y))]
    return ExampleSet(pairs[:n], tuple(map(str, range(n)))), ExampleSet(
        pairs[n:], tuple(f"q{i}" for i in range(len(y) - n))
    )


def test_logistic_regression_matches_closed_form_and_leave_one_out(tmp_path):
    n, reg = 60, 0.05
    x, y = _logistic_data(n)
    model = _fit_softmax_regression(x[:n], y[:n], reg)
    train, query = _split(x, y, n)
    task = ClassificationTask()
    extractor, train_store, query_store = _stores(tmp_path, model, task, train, query)
    hessian = ModelHessian.from_extractor(extractor, train)
    scores = (
        InfluenceFunction(curvature=hessian, damping=reg, damping_mode="absolute")
        .fit(train_store)
        .score(query_store)
        .values
    )

    # closed form: H = 1/n Σ (diag p − p pᵀ) ⊗ x̃ x̃ᵀ in the [W | b] row-major layout
    with torch.no_grad():
        probabilities = torch.softmax(model(x), 1).numpy()
    xt = np.hstack([x.numpy(), np.ones((len(y), 1))])
    onehot = np.eye(2)[y.numpy()]
    gradients = np.einsum("nc,nj->ncj", probabilities - onehot, xt).reshape(len(y), -1)
    h = (
        sum(
            np.kron(np.diag(p) - np.outer(p, p), np.outer(v, v))
            for p, v in zip(probabilities[:n], xt[:n])
        )
        / n
    )
    np.testing.assert_allclose(hessian.dense(), h, rtol=1e-6, atol=1e-9)
    closed = gradients[n:] @ np.linalg.solve(h + reg * np.eye(len(h)), gradients[:n].T)
    np.testing.assert_allclose(scores, closed, rtol=1e-4, atol=1e-7)

    # leave-one-out: removing z changes the query loss by ≈ +score(q, z) / n
    removed = range(0, n, 4)
    base = nn.functional.cross_entropy(model(x[n:]), y[n:], reduction="none").detach().numpy()
    deltas = []
    for i in removed:
        keep = np.setdiff1d(np.arange(n), [i])
        refit = _fit_softmax_regression(x[keep], y[keep], reg, init=model.state_dict())
        deltas.append(
            nn.functional.cross_entropy(refit(x[n:]), y[n:], reduction="none").detach().numpy()
            - base
        )
    deltas = np.array(deltas).T  # [query, removed]
    predicted = scores[:, list(removed)] / n
    pearson = pearsonr(predicted.ravel(), deltas.ravel())[0]
    spearman = spearmanr(predicted.ravel(), deltas.ravel())[0]
    # measured: Pearson 0.99+, Spearman 0.98+ on this problem
    assert pearson > 0.97 and spearman > 0.95, (pearson, spearman)


def test_linear_regression_matches_closed_form(tmp_path):
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((40, 3)), dtype=torch.float32)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(
        40, 1, generator=torch.Generator().manual_seed(0)
    )
    model = nn.Linear(3, 1)
    train, query = _split(x, y, 32)
    extractor, train_store, query_store = _stores(tmp_path, model, RegressionTask(), train, query)
    lam = 0.3
    scores = (
        InfluenceFunction(
            curvature=ModelHessian.from_extractor(extractor, train),
            damping=lam,
            damping_mode="absolute",
        )
        .fit(train_store)
        .score(query_store)
        .values
    )
    xt = np.hstack([x.numpy(), np.ones((40, 1))]).astype(np.float64)
    with torch.no_grad():
        residual = (model(x) - y).numpy()[:, 0].astype(np.float64)
    gradients = residual[:, None] * xt
    h = xt[:32].T @ xt[:32] / 32
    closed = gradients[32:] @ np.linalg.solve(h + lam * np.eye(4), gradients[:32].T)
    np.testing.assert_allclose(scores, closed, rtol=1e-4, atol=1e-6)


@pytest.fixture
def mlp_stores(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    train, query = _split(x, y, 40)
    return _stores(tmp_path, model, ClassificationTask(), train, query)


def test_feature_fisher_exact_is_the_damped_formula(mlp_stores):
    _, train_store, query_store = mlp_stores
    phi, psi = train_store.features().astype(np.float64), query_store.features().astype(np.float64)
    fisher = phi.T @ phi / len(phi)
    assert len(phi) < len(fisher)  # n < dim: the exact solver inverts the n x n kernel
    lam = 0.1 * np.trace(fisher) / min(len(phi), len(fisher))  # the mean non-zero eigenvalue
    expected = psi @ np.linalg.solve(fisher + lam * np.eye(len(fisher)), phi.T)
    estimator = InfluenceFunction(damping=0.1).fit(train_store)
    np.testing.assert_allclose(estimator.score(query_store).values, expected, rtol=1e-4, atol=1e-7)
    assert estimator.describe()["absolute_damping"] == {"final": pytest.approx(lam)}
    self_expected = np.einsum(
        "ij,ji->i", phi, np.linalg.solve(fisher + lam * np.eye(len(fisher)), phi.T)
    )
    np.testing.assert_allclose(estimator.self_influence().values, self_expected, rtol=1e-4)
    relatif = (
        InfluenceFunction(damping=0.1, normalize="relatif")
        .fit(train_store)
        .score(query_store)
        .values
    )
    np.testing.assert_allclose(relatif, expected / np.sqrt(self_expected), rtol=1e-4, atol=1e-7)
    batched = (
        InfluenceFunction(damping=0.1, block_size=7).fit(train_store).score(query_store).values
    )
    np.testing.assert_allclose(batched, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "solver,options,tolerance",
    [
        ("cg", {"max_iter": 500, "tol": 1e-10}, 1e-6),
        ("lissa", {"depth": 3000}, 1e-4),
        ("lissa", {"depth": 3000, "batch_size": 20, "repeats": 4, "seed": 1}, 0.2),
        ("arnoldi", {"rank": 200, "n_iter": 200}, 1e-6),
        ("arnoldi", {"rank": 20, "n_iter": 60}, 0.3),
    ],
)
def test_iterative_solvers_converge_to_exact(mlp_stores, solver, options, tolerance):
    """CG and Arnoldi at full rank are exact to round-off; LiSSA converges geometrically;
    stochastic LiSSA and low-rank Arnoldi approximate (stated tolerances)."""
    _, train_store, query_store = mlp_stores
    exact = InfluenceFunction(damping=0.5).fit(train_store).score(query_store).values
    approx = (
        InfluenceFunction(solver=solver, damping=0.5, solver_options=options)
        .fit(train_store)
        .score(query_store)
        .values
    )
    relative = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    assert relative < tolerance, relative


def test_model_hessian_solvers_match_dense(tmp_path):
    """Hessian-vector products (forward-over-reverse) drive CG to the dense exact answer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    train, query = _split(x, y, 24)
    extractor, train_store, query_store = _stores(
        tmp_path, model, ClassificationTask(), train, query
    )
    hessian = ModelHessian.from_extractor(extractor, train, batch_size=7)
    v = np.random.default_rng(0).standard_normal((hessian.dim, 3))
    np.testing.assert_allclose(hessian.matvec(v), hessian.dense() @ v, rtol=1e-8, atol=1e-10)
    # away from a minimum the Hessian is indefinite: damp it to positive definite
    lam = 0.5 - min(0.0, np.linalg.eigvalsh(hessian.dense()).min())
    with pytest.raises(InputError, match="not positive definite"):
        InfluenceFunction(curvature=hessian, damping=1e-6, damping_mode="absolute").fit(train_store)
    exact = (
        InfluenceFunction(curvature=hessian, damping=lam, damping_mode="absolute")
        .fit(train_store)
        .score(query_store)
        .values
    )
    cg = (
        InfluenceFunction(
            solver="cg",
            curvature=hessian,
            damping=lam,
            damping_mode="absolute",
            solver_options={"tol": 1e-10},
        )
        .fit(train_store)
        .score(query_store)
        .values
    )
    np.testing.assert_allclose(cg, exact, rtol=1e-5, atol=1e-8)


def test_model_hessian_of_several_modules_is_the_hessian_of_the_loss(tmp_path):
    """Each module's parameters occupy their own slice of the flat vector: the dense Hessian equals
    ``torch.func.hessian`` of the mean training loss written as a function of that vector (a layout
    that reused one module's offsets for the next would mix up their parameters)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    train, _ = _split(x, y, 24)
    extractor = GradientExtractor(model, ClassificationTask(), IDENTITY)
    hessian = ModelHessian.from_extractor(extractor, train, batch_size=7)

    def loss(theta):
        params, offset = {}, 0
        for module, prefix in zip(extractor.modules, ("0", "2")):
            parts = module.split(theta[offset : offset + module.num_params])
            params.update({f"{prefix}.{name}": value for name, value in parts.items()})
            offset += module.num_params
        logits = torch.func.functional_call(model, params, (x[:24],))
        return nn.functional.cross_entropy(logits, y[:24])

    theta = torch.cat(
        [
            torch.cat([m.module.weight, m.module.bias[:, None]], dim=1).reshape(-1)
            for m in extractor.modules
        ]
    ).detach()
    reference = torch.func.hessian(loss)(theta).numpy()
    np.testing.assert_allclose(hessian.dense(), reference, rtol=1e-8, atol=1e-12)


def test_bad_influence_settings(mlp_stores, tmp_path):
    extractor, train_store, _ = mlp_stores
    with pytest.raises(InputError, match="damping"):
        InfluenceFunction(damping=0)
    with pytest.raises(InputError, match="unknown solver"):
        InfluenceFunction(solver="newton")
    with pytest.raises(InputError, match="normalize"):
        InfluenceFunction(normalize="softmax")
    with pytest.raises(InputError, match="exact solver"):
        InfluenceFunction(solver="exact", solver_options={"max_dim": 10}).fit(train_store)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    data = ExampleSet(
        [(torch.randn(5), torch.tensor(1)) for _ in range(10)], tuple(map(str, range(10)))
    )
    projected = GradientExtractor(
        model, ClassificationTask(), ProjectionConfig(kind="sjlt", dim=16)
    )
    featurize(projected, data, tmp_path / "projected", progress=False)
    with pytest.raises(StoreMismatchError, match="unprojected"):
        hessian = ModelHessian(model, ClassificationTask(), data, projected.modules)
        InfluenceFunction(curvature=hessian).fit(FeatureStore.open(tmp_path / "projected"))
    assert FeatureFisher(train_store, "final").dim == train_store.feature_dim
