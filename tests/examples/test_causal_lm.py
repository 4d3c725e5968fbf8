"""examples/causal_lm: its README's commands, at a tiny size (default suite) and as written
(slow)."""

from __future__ import annotations

import json

import pytest

from tests.examples.readme import REPO, run_readme, workspace

README = REPO / "examples" / "causal_lm" / "README.md"


def _check(work, outputs):
    run = work / "runs" / "causal_lm"
    assert (run / "model" / "config.json").is_file()
    assert "helps" in outputs[3] and "type:" in outputs[3]
    assert "most suspicious by ekfac" in outputs[5]
    assert (run / "basis.safetensors").is_file()  # fitted by the first features command
    assert "Attribution" in (run / "report.html").read_text()


def test_causal_lm_example_tiny(tmp_path, monkeypatch):
    work = workspace(tmp_path, monkeypatch)
    _check(work, run_readme(README, monkeypatch, tiny=True))


@pytest.mark.slow
def test_causal_lm_example_as_written(tmp_path, monkeypatch):
    work = workspace(tmp_path, monkeypatch)
    _check(work, run_readme(README, monkeypatch, tiny=False))
    trained = json.loads((work / "runs" / "causal_lm" / "training.json").read_text())
    assert trained["query_accuracy"] >= 0.5  # six answer types: chance is about 1/6
