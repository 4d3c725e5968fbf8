"""examples/select_and_prune: its README's commands, at a tiny size (default suite) and as
written (slow)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.examples.readme import REPO, run_readme, workspace

README = REPO / "examples" / "select_and_prune" / "README.md"


def _check(work, outputs):
    run = work / "runs" / "select_and_prune"
    assert "trec" in outputs[0]  # the cluster-match summary, by task
    assert "most suspicious by el2n" in outputs[2]
    with open(run / "prune" / "runs.csv", newline="") as handle:
        scores = {row["score"] for row in csv.DictReader(handle)}
    assert {"el2n", "aum", "forgetting"} <= scores
    page = (run / "report.html").read_text()
    assert "Pruning study" in page and "Training dynamics: data map" in page


def test_select_and_prune_example_tiny(tmp_path, monkeypatch):
    work = workspace(tmp_path, monkeypatch)
    _check(work, run_readme(README, monkeypatch, tiny=True))


@pytest.mark.slow
def test_select_and_prune_example_as_written(tmp_path, monkeypatch):
    work = workspace(tmp_path, monkeypatch)
    _check(work, run_readme(README, monkeypatch, tiny=False))
    from examples.select_and_prune.retrain import target_accuracy

    def ids(selection):
        path = work / "runs" / "select_and_prune" / selection / "subset.jsonl"
        return [json.loads(line)["id"] for line in path.read_text().splitlines()]

    # the targeted subset serves the target task far better than a random one
    assert target_accuracy(ids("cluster-match"))[0] > target_accuracy(ids("random"))[0] + 0.1
