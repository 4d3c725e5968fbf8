"""``infscope trees``: fits or reads a model, writes scores the library reads back unchanged, and
refuses pickles and unknown labels with one error line."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_wine

from infscope.attribution import Scores, SelfInfluence, load_scores
from infscope.trees import TreeInfluence, TreeParams, fit_classifier
from tests.cli.conftest import assert_clean_error, invoke

pytest.importorskip("lightgbm")
pytest.importorskip("xgboost")

NAMES = np.array(["barolo", "grignolino", "barbera"])


def write_csv(path, X, labels, ids):
    lines = ["id," + ",".join(f"f{j}" for j in range(X.shape[1])) + ",label"]
    lines += [f"{i}," + ",".join(repr(float(v)) for v in row) + f",{lab}" for i, row, lab in
              zip(ids, X, labels)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tables(tmp_path):
    X, y = load_wine(return_X_y=True)
    train = write_csv(
        tmp_path / "train.csv", X[:150], NAMES[y[:150]], [f"r{i}" for i in range(150)]
    )
    query = write_csv(tmp_path / "query.csv", X[150:], NAMES[y[150:]], [f"q{i}" for i in range(28)])
    return X, y, train, query


def test_fit_and_score_equal_the_library(runner, tables, tmp_path):
    X, y, train, query = tables
    args = ["--library", "xgboost", "--n-estimators", 10, "--max-leaves", 4, "--l2", 2.0]
    result = invoke(runner, "trees", train, "--query", query, "--out", tmp_path / "o", *args)
    assert result.exit_code == 0, result.output
    assert "leaf values reproduced" in result.output
    classes = np.unique(NAMES)
    labels = np.searchsorted(classes, NAMES[y])
    params = TreeParams(n_estimators=10, max_leaves=4, l2=2.0)
    model = fit_classifier("xgboost", X[:150], labels[:150], params)
    expected = TreeInfluence(model).fit(X[:150], labels[:150])
    scores = load_scores(tmp_path / "o" / "scores", expect=Scores)
    assert scores.train_ids[0] == "r0" and scores.query_ids[-1] == "q27"
    np.testing.assert_allclose(
        scores.values, expected.score(X[150:], labels[150:]).values, rtol=1e-6, atol=1e-12
    )
    own = load_scores(tmp_path / "o" / "self_influence", expect=SelfInfluence)
    np.testing.assert_allclose(own.values, expected.self_influence().values, rtol=1e-6)
    assert own.higher_is_harder

    # the saved JSON model scores the same when read back, with its eta and lambda
    again = invoke(
        runner, "trees", train, "--model", tmp_path / "o" / "model.json", "--out",
        tmp_path / "again", "--learning-rate", 0.1, "--l2", 2.0,
    )  # fmt: skip
    # the file knows classes only as 0..K-1: text labels are refused
    assert_clean_error(again, "class indices")


def test_pickles_and_unknown_query_labels_are_one_error_line(runner, tables, tmp_path):
    X, y, train, _ = tables
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04.")
    result = invoke(runner, "trees", train, "--model", tmp_path / "m.pkl", "--out", tmp_path / "o")
    assert_clean_error(result, "never loaded")
    odd = write_csv(tmp_path / "odd.csv", X[:2], ["merlot", "barolo"], ["a", "b"])
    result = invoke(runner, "trees", train, "--query", odd, "--out", tmp_path / "p",
                    "--library", "sklearn", "--n-estimators", 3)  # fmt: skip
    assert_clean_error(result, "'merlot' is not a training label")
