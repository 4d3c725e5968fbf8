"""``infscope audit`` end to end: records + embeddings in, a ranked, explained audit out."""

import csv
import json
import textwrap

import numpy as np

from infscope.audit import AuditResult
from infscope.cli.main import app
from tests.cli.conftest import assert_clean_error

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


def test_nan_in_features_names_the_file_and_the_row(tmp_path, runner):
    make_data(tmp_path)
    features = np.load(tmp_path / "emb.npy")
    features[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", features)
    result = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--features",
        tmp_path / "nan.npy",
        "--out",
        tmp_path / "out",
    )
    assert_clean_error(result, "nan.npy", "row 7", "'r7'", "NaN")
    assert not (tmp_path / "out").exists()


def test_zero_epochs_fail_up_front(tmp_path, runner):
    make_data(tmp_path)
    result = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--features",
        tmp_path / "emb.npy",
        "--out",
        tmp_path / "out",
        "--epochs",
        "0",
    )
    assert_clean_error(result, "epochs must be at least 1")


def test_a_label_outside_the_class_set_is_not_silently_a_new_class(tmp_path, runner):
    records, _ = make_data(tmp_path)
    records[4]["label"] = "caat"  # a typo: without class names it would be a fourth class
    (tmp_path / "typo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["audit", tmp_path / "typo.jsonl", "--features", tmp_path / "emb.npy", "--out"]
    result = invoke(runner, *args, tmp_path / "out")
    assert_clean_error(result, "'caat'", "'r4'", "--class-names")
    (tmp_path / "names.json").write_text(json.dumps(CLASSES))
    named = invoke(runner, *args, tmp_path / "out", "--class-names", tmp_path / "names.json")
    assert_clean_error(named, "['caat'] are not among the class names", "'r4'")
    (tmp_path / "more.json").write_text(json.dumps([*CLASSES, "caat"]))
    real = invoke(
        runner,
        *args,
        tmp_path / "out",
        "--class-names",
        tmp_path / "more.json",
        "--folds",
        "3",
        "--hidden",
        "16",
        "--epochs",
        "5",
    )
    assert real.exit_code == 0, real.output
    assert "warning: too few examples per class: 1 of 4 classes" in real.output


def test_uninformative_features_warn_in_the_output_and_the_result(tmp_path, runner):
    make_data(tmp_path)
    np.save(tmp_path / "zeros.npy", np.zeros((180, 6), np.float32))
    out = tmp_path / "out"
    result = invoke(
        runner,
        "audit",
        tmp_path / "train.jsonl",
        "--features",
        tmp_path / "zeros.npy",
        "--out",
        out,
        "--folds",
        "3",
        "--hidden",
        "16",
        "--epochs",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert "warning: weak evidence" in result.output
    assert "warning: the features are the same for every example" in result.output
    assert "the evidence may be too weak to trust" in result.output
    audited = AuditResult.load(out)
    assert any("weak evidence" in w for w in audited.warnings)
    assert "weak evidence" in audited.summary()


def test_bad_settings_fail_before_any_training(tmp_path, runner):
    make_data(tmp_path)
    base = ["audit", tmp_path / "train.jsonl", "--features", tmp_path / "emb.npy", "--out"]
    for extra, fragment in (
        (["--neighbours", "many"], "--neighbours must be a number or 'auto'"),
        (["--neighbours", "0"], "neighbours must be a positive number"),
        (["--folds", "1"], "folds must be at least 2"),
        (["--near-duplicate", "1.5"], "near_duplicate in (0, 1]"),
    ):
        assert_clean_error(invoke(runner, *base, tmp_path / "out", *extra), fragment)
    (tmp_path / "names.json").write_text("[cat, dog]")
    names = invoke(runner, *base, tmp_path / "out", "--class-names", tmp_path / "names.json")
    assert_clean_error(names, "names.json: not JSON")
    assert not (tmp_path / "out").exists()
