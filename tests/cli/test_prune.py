"""`infscope prune` end to end on the synthetic planted-noise task."""

from __future__ import annotations

import json
import textwrap

from typer.testing import CliRunner

from infscope.attribution import SelfInfluence
from infscope.cli.main import app
from tests.evaluation.test_pruning import _task

runner = CliRunner()


def test_prune_command_writes_curves_and_summary(tmp_path, monkeypatch):
    score, labels, _, _ = _task()
    ids = [f"ex{i}" for i in range(len(score))]
    SelfInfluence(score, ids, "hardness").save(tmp_path / "hardness")
    SelfInfluence(-score, ids, "confidence").save(tmp_path / "confidence")
    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps({"id": i, "label": int(v)}) + "\n" for i, v in zip(ids, labels))
    )
    (tmp_path / "prune_task.py").write_text(
        textwrap.dedent("""
        from tests.evaluation.test_pruning import _task
        _, _, _, train_fn = _task()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "study"
    args = [
        "prune",
        "--score",
        f"hardness={tmp_path / 'hardness'}",
        "--score",
        f"confidence={tmp_path / 'confidence'}",
        "--negate",
        "confidence",
        "--train-fn",
        "prune_task:train_fn",
        "--out",
        str(out),
        "--keep",
        "0.7",
        "--seeds",
        "0,1",
        "--strategy",
        "keep-easy",
        "--strategy",
        "class-stratified",
        "--labels",
        str(tmp_path / "data.jsonl"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = (out / "summary.txt").read_text()
    # negating an already-negated score gives the same selection: identical results
    assert (
        "hardness / keep-easy: up to 30% removable" in summary
        and "confidence / keep-easy: up to 30% removable" in summary
    )
    assert (out / "pruning_curve.png").stat().st_size > 1000 and (
        out / "pruning_curve.svg"
    ).is_file()
    assert len((out / "runs.csv").read_text().splitlines()) == 1 + 2 * (1 + 1 + 2 * 2)

    bad = runner.invoke(
        app, ["prune", "--score", "nope", "--train-fn", "prune_task:train_fn", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "NAME=DIRECTORY" in bad.output
