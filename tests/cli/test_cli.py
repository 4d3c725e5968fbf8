"""The ``infscope`` command line: features → score → top with a factory model, errors, the demo."""

from __future__ import annotations

import numpy as np
import pytest

from infscope.attribution import Scores, SelfInfluence, TracIn, load_scores
from infscope.store import FeatureStore
from tests.cli.conftest import (
    FACTORY_MODULE,
    N_TRAIN,
    assert_clean_error,
    features_args,
    invoke,
    write_jsonl,
)


def test_features_score_top_end_to_end(runner, project):
    train, query = project / "train-store", project / "query-store"
    result = invoke(runner, *features_args(project / "train.jsonl", train))
    assert result.exit_code == 0, result.output
    assert "3/3 shards" in result.output
    result = invoke(
        runner, *features_args(project / "query.jsonl", query, "--gradient", "measurement")
    )
    assert result.exit_code == 0, result.output

    train_store, query_store = FeatureStore.open(train), FeatureStore.open(query)
    assert train_store.spec.gradient == "loss" and query_store.spec.gradient == "measurement"
    assert train_store.ids == [f"t{i}" for i in range(N_TRAIN)]
    assert train_store.feature_dim == 16 and train_store.spec.projection["kind"] == "sjlt"
    assert train_store.checkpoint("final").learning_rate == 0.1

    # query x train TracIn
    scores_dir = project / "scores"
    result = invoke(runner, "score", "--train", train, "--query", query, "--out", scores_dir)
    assert result.exit_code == 0, result.output
    saved = load_scores(scores_dir)
    assert isinstance(saved, Scores)
    expected = TracIn().fit(train_store).score(query_store)
    assert saved.query_ids == expected.query_ids and saved.train_ids == expected.train_ids
    np.testing.assert_allclose(saved.values, expected.values, rtol=1e-6)
    # TracIn with one checkpoint is lr * <query, train>
    np.testing.assert_allclose(
        saved.values,
        0.1 * query_store.features() @ train_store.features().T,
        rtol=1e-5,
        atol=1e-7,
    )

    # self-influence
    self_dir = project / "self"
    result = invoke(runner, "score", "--train", train, "--out", self_dir)
    assert result.exit_code == 0, result.output
    saved_self = load_scores(self_dir)
    assert isinstance(saved_self, SelfInfluence)
    np.testing.assert_allclose(
        saved_self.values, TracIn().fit(train_store).self_influence().values, rtol=1e-6
    )

    # top: the most helpful and harmful training examples per query
    result = invoke(
        runner,
        "top",
        scores_dir,
        "--k",
        "2",
        "--train-data",
        project / "train.jsonl",
        "--query-data",
        project / "query.jsonl",
        "--field",
        "label",
    )
    assert result.exit_code == 0, result.output
    assert "helps" in result.output and "hurts" in result.output
    for q, qid in enumerate(saved.query_ids):
        assert f"query {qid}" in result.output
        row = saved.values[q]
        best, worst = saved.train_ids[int(row.argmax())], saved.train_ids[int(row.argmin())]
        assert any(
            "helps" in line and f" {best} " in line for line in result.output.splitlines()
        ), result.output
        assert any(
            "hurts" in line and f" {worst} " in line for line in result.output.splitlines()
        ), result.output

    result = invoke(runner, "top", self_dir, "--k", "3", "--train-data", project / "train.jsonl")
    assert result.exit_code == 0, result.output
    top_id = saved_self.train_ids[int(saved_self.values.argmax())]
    assert "most suspicious by tracin" in result.output and top_id in result.output


def test_resumed_features_and_dot_cosine(runner, project):
    train = project / "train-store"
    args = features_args(project / "train.jsonl", train)
    assert invoke(runner, *args, "--worker", "0", "--num-workers", "2").exit_code == 0
    assert not FeatureStore.open(train).is_complete()
    # an incomplete store is refused by score
    result = invoke(runner, "score", "--train", train, "--out", project / "s")
    assert_clean_error(result, "incomplete")
    assert invoke(runner, *args, "--worker", "1", "--num-workers", "2").exit_code == 0
    assert FeatureStore.open(train).is_complete()
    features = FeatureStore.open(train).features()
    for method, expected in (
        ("dot", (features**2).sum(1)),
        ("cosine", np.ones(N_TRAIN)),
    ):
        out = project / method
        result = invoke(runner, "score", "--train", train, "--out", out, "--method", method)
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(load_scores(out).values, expected, rtol=1e-5)


