"""Shared by the CLI tests: a factory module (a tiny MLP built from code), train/query jsonl
files, and helpers that run commands and check for clean errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from infscope.cli import output
from infscope.cli.main import app

FACTORY_MODULE = "infscope_cli_test_factory"
FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    from infscope.tasks import ClassificationTask


    class RecordTask(ClassificationTask):
        \"\"\"Records {"id", "x": [4 floats], "label"} -> (inputs, labels) tensors.\"\"\"

        def collate(self, examples):
            x = torch.tensor([e["x"] for e in examples], dtype=torch.float32)
            y = torch.tensor([e["label"] for e in examples], dtype=torch.long)
            return x, y


    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        return model, RecordTask()


    def build_margin():
        model, _ = build()
        return model, RecordTask(measurement="margin")


    def not_a_pair():
        return build()[0]


    def build_other():
        # the same architecture with other weights (another checkpoint's, say)
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        return model, RecordTask()


    def train_fn(indices, seed):
        # a deterministic stand-in for retraining: the metric grows with the kept indices
        return float(sum(indices)) / 100 + seed / 1000
    """
)
N_TRAIN, N_QUERY = 12, 3


@pytest.fixture
def runner(monkeypatch):
    # a wide console, so that long temporary paths are not wrapped in the output
    monkeypatch.setattr(output.console, "_width", 300)
    monkeypatch.setattr(output.err_console, "_width", 300)
    return CliRunner()


def invoke(runner, *args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A factory module on sys.path, and train/query jsonl files."""
    (tmp_path / f"{FACTORY_MODULE}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)

    def records(prefix, n):
        return [
            {"id": f"{prefix}{i}", "x": rng.standard_normal(4).round(3).tolist(), "label": i % 3}
            for i in range(n)
        ]

    write_jsonl(tmp_path / "train.jsonl", records("t", N_TRAIN))
    write_jsonl(tmp_path / "query.jsonl", records("q", N_QUERY))
    return tmp_path


def features_args(data, out, *extra):
    return [
        "features",
        data,
        "--task",
        "factory",
        "--model",
        f"{FACTORY_MODULE}:build",
        "--out",
        out,
        "--projection",
        "sjlt",
        "--dim",
        "16",
        "--learning-rate",
        "0.1",
        "--batch-size",
        "4",
        "--shard-size",
        "5",
        *extra,
    ]


def assert_clean_error(result, *fragments: str) -> None:
    """Exit code 2, an 'error:' line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "error:" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.output, result.output
