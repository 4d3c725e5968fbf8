"""Model files in safe formats give the same scores as the in-memory model; others are refused."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.errors import InputError
from infscope.trees import TreeInfluence, TreeParams, fit_classifier, load_model_file
from tests.trees.test_influence import data

pytest.importorskip("lightgbm")
pytest.importorskip("xgboost")

PARAMS = TreeParams(n_estimators=8, max_leaves=6, learning_rate=0.2, l2=2.0)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_lightgbm_text_and_xgboost_json_files_score_like_the_models(tmp_path, kind):
    X, y = data(kind)
    lgb_model = fit_classifier("lightgbm", X, y, PARAMS)
    xgb_model = fit_classifier("xgboost", X, y, PARAMS)
    lgb_model.booster_.save_model(tmp_path / "m.txt")
    xgb_model.get_booster().save_model(tmp_path / "m.json")
    files = {
        "lightgbm": load_model_file(tmp_path / "m.txt"),
        "xgboost": load_model_file(tmp_path / "m.json", learning_rate=0.2, reg_lambda=2.0),
    }
    for name, model in (("lightgbm", lgb_model), ("xgboost", xgb_model)):
        expected = TreeInfluence(model).fit(X, y).score(X[:5], y[:5]).values
        found = TreeInfluence(files[name]).fit(X, y).score(X[:5], y[:5]).values
        np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-12)


def test_wrong_settings_for_an_xgboost_file_fail_the_leaf_check(tmp_path):
    X, y = data("binary")
    fit_classifier("xgboost", X, y, PARAMS).get_booster().save_model(tmp_path / "m.json")
    with pytest.raises(InputError, match="eta and lambda"):
        load_model_file(tmp_path / "m.json")
    wrong = load_model_file(tmp_path / "m.json", learning_rate=0.3, reg_lambda=1.0)
    with pytest.raises(InputError, match="do not reproduce"):
        TreeInfluence(wrong).fit(X, y)


def test_pickles_and_unknown_models_are_refused(tmp_path):
    (tmp_path / "m.pkl").write_bytes(b"not read")
    with pytest.raises(InputError, match="never loaded"):
        load_model_file(tmp_path / "m.pkl")
    (tmp_path / "bad.txt").write_text("tree\nnonsense\n")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a readable"):
        load_model_file(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="not a readable"):
        load_model_file(tmp_path / "bad.json", learning_rate=0.1, reg_lambda=1.0)
    with pytest.raises(InputError, match="record their own settings; drop learning_rate"):
        load_model_file(tmp_path / "bad.txt", learning_rate=0.1)
    with pytest.raises(InputError, match="no such model file"):
        load_model_file(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="not a scikit-learn, LightGBM or XGBoost"):
        TreeInfluence(object())
