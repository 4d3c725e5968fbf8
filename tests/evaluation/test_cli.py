"""``infscope evaluate mislabel | lds | loo`` end to end, with a ridge train_fn module."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from infscope.attribution import Scores, SelfInfluence
from infscope.cli import output
from infscope.cli.main import app

MODULE = "infscope_eval_cli_ridge"
SOURCE = textwrap.dedent(
    """
    import numpy as np

    from tests.evaluation.ridge import make_ridge

    RIDGE = make_ridge(n=16, n_query=6)
    CALLS = []


    def train(train_indices, seed):
        CALLS.append(len(train_indices))
        return RIDGE.train_fn(train_indices, seed)


    def broken(train_indices, seed):
        return np.full(RIDGE.Xq.shape[0], np.nan)
    """
)


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(output.console, "_width", 300)
    return CliRunner()


@pytest.fixture
def ridge_module(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)  # a fresh module (and CALLS) for every test
    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)


def invoke(runner, *args):
    return runner.invoke(app, ["evaluate", *[str(a) for a in args]])


@pytest.fixture
def self_influence(tmp_path):
    flags = np.zeros(10, dtype=bool)
    flags[[1, 6]] = True
    values = np.where(flags, 5.0, 0.0) + np.arange(10) * 0.1  # perfect ranking
    ids = [f"ex{i}" for i in range(10)]
    SelfInfluence(values, ids, "tracin").save(tmp_path / "self")
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "text": "t", "is_mislabeled": bool(f)}) + "\n"
            for i, f in zip(reversed(ids), reversed(flags))  # another order than the scores
        )
    )
    return tmp_path / "self", data


def test_mislabel_from_data_field(runner, self_influence, tmp_path):
    scores, data = self_influence
    out = tmp_path / "report" / "mislabel.json"
    result = invoke(runner, "mislabel", scores, "--data", data, "--json", out)
    assert result.exit_code == 0, result.output
    assert "ROC AUC" in result.output and "1.000" in result.output
    report = json.loads(out.read_text())
    assert report["auc"] == 1.0 and report["n_mislabeled"] == 2 and report["n"] == 10
    # 5% and 10% of 10 examples: the top one (ex6); 20%: ex6 and ex1
    assert report["found_at"] == {"0.05": 0.5, "0.1": 0.5, "0.2": 1.0}
    assert report["method"] == "tracin"


def test_mislabel_from_id_list(runner, self_influence, tmp_path):
    scores, _ = self_influence
    ids = tmp_path / "bad.txt"
    ids.write_text("ex6\n\nex0\n")
    out = tmp_path / "r.json"
    result = invoke(
        runner, "mislabel", scores, "--mislabeled-ids", ids, "--json", out, "--fraction", "0.3"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_mislabeled"] == 2 and report["found_at"] == {"0.3": 0.5}
    # ex6 first (5.6), ex1 (5.1, clean here) second, ex0 (0.0) last: AUC = (8 + 0) / 16
    assert report["auc"] == pytest.approx(0.5)


def test_mislabel_bad_inputs_exit_2(runner, self_influence, tmp_path):
    scores, data = self_influence
    ids = tmp_path / "bad.txt"
    ids.write_text("ex6\nnot-an-id\n")
    result = invoke(runner, "mislabel", scores, "--mislabeled-ids", ids)
    assert result.exit_code == 2
    assert "error:" in result.output and "not-an-id" in result.output
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(data.read_text().splitlines(keepends=True)[:8]))
    result = invoke(runner, "mislabel", scores, "--data", partial)
    assert result.exit_code == 2 and "2 training ids of the scores are not in" in result.output
    result = invoke(runner, "mislabel", scores, "--data", data, "--field", "label")
    assert result.exit_code == 2 and "has no field 'label'" in result.output
    result = invoke(runner, "mislabel", scores)
    assert result.exit_code == 2 and "exactly one of --data or --mislabeled-ids" in result.output


def ridge_scores(module, tmp_path):
    ridge = module.RIDGE
    queries = [f"q{i}" for i in range(ridge.Xq.shape[0])]
    Scores(ridge.influence(), queries, [f"t{i}" for i in range(ridge.n)], "hand").save(
        tmp_path / "scores"
    )
    return tmp_path / "scores"


def test_lds_end_to_end_with_cache(runner, ridge_module, tmp_path):
    scores = ridge_scores(ridge_module, tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "lds.json"
    args = ("lds", scores, "--train-fn", f"{MODULE}:train", "--num-subsets", 12, "--cache", cache)
    result = invoke(runner, *args, "--json", out, "--n-bootstrap", 200)
    assert result.exit_code == 0, result.output
    assert "LDS" in result.output and "12 subsets" in result.output
    report = json.loads(out.read_text())
    assert report["lds"] > 0.5 and report["n_subsets"] == 12 and len(report["per_query"]) == 6
    assert len(list(cache.glob("subset-*.npz"))) == 12
    assert ridge_module.CALLS == [8] * 12  # alpha 0.5 of 16
    result = invoke(runner, *args, "--json", out, "--n-bootstrap", 200)  # all cached
    assert result.exit_code == 0 and ridge_module.CALLS == [8] * 12
    assert json.loads(out.read_text())["lds"] == report["lds"]
    # the cache was made for other subsets: refused, naming the difference
    result = invoke(runner, *args, "--seed", 1)
    assert result.exit_code == 2 and "different masks" in result.output


def test_loo_end_to_end(runner, ridge_module, tmp_path):
    scores = ridge_scores(ridge_module, tmp_path)
    out = tmp_path / "loo.json"
    result = invoke(
        runner, "loo", scores, "--train-fn", f"{MODULE}:train", "--indices", "0,5,9", "--json", out
    )
    assert result.exit_code == 0, result.output
    assert "Pearson" in result.output and "3 examples removed" in result.output
    report = json.loads(out.read_text())
    assert report["indices"] == [0, 5, 9] and report["train_ids"] == ["t0", "t5", "t9"]
    exact = ridge_module.RIDGE.exact_loo_deltas()[:, [0, 5, 9]]
    np.testing.assert_allclose(report["deltas"], exact, atol=1e-8)
    assert report["pearson"] > 0.9


def test_lds_and_loo_bad_inputs_exit_2(runner, ridge_module, self_influence, tmp_path):
    scores = ridge_scores(ridge_module, tmp_path)
    cases = [
        (("lds", scores, "--train-fn", "no_such_module_xyz:f"), "cannot import module"),
        (("lds", scores, "--train-fn", f"{MODULE}:missing"), "has no function 'missing'"),
        (("lds", scores, "--train-fn", f"{MODULE}"), "must be 'module:function'"),
        (("lds", scores, "--train-fn", f"{MODULE}:broken", "--num-subsets", 3), "non-finite"),
        (("lds", self_influence[0], "--train-fn", f"{MODULE}:train"), "holds self-influence"),
        (("lds", scores, "--train-fn", f"{MODULE}:train", "--alpha", 1.5), "alpha"),
        (("loo", scores, "--train-fn", f"{MODULE}:train", "--indices", "0,99"), "[99] are outside"),
        (("loo", scores, "--train-fn", f"{MODULE}:train", "--indices", "a,b"), "comma-separated"),
        (("mislabel", scores, "--mislabeled-ids", tmp_path), "query x train matrix"),
    ]
    for args, message in cases:
        result = invoke(runner, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and message in result.output, (args, result.output)
