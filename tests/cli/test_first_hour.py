"""Faults a newcomer met in their first hour (issue 24): outputs checked before any work,
terminal-safe printing, `features --weights`, unmatched ids in `top`, a readable `store info`,
progress of `unlearn`, and the report's note on what it does not render."""

from __future__ import annotations

import numpy as np
import pytest
import typer

from infscope.attribution import Scores, SelfInfluence
from infscope.cli.main import app
from tests.cli.conftest import (
    FACTORY_MODULE,
    assert_clean_error,
    features_args,
    invoke,
    write_jsonl,
)

# ---- every output path is checked before any work ----------------------------------------

#: command line (OUT: an unwritable path) -> the first heavy step, which must not run
WRITING_COMMANDS = {
    "features": (
        ["features", "train.jsonl", "--task", "factory", "--model", "m:f", "--out", "OUT"],
        "infscope.tasks.loading.load_model_and_task",
    ),
    "features --fit-factors": (
        ["features", "train.jsonl", "--model", "m:f", "--out", "ok", "--fit-factors", "OUT"],
        "infscope.tasks.loading.load_model_and_task",
    ),
    "score": (["score", "--train", "s", "--out", "OUT"], "infscope.store.FeatureStore.open"),
    "top --out": (["top", "s", "--out", "OUT"], "infscope.attribution.load_scores"),
    "select": (
        ["select", "--method", "top-k", "--scores", "s", "--out", "OUT"],
        "infscope.selection.io.load_pool",
    ),
    "prune": (
        ["prune", "--score", "a=s", "--train-fn", "m:f", "--out", "OUT"],
        "infscope.evaluation.pruning.load_pruning_scores",
    ),
    "evaluate mislabel --json": (
        ["evaluate", "mislabel", "s", "--data", "d.jsonl", "--json", "OUT"],
        "infscope.attribution.load_scores",
    ),
    "evaluate lds --cache": (
        ["evaluate", "lds", "s", "--train-fn", "m:f", "--cache", "OUT"],
        "infscope.attribution.load_scores",
    ),
    "evaluate loo --json": (
        ["evaluate", "loo", "s", "--train-fn", "m:f", "--json", "OUT"],
        "infscope.attribution.load_scores",
    ),
    "unlearn": (
        ["unlearn", "train.jsonl", "--model", "m:f", "--forget", "f.txt", "--out", "OUT"],
        "infscope.tasks.loading.load_model_and_task",
    ),
    "report": (["report", ".", "--out", "OUT"], "infscope.report.discover"),
    "trees": (["trees", "train.csv", "--out", "OUT"], "infscope.trees.tables.load_table"),
    "audit": (["audit", "train.jsonl", "--out", "OUT"], "infscope.data.ExampleSet.from_file"),
    "index": (["index", "--train", "s", "--out", "OUT"], "infscope.store.FeatureStore.open"),
    "query": (["query", "i", "--query", "q", "--out", "OUT"], "infscope.store.FeatureStore.open"),
}


@pytest.mark.parametrize("name", sorted(WRITING_COMMANDS))
def test_an_unwritable_output_fails_before_any_work(runner, tmp_path, monkeypatch, name):
    """Before: unlearn, score, top --out (and others) computed first and failed on the output
    afterwards: minutes of work lost on a real run."""
    args, heavy = WRITING_COMMANDS[name]

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{heavy} ran before the output was checked")

    monkeypatch.setattr(heavy, must_not_run)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    args = [str(tmp_path / "a-file" / "sub" / "out.json") if a == "OUT" else a for a in args]
    assert_clean_error(invoke(runner, *args), "a-file is a file, not a folder")