def test_bad_inputs_give_readable_errors(runner, project):
    train_data = project / "train.jsonl"
    result = invoke(runner, *features_args(project / "missing.jsonl", project / "a"))
    assert_clean_error(result, "missing.jsonl")
    # the path is shown as given, not eaten as console markup
    result = invoke(runner, *features_args(project / "train[v2].jsonl", project / "a"))
    assert_clean_error(result, "train[v2].jsonl")

    result = invoke(runner, *features_args(train_data, project / "b"), "--projection", "fancy")
    assert_clean_error(result, "fancy")
    result = invoke(runner, *features_args(train_data, project / "c", "--include", "nonexistent"))
    assert_clean_error(result, "nonexistent")
    result = invoke(runner, *features_args(train_data, project / "d"), "--dim", "1000")
    assert_clean_error(result, "1000")
    result = invoke(runner, *features_args(train_data, project / "e", "--dtype", "float64"))
    assert_clean_error(result, "float64")
    result = invoke(runner, *features_args(train_data, project / "e2", "--task", "nope"))
    assert_clean_error(result, "nope")

    # a factory that cannot be imported or called as asked
    for model, fragment in (
        ("no_such_module_xyz:build", "no_such_module_xyz"),
        (f"{FACTORY_MODULE}:no_such_function", "no_such_function"),
        (f"{FACTORY_MODULE}:not_a_pair", "(model, task)"),
        (FACTORY_MODULE, "module:function"),
    ):
        result = invoke(runner, *features_args(train_data, project / "f", "--model", model))
        assert_clean_error(result, fragment)

    # a query store projected differently from the training store
    train, query = project / "train-store", project / "query-store"
    assert invoke(runner, *features_args(train_data, train)).exit_code == 0
    args = features_args(project / "query.jsonl", query, "--gradient", "measurement")
    assert invoke(runner, *args, "--seed", "1").exit_code == 0
    result = invoke(runner, "score", "--train", train, "--query", query, "--out", project / "s")
    assert_clean_error(result, "projection")
    assert not (project / "s").exists()

    # resuming a store with other settings
    result = invoke(runner, *features_args(train_data, train, "--dim", "8"))
    assert_clean_error(result, "projection")

    # a training store that holds query gradients, a missing store, missing scores
    result = invoke(runner, "score", "--train", query, "--out", project / "s")
    assert_clean_error(result, "loss")
    result = invoke(runner, "score", "--train", project / "nowhere", "--out", project / "s")
    assert_clean_error(result, "nowhere")
    result = invoke(runner, "top", project / "nowhere")
    assert_clean_error(result, "nowhere")


def test_factory_measurement_option_is_not_silently_ignored(runner, project):
    """--measurement cannot change a factory's task, so a different one is an error."""
    data = project / "query.jsonl"
    args = features_args(data, project / "q", "--gradient", "measurement")
    result = invoke(runner, *args, "--measurement", "margin")
    assert_clean_error(result, "margin")
    margin_args = [*args, "--model", f"{FACTORY_MODULE}:build_margin"]
    assert invoke(runner, *margin_args, "--measurement", "margin").exit_code == 0


def test_top_prints_example_text_verbatim(runner, tmp_path):
    """Example text is data, not console markup: brackets are shown and never crash."""
    records = [
        {"id": "a", "text": "closing [/b] tag", "label": 0},
        {"id": "b", "text": "[bold]not bold[/bold]", "label": 1},
    ]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    SelfInfluence(np.array([2.0, 1.0], dtype=np.float32), ["a", "b"], "dot").save(tmp_path / "s")
    result = invoke(runner, "top", tmp_path / "s", "--train-data", data)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "closing [/b] tag" in result.output
    assert "[bold]not bold[/bold]" in result.output

    Scores(np.array([[1.0, -1.0]], dtype=np.float32), ["[q]"], ["a", "b"], "dot").save(
        tmp_path / "m"
    )
    query = write_jsonl(tmp_path / "q.jsonl", [{"id": "[q]", "text": "why [/i]", "label": 0}])
    result = invoke(
        runner, "top", tmp_path / "m", "--train-data", data, "--query-data", query, "--k", "1"
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "why [/i]" in result.output and "closing [/b] tag" in result.output


def test_help(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("features", "score", "top", "demo"):
        assert command in result.output
    result = invoke(runner, "features", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--out", "--projection", "--dim", "--learning-rate", "--gradient"):
        assert option in result.output
    result = invoke(runner)  # no arguments: help, not a crash
    assert "features" in result.output


def test_run_demo_finds_flipped_labels():
    from infscope.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(epochs=10, checkpoint_every=5))
    n_train, n_test = len(result.train_labels), len(result.test_labels)
    assert result.scores.values.shape == (n_test, n_train)
    assert result.self_influence.values.shape == (n_train,)
    assert int(result.flipped.sum()) == int(0.1 * n_train)
    assert result.test_accuracy > 0.8
    assert result.auc > 0.8
    assert result.found_at[0.2] > 0.5
    assert result.scores.metadata["checkpoints"] == {"epoch-5": 0.1, "epoch-10": 0.1}


def test_demo_command(runner):
    result = invoke(runner, "demo", "--epochs", "5", "--queries", "2")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "AUC" in result.output
    assert "helps" in result.output and "hurts" in result.output


def test_demo_with_too_few_epochs_is_a_clean_error(runner):
    result = invoke(runner, "demo", "--epochs", "3")
    assert_clean_error(result, "epochs")


def test_demo_refuses_a_flip_fraction_with_nothing_to_find():
    from infscope.demo import DemoConfig
    from infscope.errors import InputError

    with pytest.raises(InputError, match="flip_fraction"):
        DemoConfig(flip_fraction=0.0).validate()


def test_the_demo_pins_its_threads_and_restores_the_callers(monkeypatch):
    """Before: the demo ran with torch's default threads (57-85 s on a loaded 2-core machine)."""
    import torch

    from infscope import demo

    seen = []
    monkeypatch.setattr(demo, "_run", lambda config, workdir: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    demo.run_demo(demo.DemoConfig(threads=1))
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(Exception, match="threads"):
        demo.DemoConfig(threads=0).validate()
