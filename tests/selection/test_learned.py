import numpy as np
import pytest
from scipy.stats import spearmanr

from infscope.errors import InputError, NonFiniteError
from infscope.selection import (
    InfluencePredictor,
    Pool,
    PredictorConfig,
    build_selector,
    sample_probe,
)

FAST = PredictorConfig(hidden=(64, 32), epochs=150, lr=3e-3, patience=20)


def smooth_problem(n=2000, d=16, seed=0):
    """Features and a smooth nonlinear score function of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w, v = rng.normal(size=(2, d)) / np.sqrt(d)
    return x, np.tanh(x @ w) + 0.5 * (x @ v) ** 2


def unprobed_spearman(predictor, x, y, probed):
    rest = np.setdiff1d(np.arange(len(x)), probed)
    return spearmanr(predictor.predict(x[rest]), y[rest]).statistic


def test_recovers_a_smooth_score_function_from_a_tenth_of_the_pool():
    x, y = smooth_problem()
    probed = sample_probe(len(x), 0.1, seed=0, features=x)
    assert len(probed) == 200
    predictor = InfluencePredictor(FAST).fit(x[probed], y[probed])
    assert unprobed_spearman(predictor, x, y, probed) > 0.9
    summary = predictor.summary
    assert summary.n_probed == 200 and summary.n_validation == 40 and summary.refit
    assert summary.validation_spearman > 0.7  # its own held-out estimate
    assert 1 <= summary.best_epoch <= summary.epochs_run <= FAST.epochs


def test_beats_constant_and_random_predictors():
    x, y = smooth_problem(seed=1)
    probed = sample_probe(len(x), 0.1, seed=1)
    rest = np.setdiff1d(np.arange(len(x)), probed)
    predictor = InfluencePredictor(FAST).fit(x[probed], y[probed])
    predicted = predictor.predict(x[rest])
    mse = np.mean((predicted - y[rest]) ** 2)
    assert mse < 0.5 * np.mean((y[probed].mean() - y[rest]) ** 2)  # constant: the probed mean
    shuffled = np.random.default_rng(0).permutation(y[probed])  # a "random" predictor's ranking
    random_fit = InfluencePredictor(FAST).fit(x[probed], shuffled)
    assert (
        unprobed_spearman(predictor, x, y, probed)
        > unprobed_spearman(random_fit, x, y, probed) + 0.5
    )


def test_same_seed_same_predictions_and_inputs_untouched():
    x, y = smooth_problem(n=400)
    probed = sample_probe(len(x), 0.25, seed=3, features=x)
    np.testing.assert_array_equal(probed, sample_probe(len(x), 0.25, seed=3, features=x))
    config = PredictorConfig(hidden=(32,), epochs=40, seed=5)
    x_copy, y_copy = x.copy(), y.copy()
    first = InfluencePredictor(config).fit(x[probed], y[probed]).predict(x)
    second = InfluencePredictor(config).fit(x[probed], y[probed]).predict(x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)
    assert config == PredictorConfig(hidden=(32,), epochs=40, seed=5)
    other = InfluencePredictor(PredictorConfig(hidden=(32,), epochs=40, seed=6))
    assert not np.array_equal(first, other.fit(x[probed], y[probed]).predict(x))


def test_predictions_keep_the_scale_of_the_scores():
    x, y = smooth_problem(n=600)
    probed = sample_probe(len(x), 0.3, seed=0)
    scaled = 1e-4 * y - 3.0  # influence values are often tiny and offset
    predicted = InfluencePredictor(FAST).fit(x[probed], scaled[probed]).predict(x)
    assert abs(predicted.mean() - scaled.mean()) < 0.5 * scaled.std()
    assert spearmanr(predicted, scaled).statistic > 0.8


def test_pairs_serve_several_queries():
    rng = np.random.default_rng(0)
    x, queries = rng.normal(size=(500, 8)), rng.normal(size=(4, 8))
    scores = x @ queries.T  # [n, 4]: a similarity-like influence on each query
    probed = sample_probe(len(x), 0.2, seed=0)
    rows = np.tile(probed, 4)
    predictor = InfluencePredictor(FAST).fit(
        x[rows],
        scores[probed].T.ravel(),
        queries=np.repeat(queries, len(probed), axis=0),
        groups=rows,  # validation rows are examples never seen with any query
    )
    for j, query in enumerate(queries):
        assert spearmanr(predictor.predict(x, query), scores[:, j]).statistic > 0.8
    with pytest.raises(InputError, match="needs query features"):
        predictor.predict(x)
    with pytest.raises(InputError, match="8 columns"):
        predictor.predict(x, np.zeros(3))


def test_score_pool_feeds_the_existing_selectors():
    x, y = smooth_problem(n=500)
    probed = sample_probe(len(x), 0.2, seed=0, features=x)
    predictor = InfluencePredictor(FAST).fit(x[probed], y[probed])
    pool = Pool(ids=[f"ex{i}" for i in range(len(x))], features=x)
    scored = predictor.score_pool(pool, probed, y[probed])
    assert pool.scores is None  # a copy: the user's pool is unchanged
    np.testing.assert_array_equal(scored.scores[probed], y[probed])  # computed scores kept
    selection = build_selector("top-k").select(scored, 0.1)
    best = set(np.argsort(-y)[:50].tolist())
    assert len(best & set(selection.indices.tolist())) >= 25  # random: 5


def test_diverse_probe_covers_every_cluster():
    rng = np.random.default_rng(0)
    cluster = np.repeat(np.arange(5), [400, 400, 100, 60, 40])
    x = rng.normal(size=(5, 6))[cluster] * 10 + rng.normal(size=(len(cluster), 6))
    probed = sample_probe(len(x), 50, seed=0, features=x, n_clusters=5)
    assert len(probed) == 50 and len(np.unique(probed)) == 50
    np.testing.assert_array_equal(np.bincount(cluster[probed]), [20, 20, 5, 3, 2])


def test_clear_errors_on_bad_input():
    x, y = smooth_problem(n=100)
    predictor = InfluencePredictor(FAST)
    with pytest.raises(InputError, match="not fitted"):
        predictor.predict(x)
    bad = y.copy()
    bad[[3, 7]] = [np.nan, np.inf]
    with pytest.raises(NonFiniteError, match="ex3, ex7") as err:
        predictor.fit(x, bad, ids=[f"ex{i}" for i in range(100)])
    assert err.value.positions == [3, 7]
    with pytest.raises(InputError, match="at least 20"):
        predictor.fit(x[:10], y[:10])
    with pytest.raises(InputError, match="one per row"):
        predictor.fit(x, y[:50])
    with pytest.raises(InputError, match="2-D"):
        predictor.fit(y, y)
    nan_features = x.copy()
    nan_features[4, 0] = np.nan
    with pytest.raises(InputError, match=r"rows \[4\]"):
        predictor.fit(nan_features, y)
    predictor.fit(x, y)
    with pytest.raises(InputError, match="fitted on 16"):
        predictor.predict(x[:, :5])
    with pytest.raises(InputError, match="one computed score per probed"):
        predictor.complete(x, [0, 1], [1.0])
    with pytest.raises(InputError, match="validation"):
        PredictorConfig(validation=1.0)
    with pytest.raises(InputError, match="hidden"):
        PredictorConfig(hidden=())
    with pytest.raises(InputError, match="budget"):
        sample_probe(100, 1.5)