def _leaves(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from _leaves(sub, (*path, name))


def test_every_command_that_writes_is_checked():
    writing = {
        name
        for name, command in _leaves(typer.main.get_command(app))
        if any(p.name in ("out", "json_path", "cache") for p in command.params)
    }
    checked = {name.split(" --")[0] for name in WRITING_COMMANDS}
    assert writing <= checked, writing - checked


# ---- terminal safety -----------------------------------------------------------------------

HOSTILE = "safe\x00text\x1b[2J\x1b]8;;http://x\x07link\u202eexe.txt"


def test_top_prints_control_ansi_and_bidi_characters_escaped_and_files_keep_them(runner, tmp_path):
    """Before: NUL, ANSI escapes and U+202E from training texts reached the terminal raw."""
    ids = ["a", "b"]
    SelfInfluence(np.array([2.0, 1.0], dtype=np.float32), ids, "dot").save(tmp_path / "self")
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": i, "text": HOSTILE} for i in ids])
    result = invoke(
        runner, "top", tmp_path / "self", "--train-data", data, "--out", tmp_path / "top.csv"
    )
    assert result.exit_code == 0, result.output
    for raw in ("\x00", "\x1b", "\u202e", "\x07"):
        assert raw not in result.output
    assert "safe\\x00text\\x1b[2J" in result.output and "\\u202eexe.txt" in result.output
    import csv

    with open(tmp_path / "top.csv", newline="", encoding="utf-8") as handle:
        assert {row["example"] for row in csv.DictReader(handle)} == {HOSTILE}


def test_query_titles_and_errors_are_escaped_too(runner, tmp_path):
    values = np.array([[1.0, -1.0]], dtype=np.float32)
    Scores(values, ["q\u202e1"], ["a", "b"], "dot").save(tmp_path / "scores")
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "q\u202e1", "text": "why\x1b[31m"}])
    result = invoke(runner, "top", tmp_path / "scores", "--query-data", queries)
    assert result.exit_code == 0, result.output
    assert "\u202e" not in result.output and "\x1b" not in result.output
    assert "q\\u202e1" in result.output
    bad = invoke(runner, "top", tmp_path / "no\x1bsuch")
    assert_clean_error(bad, "no\\x1bsuch")


# ---- top --train-data whose ids do not match ---------------------------------------------


def test_top_warns_when_the_data_file_lacks_the_scored_ids(runner, tmp_path):
    """Before: the example column was empty, silently."""
    SelfInfluence(np.arange(3, dtype=np.float32), ["t0", "t1", "t2"], "dot").save(tmp_path / "s")
    other = write_jsonl(tmp_path / "o.jsonl", [{"id": f"x{i}", "text": "hi"} for i in range(3)])
    result = invoke(runner, "top", tmp_path / "s", "--train-data", other)
    assert result.exit_code == 0
    assert "warning:" in result.output and "holds none of the shown training ids" in result.output
    partly = write_jsonl(tmp_path / "p.jsonl", [{"id": "t0", "text": "hi"}])
    result = invoke(runner, "top", tmp_path / "s", "--train-data", partly)
    assert "holds 2 of 3 of the shown training ids" in result.output
    matching = write_jsonl(tmp_path / "m.jsonl", [{"id": f"t{i}", "text": "hi"} for i in range(3)])
    assert "warning" not in invoke(runner, "top", tmp_path / "s", "--train-data", matching).output


# ---- features --weights: an unlearned model's features, without Python --------------------


def test_features_reads_the_weights_unlearn_writes(runner, project):
    """Before: unlearn's model.safetensors could be read back only from Python."""
    (project / "forget.txt").write_text("t0\nt3\n")
    unlearned = invoke(
        runner, "unlearn", project / "train.jsonl", "--task", "factory", "--model",
        f"{FACTORY_MODULE}:build", "--forget", project / "forget.txt", "--weight-decay", "0.01",
        "--out", project / "unlearned",
    )  # fmt: skip
    assert unlearned.exit_code == 0, unlearned.output
    weights = project / "unlearned" / "model.safetensors"
    args = features_args(project / "train.jsonl", project / "after", "--weights", weights)
    assert invoke(runner, *args).exit_code == 0
    assert (
        invoke(runner, *features_args(project / "train.jsonl", project / "before")).exit_code == 0
    )
    from infscope.store import FeatureStore

    before, after = FeatureStore.open(project / "before"), FeatureStore.open(project / "after")
    assert before.checkpoints[0].fingerprint != after.checkpoints[0].fingerprint
    assert not np.allclose(before.features("final"), after.features("final"))
    # the features are those of the unlearned weights, loaded exactly
    import importlib

    from safetensors.torch import load_file

    from infscope.gradients import GradientExtractor, ProjectionConfig
    from infscope.gradients.featurize import featurize

    model, task = importlib.import_module(FACTORY_MODULE).build()
    model.load_state_dict(load_file(str(weights)))
    extractor = GradientExtractor(model, task, ProjectionConfig("sjlt", 16))
    from infscope.data import ExampleSet

    featurize(extractor, ExampleSet.from_file(project / "train.jsonl"), project / "py", "final",
              learning_rate=0.1, batch_size=4, shard_size=5)  # fmt: skip
    expected = FeatureStore.open(project / "py").features("final")
    np.testing.assert_allclose(after.features("final"), expected, rtol=1e-5, atol=1e-7)
    bad = features_args(project / "train.jsonl", project / "x", "--weights", project / "no.st")
    assert_clean_error(invoke(runner, *bad), "no such weights file")


