"""`infscope select` end to end: saved scores, data with tags and texts, features, every method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from infscope.attribution import Scores, SelfInfluence
from infscope.cli import output
from infscope.cli.main import app
from infscope.selection import SELECTORS, Selection


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(output.console, "_width", 300)
    return CliRunner()


@pytest.fixture
def inputs(tmp_path):
    """60 candidates of two tasks ('a' inflated), 6 queries, features and texts."""
    rng = np.random.default_rng(0)
    n = 60
    task = ["a"] * 30 + ["b"] * 30
    ids = [f"c{i}" for i in range(n)]
    words = {"a": "apple banana cherry", "b": "xray yacht zebra"}
    records = [
        {"id": i, "task": t, "label": k % 2, "text": f"{words[t]} item {k}"}
        for k, (i, t) in enumerate(zip(ids, task))
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    queries = [
        {"id": f"q{j}", "task": "a" if j < 3 else "b", "text": "xray zebra"} for j in range(6)
    ]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    useful = np.array([[t == ("a" if j < 3 else "b") for t in task] for j in range(6)], float)
    matrix = useful * np.array([[10.0]] * 3 + [[1.0]] * 3) + rng.normal(0, 0.1, (6, n))
    # saved in a shuffled column order: the command aligns by id
    perm = rng.permutation(n)
    Scores(matrix[:, perm], [q["id"] for q in queries], [ids[p] for p in perm], "test").save(
        tmp_path / "scores"
    )
    SelfInfluence(np.arange(n, dtype=float), ids, "self").save(tmp_path / "self")
    np.save(
        tmp_path / "features.npy", rng.normal(size=(n, 5)) + np.array(task)[:, None].__eq__("b") * 4
    )
    np.save(tmp_path / "target.npy", rng.normal(size=(8, 5)) + 4)
    (tmp_path / "target.jsonl").write_text(
        "".join(json.dumps({"id": j, "text": "xray yacht zebra"}) + "\n" for j in range(5))
    )
    return tmp_path


def run(runner, *args):
    result = runner.invoke(app, ["select", *map(str, args)])
    return result


def select_from_scores(runner, inputs, method, out, *extra):
    """`select` over the saved query x train matrix, its queries' tasks and the data file."""
    scores, queries, data = inputs / "scores", inputs / "queries.jsonl", inputs / "data.jsonl"
    args = ["--method", method, "--budget", "20", "--scores", scores, "--queries", queries]
    return run(runner, *args, "--data", data, "--out", out, *extra)


def test_bids_from_saved_scores_writes_subset_and_summary(runner, inputs):
    out = inputs / "bids"
    result = select_from_scores(runner, inputs, "bids", out, "--tag", "task")
    assert result.exit_code == 0, result.output
    selection = Selection.load(out)
    rows = [json.loads(line) for line in (out / "subset.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == selection.ids and {"task", "text", "selection_reason"} <= set(
        rows[0]
    )
    counts = {t: sum(r["task"] == t for r in rows) for t in "ab"}
    assert abs(counts["a"] - counts["b"]) <= 2  # balanced despite task a's 10x influence
    assert (out / "counts_by_task.png").stat().st_size > 1000
    assert f"b: 30 -> {counts['b']} " in (out / "summary.txt").read_text()
    # LESS-style max over tasks is drawn to the inflated task
    result = select_from_scores(runner, inputs, "less", inputs / "less")
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (inputs / "less" / "subset.jsonl").read_text().splitlines()]
    assert sum(r["task"] == "a" for r in rows) == 20
    # the same, inside each task: --stratify-by adds the tag and splits the budget by group size
    result = select_from_scores(runner, inputs, "less", inputs / "strat", "--stratify-by", "task")
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (inputs / "strat" / "subset.jsonl").read_text().splitlines()]
    assert sum(r["task"] == "a" for r in rows) == 10


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_method_runs_from_the_command_line(runner, inputs, method):
    args = [
        "--method",
        method,
        "--budget",
        "0.25",
        "--data",
        inputs / "data.jsonl",
        "--tag",
        "label",
        "--tag",
        "task",
        "--features",
        inputs / "features.npy",
        "--target-features",
        inputs / "target.npy",
        "--target-data",
        inputs / "target.jsonl",
        "--scores",
        inputs / ("self" if method in ("top-k", "bottom-k", "softmax") else "scores"),
        "--queries",
        inputs / "queries.jsonl",
        "--out",
        inputs / method,
    ]
    if method in ("vote-k", "ideal"):
        args += ["--option", "k=5"]
    if method == "cluster-bandit":
        args += ["--option", "n_clusters=4", "--option", "probe_size=4"]
    if method == "aligned-match":  # the influence's queries need their place among the targets
        n_queries = len((inputs / "queries.jsonl").read_text().splitlines())
        np.save(inputs / "query_targets.npy", np.load(inputs / "target.npy")[:n_queries])
        args[args.index(inputs / "target.npy")] = inputs / "query_targets.npy"
        args += ["--option", "n_clusters=4"]
    result = run(runner, *args)
    assert result.exit_code == 0, result.output
    assert len(Selection.load(inputs / method)) == 15
    if method in ("tarot", "dsir"):  # both aim at the target: task b
        rows = [json.loads(x) for x in (inputs / method / "subset.jsonl").read_text().splitlines()]
        assert sum(r["task"] == "b" for r in rows) >= 13


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "nope"], "unknown selection method"),
        (["--method", "bids", "--option", "colour=red"], "has no option"),
        (["--method", "top-k", "--budget", "ten"], "count or a fraction"),
        (["--method", "bids"], "needs influence"),
        (["--method", "stratified", "--tag", "missing"], "lack the tag field"),
    ],
)
def test_bad_input_is_a_clear_error(runner, inputs, args, message):
    result = run(runner, *args, "--data", inputs / "data.jsonl", "--out", inputs / "x")
    assert result.exit_code == 2
    assert message in result.output
    assert not (inputs / "x" / "selection.json").exists()


