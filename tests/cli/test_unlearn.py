"""`infscope unlearn` end to end on the factory MLP, and its one-line errors."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from tests.cli.conftest import FACTORY_MODULE, assert_clean_error, invoke


def _args(project, *extra):
    return [
        "unlearn",
        project / "train.jsonl",
        "--task",
        "factory",
        "--model",
        f"{FACTORY_MODULE}:build",
        "--forget",
        project / "forget.txt",
        "--out",
        project / "out",
        *extra,
    ]


def test_unlearn_writes_weights_and_summary_and_chains(project, runner):
    (project / "forget.txt").write_text("t0\n\nt3\n")
    result = invoke(runner, *_args(project, "--weight-decay", "0.01", "--ridge", "0.01"))
    assert result.exit_code == 0, result.output
    weights = load_file(str(project / "out" / "model.safetensors"))
    import importlib

    factory = importlib.import_module(FACTORY_MODULE)
    original = factory.build()[0].state_dict()
    assert set(weights) == set(original)
    assert not torch.equal(weights["2.weight"], original["2.weight"])
    summary = json.loads((project / "out" / "unlearn.json").read_text())
    assert summary["method"] == "newton" and summary["n_forget"] == 2 and summary["n_rest"] == 10
    assert set(summary["mean_loss"]) == {
        "forget_before",
        "forget_after",
        "rest_before",
        "rest_after",
    }
    assert summary["steps"][0]["cg_iterations"] >= 1
    # the output is a valid --weights input: fine-tune the unlearned model on the rest
    (project / "forget.json").write_text(json.dumps(["t5"]))
    weights_in = project / "out" / "model.safetensors"
    args = _args(project, "--method", "finetune", "--steps", "3", "--weights", weights_in)
    args[args.index("--forget") + 1] = project / "forget.json"
    args[args.index("--out") + 1] = project / "out2"
    chained = invoke(runner, *args)
    assert chained.exit_code == 0, chained.output
    summary = json.loads((project / "out2" / "unlearn.json").read_text())
    assert summary["method"] == "finetune" and summary["n_forget"] == 1
    assert summary["mean_loss"]["forget_before"] != summary["mean_loss"]["forget_after"]


def test_unlearn_errors_are_one_line(project, runner):
    (project / "forget.txt").write_text("t0\nnot-an-id\n")
    assert_clean_error(invoke(runner, *_args(project)), "forget ids are not in")
    (project / "forget.txt").write_text("t0\n")
    assert_clean_error(invoke(runner, *_args(project, "--method", "magic")), "unknown --method")
    assert_clean_error(
        invoke(runner, *_args(project, "--weight-decay", "0", "--ridge", "0")), "positive sum"
    )
    (project / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert_clean_error(
        invoke(runner, *_args(project, "--weights", project / "bad.safetensors")),
        "not a readable safetensors file",
    )
    save_file({"other": torch.zeros(2)}, str(project / "other.safetensors"))
    assert_clean_error(
        invoke(runner, *_args(project, "--weights", project / "other.safetensors")),
        "does not fit the model",
    )
    (project / "forget.json").write_text('{"ids": 1}')
    args = _args(project)
    args[args.index("--forget") + 1] = project / "forget.json"
    assert_clean_error(invoke(runner, *args), "JSON list of ids")


def test_the_former_damping_flag_warns_and_sets_the_ridge(project, runner):
    """unlearn's --damping was an absolute shift, not score's relative damping: now --ridge."""
    (project / "forget.txt").write_text("t0\n")
    result = invoke(runner, *_args(project, "--weight-decay", "0.01", "--damping", "0.02"))
    assert result.exit_code == 0, result.output
    assert "warning: --damping is deprecated for unlearn; use --ridge" in result.output
    summary = json.loads((project / "out" / "unlearn.json").read_text())
    assert summary["config"]["ridge"] == 0.02
