"""``infscope audit`` end to end: records + embeddings in, a ranked, explained audit out."""

import csv
import json
import textwrap

import numpy as np

from infscope.audit import AuditResult
from infscope.cli.main import app

CLASSES = ["cat", "dog", "eel"]


def make_data(tmp_path, n_per_class=60):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 3
    labels = np.repeat(np.arange(3), n_per_class)
    features = (centres[labels] + rng.normal(size=(labels.size, 6))).astype(np.float32)
    given = labels.copy()
    flipped = rng.choice(labels.size, 15, replace=False)
    given[flipped] = (labels[flipped] + 1) % 3
    records = [
        {"id": f"r{i}", "text": f"example {i}", "label": CLASSES[given[i]]}
        for i in range(labels.size)
    ]
    records[flipped[0]]["text"] = "[bold]markup[/bold] <script>x</script>"
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    np.save(tmp_path / "emb.npy", features)
    return records, flipped


def invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def test_audit_with_features_ranks_flipped_labels_first(tmp_path, runner):
    records, flipped = make_data(tmp_path)
    out = tmp_path / "audit"
    result = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--features",
        tmp_path / "emb.npy",
        "--out",
        out,
        "--folds",
        "3",
        "--hidden",
        "16",
        "--epochs",
        "20",
        "--top",
        "200",
    )
    assert result.exit_code == 0, result.output
    assert "[bold]markup[/bold]" in result.output  # data printed as text, never as markup
    audited = AuditResult.load(out)
    assert audited.class_names == CLASSES and audited.info["model"]["probe"]["hidden"] == 16
    with (out / "suspects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    top = {r["id"] for r in rows[:15]}
    assert len(top & {f"r{i}" for i in flipped}) >= 10
    assert {r["given"] for r in rows} == set(CLASSES)
    assert 5 <= audited.flagged.sum() <= 30  # the estimated number of errors (15 flipped)


def test_audit_with_a_training_function_and_bad_inputs(tmp_path, monkeypatch, runner):
    make_data(tmp_path)
    (tmp_path / "audit_fn_module.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def fit_predict(train_idx, heldout_idx, fold):
                return np.full((len(heldout_idx), 3), 1 / 3)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "fn"
    ok = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--train-fn",
        "audit_fn_module:fit_predict",
        "--out",
        out,
    )
    assert ok.exit_code == 0, ok.output
    assert AuditResult.load(out).info["sources"] == {"out_of_fold": 1.0}
    np.save(tmp_path / "bad.npy", np.ones((5, 3)) / 3)
    bad = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--pred-probs",
        tmp_path / "bad.npy",
        "--out",
        out,
    )
    assert bad.exit_code == 2 and "one row per example" in bad.output