# ---- store info --------------------------------------------------------------------------


def test_store_info_prints_the_projection_readably(runner, project):
    """Before: the projection was a raw 400-character dict."""
    assert invoke(runner, *features_args(project / "train.jsonl", project / "s")).exit_code == 0
    result = invoke(runner, "store", "info", project / "s")
    assert result.exit_code == 0
    assert "projection: sjlt, 16 features, seed 0, 1 nonzero(s) per coordinate" in result.output
    assert "task: RecordTask, measurement loss" in result.output
    assert "{" not in result.output and "chunk_elements" not in result.output


# ---- unlearn shows progress ----------------------------------------------------------------


def test_unlearn_shows_the_progress_of_its_solve(runner, project):
    """Before: 283 s with one line printed."""
    (project / "forget.txt").write_text("t0\n")
    result = invoke(
        runner, "unlearn", project / "train.jsonl", "--task", "factory", "--model",
        f"{FACTORY_MODULE}:build", "--forget", project / "forget.txt", "--weight-decay", "0.01",
        "--out", project / "u",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "newton step 1/1: CG" in result.output and "Hv" in result.output
    assert "mean losses on the forget set and the rest" in result.output
    result = invoke(
        runner, "unlearn", project / "train.jsonl", "--task", "factory", "--model",
        f"{FACTORY_MODULE}:build", "--forget", project / "forget.txt", "--method", "ascent",
        "--steps", "3", "--out", project / "u2",
    )  # fmt: skip
    assert result.exit_code == 0 and "gradient ascent" in result.output


# ---- the report names what it does not render ---------------------------------------------


def test_report_notes_unlearn_and_other_outputs_it_does_not_render(runner, project):
    """Before: unlearn, index and query outputs were left out without a word."""
    run = project / "runs"
    (project / "forget.txt").write_text("t0\n")
    invoke(
        runner, "unlearn", project / "train.jsonl", "--task", "factory", "--model",
        f"{FACTORY_MODULE}:build", "--forget", project / "forget.txt", "--weight-decay", "0.01",
        "--out", run / "unlearned",
    )  # fmt: skip
    invoke(runner, *features_args(project / "train.jsonl", run / "train"))
    invoke(runner, "score", "--train", run / "train", "--out", run / "self")
    result = invoke(runner, "report", run)
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "Not shown in this report" in page
    assert "not shown: runs/unlearned (infscope unlearn, unlearned model)" in page
    assert "runs/self" in page and "not shown: runs/self" not in page  # it has a section
    # a second report does not list the first report's own configuration
    invoke(runner, "report", run)
    assert "not shown: runs (" not in (run / "report.html").read_text()


# ---- a train_fn that raises ---------------------------------------------------------------


def test_a_train_fn_that_raises_is_one_error_naming_its_line(runner, project):
    """Before: a raw traceback through infscope's retraining loop."""
    (project / "user_fns.py").write_text(
        "def broken(train_indices, seed):\n    return {}['accuracy']\n"
        "def one_argument(train_indices):\n    return 1.0\n"
    )
    SelfInfluence(np.arange(6, dtype=np.float32), [f"e{i}" for i in range(6)], "dot").save(
        project / "s"
    )
    args = ["prune", "--score", f"a={project / 's'}", "--keep", "0.5", "--seeds", "0"]
    result = invoke(runner, *args, "--train-fn", "user_fns:broken", "--out", project / "p1")
    assert_clean_error(
        result,
        "--train-fn user_fns:broken raised KeyError: 'accuracy' at ",
        "user_fns.py:2 in broken",
    )
    result = invoke(runner, *args, "--train-fn", "user_fns:one_argument", "--out", project / "p2")
    assert_clean_error(result, "takes 1 positional argument", "(called with (6 indices, 0))")
