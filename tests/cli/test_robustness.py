"""Issue 15 on the command line: no silent wrong answer — provenance, integrity, every bad input
a one-line error, recoverable metadata, outputs a user can open, help that reads at 80 columns."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infscope.attribution import SelfInfluence, load_scores
from infscope.cli.main import app
from infscope.io import sha256_file
from infscope.store import FeatureStore
from tests.cli.conftest import (
    FACTORY,
    FACTORY_MODULE,
    N_TRAIN,
    assert_clean_error,
    features_args,
    invoke,
    write_jsonl,
)


@pytest.fixture
def stores(runner, project):
    """A training store and a query store of the factory model, one checkpoint each."""
    train, query = project / "train-store", project / "query-store"
    assert invoke(runner, *features_args(project / "train.jsonl", train)).exit_code == 0
    args = features_args(project / "query.jsonl", query, "--gradient", "measurement")
    assert invoke(runner, *args).exit_code == 0
    return train, query


# ---- provenance --------------------------------------------------------------------------


def test_queries_from_other_weights_are_refused_unless_allowed(runner, project, stores):
    train, _ = stores
    other = project / "other-query"
    args = features_args(project / "query.jsonl", other, "--gradient", "measurement")
    assert invoke(runner, *args, "--model", f"{FACTORY_MODULE}:build_other").exit_code == 0
    result = invoke(runner, "score", "--train", train, "--query", other, "--out", project / "s")
    assert_clean_error(result, "other model weights", "--allow-other-weights")
    assert not (project / "s" / "scores.json").exists()
    result = invoke(
        runner, "score", "--train", train, "--query", other, "--out", project / "s",
        "--allow-other-weights",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_scores(project / "s").metadata["allow_other_weights"] is True


def test_checkpoints_with_identical_weights_are_reported_and_refused_for_tracin(runner, project):
    train = project / "train-store"
    for checkpoint in ("epoch-1", "epoch-2"):
        result = invoke(
            runner, *features_args(project / "train.jsonl", train, "--checkpoint", checkpoint)
        )
        assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "same model weights as 'epoch-1'" in result.output
    result = invoke(runner, "score", "--train", train, "--out", project / "s")
    assert_clean_error(result, "identical model weights", "--checkpoint")
    result = invoke(runner, "store", "info", train)
    assert result.exit_code == 0 and "identical weights" in result.output


# ---- integrity ---------------------------------------------------------------------------


def test_a_bit_flipped_shard_is_an_error_naming_it(runner, project, stores):
    train, _ = stores
    shard = FeatureStore.open(train).shard_path("final", 5)
    data = bytearray(shard.read_bytes())
    data[-2] ^= 0x01
    shard.write_bytes(bytes(data))
    result = invoke(runner, "score", "--train", train, "--out", project / "s")
    assert_clean_error(result, shard.name, "sha256 mismatch")
    result = invoke(runner, "store", "verify", train)
    assert_clean_error(result, shard.name)


@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("method", ["influence", "datainf", "tracin"])
def test_a_non_finite_feature_is_an_error_naming_the_example(
    runner, project, stores, value, method
):
    """Before: inf gave all-NaN influence/datainf matrices with rc 0; NaN 'curvature is zero'."""
    train, _ = stores
    shard = FeatureStore.open(train).shard_path("final", 5)
    rows = np.load(shard)
    rows[1, 3] = value
    np.save(shard, rows)
    shard.with_suffix(".sha256").write_text(sha256_file(shard) + "\n")  # a forged checksum
    result = invoke(runner, "score", "--train", train, "--method", method, "--out", project / "s")
    assert_clean_error(result, "non-finite", "'t6'")


def test_verify_and_info_on_an_intact_store(runner, stores):
    train, _ = stores
    result = invoke(runner, "store", "verify", train)
    assert result.exit_code == 0 and "3 shards of 1 checkpoint(s) intact" in result.output
    result = invoke(runner, "store", "info", train)
    assert result.exit_code == 0, result.output
    assert f"{N_TRAIN} examples x 16 float32" in result.output and "3/3" in result.output


# ---- recoverable metadata ----------------------------------------------------------------


def test_a_learning_rate_added_later_makes_tracin_work(runner, project):
    train = project / "train-store"
    args = [a for a in features_args(project / "train.jsonl", train)]
    index = args.index("--learning-rate")
    del args[index : index + 2]
    assert invoke(runner, *args).exit_code == 0
    result = invoke(runner, "score", "--train", train, "--out", project / "s")
    assert_clean_error(result, "no learning rate", "infscope store set")
    result = invoke(
        runner, "store", "set", train, "--checkpoint", "final", "--learning-rate", "0.1"
    )
    assert result.exit_code == 0, result.output
    assert invoke(runner, "score", "--train", train, "--out", project / "s").exit_code == 0
    result = invoke(runner, "store", "set", train, "--checkpoint", "final", "--learning-rate", "1")
    assert_clean_error(result, "--replace")


def test_a_factory_module_is_found_in_the_working_directory(runner, tmp_path, monkeypatch):
    """Before: `--model mymodule:fn` failed from the working directory without PYTHONPATH=."""
    module = "infscope_cwd_factory"
    (tmp_path / f"{module}.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.path", [p for p in __import__("sys").path if p not in ("", os.getcwd())]
    )
    records = [{"id": f"t{i}", "x": [0.1 * i, 0.2, -0.3, 0.4], "label": i % 3} for i in range(6)]
    write_jsonl(tmp_path / "d.jsonl", records)
    args = features_args(tmp_path / "d.jsonl", tmp_path / "s", "--model", f"{module}:build")
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.output


# ---- every input validated -----------------------------------------------------------------


@pytest.mark.parametrize("k", ["0", "-3"])
def test_top_with_a_k_below_one_is_an_error(runner, project, stores, k):
    train, query = stores
    invoke(runner, "score", "--train", train, "--query", query, "--out", project / "s")
    result = invoke(runner, "top", project / "s", "--k", k)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--k" in result.output and "greater than or equal to 1" in result.output


def test_an_unwritable_output_is_an_error_for_every_command(runner, project, stores):
    """Before: a read-only output directory raised a traceback (features, score, select,
    evaluate). A path below a plain file fails the same way for root too."""
    train, _ = stores
    blocker = project / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "sub"
    assert_clean_error(invoke(runner, *features_args(project / "train.jsonl", out)), str(blocker))
    assert_clean_error(invoke(runner, "score", "--train", train, "--out", out), str(blocker))
    invoke(runner, "score", "--train", train, "--out", project / "self")
    result = invoke(
        runner, "select", "--method", "top-k", "--scores", project / "self", "--out", out
    )
    assert_clean_error(result, str(blocker))
    flags = write_jsonl(
        project / "flags.jsonl",
        [{"id": f"t{i}", "is_mislabeled": i < 3} for i in range(N_TRAIN)],
    )
    result = invoke(
        runner, "evaluate", "mislabel", project / "self", "--data", flags, "--json", out / "r.json"
    )
    assert_clean_error(result, str(blocker))


def test_cuda_without_cuda_is_an_error(runner, project):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = features_args(project / "train.jsonl", project / "s", "--device", "cuda")
    assert_clean_error(invoke(runner, *args), "no CUDA")
    assert_clean_error(invoke(runner, *features_args(project / "train.jsonl", project / "s", "--device", "gpu!")), "not a torch device")  # fmt: skip


def test_kronecker_dim_below_the_module_count_is_an_error(runner, project):
    """Before: --dim 3 on a two-layer model silently gave more features than asked."""
    args = features_args(project / "train.jsonl", project / "s", "--projection", "kronecker")
    assert_clean_error(invoke(runner, *args, "--dim", "1"), "below the number of tracked modules")


def test_a_record_without_an_id_is_an_error(runner, project):
    records = [json.loads(line) for line in (project / "train.jsonl").read_text().splitlines()]
    del records[4]["id"]
    data = write_jsonl(project / "partial.jsonl", records)
    assert_clean_error(invoke(runner, *features_args(data, project / "s")), "record 4 has no 'id'")


@pytest.mark.parametrize(
    "option, message",
    [("n_clusters=abc", "n_clusters='abc' must be int"), ("take=[1]", "must be float")],
)
def test_select_option_of_the_wrong_type_is_an_error(runner, project, stores, option, message):
    train, _ = stores
    invoke(runner, "score", "--train", train, "--out", project / "self")
    result = invoke(
        runner, "select", "--method", "cluster-bandit", "--scores", project / "self",
        "--features", train, "--option", option, "--out", project / "sel",
    )  # fmt: skip
    assert_clean_error(result, message)


@pytest.mark.parametrize("keep", ["1.5", "0", "nan", "-0.2", ""])
def test_prune_keep_outside_zero_one_is_an_error(runner, project, stores, keep):
    train, _ = stores
    invoke(runner, "score", "--train", train, "--out", project / "self")
    result = invoke(
        runner, "prune", "--score", f"tracin={project / 'self'}", "--train-fn",
        f"{FACTORY_MODULE}:train_fn", "--keep", keep, "--out", project / "prune",
    )  # fmt: skip
    assert_clean_error(result, "keep")


def test_select_keeps_the_datas_own_columns(runner, tmp_path):
    ids = [f"e{i}" for i in range(6)]
    SelfInfluence(np.arange(6, dtype=np.float32), ids, "dot").save(tmp_path / "s")
    records = [{"id": i, "weight": 1.5, "rank": "A", "reason": "mine"} for i in ids]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    result = invoke(
        runner, "select", "--method", "top-k", "--scores", tmp_path / "s", "--data", data,
        "--budget", "2", "--out", tmp_path / "o",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "subset.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["e5", "e4"]
    assert all((r["weight"], r["rank"], r["reason"]) == (1.5, "A", "mine") for r in rows)
    assert [r["selection_rank"] for r in rows] == [0, 1]


# ---- a score's direction -------------------------------------------------------------------


@pytest.fixture
def aum_like(tmp_path):
    """A score where LOW means suspicious (as AUM records), and the flags it should find."""
    ids = [f"e{i}" for i in range(20)]
    values = np.linspace(1.0, 3.0, 20).astype(np.float32)
    values[[2, 11, 17]] = [-2.0, -1.5, -1.0]  # the mislabeled have the lowest margins
    meta = {"higher_is_harder": False, "high_means": "easy (large margin)"}
    SelfInfluence(values, ids, "aum", meta).save(tmp_path / "aum")
    records = [
        {"id": i, "is_mislabeled": n in (2, 11, 17), "label": n % 2} for n, i in enumerate(ids)
    ]
    return tmp_path / "aum", write_jsonl(tmp_path / "d.jsonl", records)


def test_evaluate_mislabel_honours_the_direction(runner, aum_like, tmp_path):
    """Before: AUM was ranked high-first (AUC 0.115 on real data) and there was no --negate."""
    scores, data = aum_like
    result = invoke(
        runner, "evaluate", "mislabel", scores, "--data", data, "--json", tmp_path / "r.json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["auc"] == 1.0
    result = invoke(runner, "evaluate", "mislabel", scores, "--data", data, "--negate")
    assert_clean_error(result, "oriented automatically")
    unmarked = SelfInfluence(load_scores(scores).values, load_scores(scores).train_ids, "mine")
    unmarked.save(tmp_path / "mine")
    result = invoke(runner, "evaluate", "mislabel", tmp_path / "mine", "--data", data, "--negate", "--json", tmp_path / "n.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "n.json").read_text())["auc"] == 1.0


def test_top_honours_the_direction_and_writes_a_table(runner, aum_like, tmp_path):
    scores, data = aum_like
    result = invoke(
        runner, "top", scores, "--k", "3", "--train-data", data, "--out", tmp_path / "t.csv"
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "t.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["train_id"] for r in rows] == ["e2", "e11", "e17"]
    assert [r["given"] for r in rows] == ["0", "1", "1"]
    assert "most suspicious by aum" in result.output


# ---- outputs a user can open ---------------------------------------------------------------


def test_score_writes_a_table_with_ids_and_top_shows_predicted_labels(runner, project, stores):
    train, query = stores
    result = invoke(runner, "score", "--train", train, "--query", query, "--out", project / "m")
    assert result.exit_code == 0 and "scores.csv" in result.output
    matrix = load_scores(project / "m")
    with open(project / "m" / "scores.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["query_id", *matrix.train_ids]
    assert [r[0] for r in rows[1:]] == matrix.query_ids
    np.testing.assert_allclose(np.array(rows[1:])[:, 1:].astype(float), matrix.values, rtol=1e-6)

    result = invoke(
        runner, "score", "--train", train, "--out", project / "self", "--table", "parquet"
    )
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(project / "self" / "scores.parquet").to_pydict()
    saved = load_scores(project / "self")
    assert table["train_id"] == saved.train_ids and table["rank"][int(saved.values.argmax())] == 1

    store = FeatureStore.open(train)
    predicted = dict(zip(store.ids, store.predictions("final").tolist()))
    result = invoke(runner, "top", project / "self", "--k", "4", "--train-data", project / "train.jsonl", "--field", "label", "--out", project / "top.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(project / "top.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert all(int(r["predicted"]) == predicted[r["train_id"]] for r in rows)
    assert all(r["given"] == str(int(r["train_id"][1:]) % 3) for r in rows)
    assert "predicted" in result.output and "given" in result.output


def test_every_command_has_an_example_and_whole_option_names_at_80_columns():
    runner = CliRunner()
    commands = [
        ["features"], ["score"], ["top"], ["demo"], ["select"], ["prune"],
        ["evaluate", "mislabel"], ["evaluate", "lds"], ["evaluate", "loo"],
        ["store", "info"], ["store", "verify"], ["store", "set"],
    ]  # fmt: skip
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, (command, result.output)
        assert "Example:" in result.output and f"infscope {' '.join(command)}" in result.output
        assert "…" not in result.output, (command, result.output)
        assert max(len(line) for line in result.output.splitlines()) <= 80, command