def test_select_writes_the_diagnostics_report(runner, inputs):
    out = inputs / "report"
    args = ["--tag", "task", "--tag", "label", "--features", inputs / "features.npy"]
    result = select_from_scores(runner, inputs, "less", out, *args)
    assert result.exit_code == 0, result.output
    text = (out / "report.txt").read_text()
    assert "coverage:" in text and "near-duplicates" in text and "score (10%, 50%" in text
    assert (out / "report.png").stat().st_size > 10_000
    assert "share 50.0% -> " in (out / "summary.txt").read_text()


def test_exclude_leaves_out_an_audits_flagged_rows_or_an_ids_file(runner, inputs, tmp_path):
    from infscope.audit.result import AuditResult

    best = [f"c{i}" for i in range(50, 60)]  # the ten best self-influence scores
    (tmp_path / "drop.txt").write_text("\n".join(best) + "\n")
    common = ["--method", "top-k", "--scores", inputs / "self", "--data", inputs / "data.jsonl"]
    result = run(runner, *common, "--budget", "5", "--exclude", tmp_path / "drop.txt",
                 "--out", tmp_path / "by_ids")  # fmt: skip
    assert result.exit_code == 0, result.output
    picked = Selection.load(tmp_path / "by_ids").ids
    assert len(picked) == 5 and not set(picked) & set(best)

    # an audit of the same rows, saved as `infscope audit` saves it: its flagged rows are left out
    from infscope.audit import AuditConfig, audit, probe_fit_predict
    from infscope.audit.probe import ProbeConfig

    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(60)]
    labels = np.repeat([0, 1], 30)
    labels[[50, 55]] = 1 - labels[[50, 55]]  # two flipped among the best-scored rows
    features = (np.repeat([[0.0], [4.0]], 30, axis=0) + rng.normal(size=(60, 4))).astype("float32")
    config = ProbeConfig(hidden=8, epochs=8, lr=1e-2)
    fit_predict = probe_fit_predict(features, labels, 2, ids, config)
    audit(labels, ids=ids, fit_predict=fit_predict, config=AuditConfig(folds=3)).save(
        tmp_path / "audit"
    )
    flagged = set(AuditResult.load(tmp_path / "audit").flagged_ids())
    assert {"c50", "c55"} <= flagged
    result = run(runner, *common, "--budget", "5", "--exclude", tmp_path / "audit",
                 "--out", tmp_path / "by_audit")  # fmt: skip
    assert result.exit_code == 0, result.output
    picked = Selection.load(tmp_path / "by_audit").ids
    assert len(picked) == 5 and not set(picked) & flagged
    assert f"left out {len(flagged)} rows" in result.output
