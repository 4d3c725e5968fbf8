"""The CLI on Hugging Face model directories: a full model and a PEFT/LoRA adapter, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infscope.cli.main import app
from infscope.store import FeatureStore
from infscope.tasks.loading import load_model_and_task
from tests.conftest import SENTENCES, tiny_bert, tiny_gpt2

runner = CliRunner()


@pytest.fixture
def bert_dir(tmp_path, tokenizer):
    path = tmp_path / "bert"
    model = tiny_bert(tokenizer.vocab_size)
    model.name_or_path = str(path)  # recorded by peft as the adapter's base model
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_features_from_hf_directory_match_the_python_api(tmp_path, bert_dir):
    path, _ = bert_dir
    data = _jsonl(
        tmp_path / "train.jsonl",
        [{"id": f"s{i}", "text": s, "label": i % 2} for i, s in enumerate(SENTENCES)],
    )
    out = tmp_path / "store"
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--model",
            str(path),
            "--out",
            str(out),
            "--projection",
            "sjlt",
            "--dim",
            "64",
            "--max-length",
            "32",
            "--batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(out)
    assert store.ids == [f"s{i}" for i in range(len(SENTENCES))]

    from infscope.gradients import GradientExtractor, ProjectionConfig

    model, task = load_model_and_task(str(path), "hf-seqcls", max_length=32)
    expected = GradientExtractor(model, task, ProjectionConfig(kind="sjlt", dim=64)).features(
        task.collate([json.loads(line) for line in data.read_text().splitlines()])
    )
    np.testing.assert_allclose(store.features("final"), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_peft_adapter_directory_tracks_adapters(tmp_path, bert_dir, tokenizer):
    from peft import LoraConfig, get_peft_model

    base_path, base = bert_dir
    torch.manual_seed(0)
    peft_model = get_peft_model(
        base, LoraConfig(r=2, target_modules=["query"], task_type="SEQ_CLS")
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    model, _ = load_model_and_task(str(adapter), "hf-seqcls")
    data = _jsonl(
        tmp_path / "d.jsonl",
        [{"id": str(i), "text": s, "label": 1} for i, s in enumerate(SENTENCES)],
    )
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--model",
            str(adapter),
            "--out",
            str(tmp_path / "s"),
            "--dim",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    modules = FeatureStore.open(tmp_path / "s").spec.modules
    assert modules and all("lora_" in m or "classifier" in m for m in modules), modules


def test_causal_lm_directory(tmp_path, tokenizer):
    path = tmp_path / "gpt2"
    tiny_gpt2(tokenizer.vocab_size).save_pretrained(path)
    tokenizer.save_pretrained(path)
    data = _jsonl(
        tmp_path / "lm.jsonl",
        [
            {"id": str(i), "prompt": s.split()[0], "completion": " ".join(s.split()[1:])}
            for i, s in enumerate(SENTENCES)
        ],
    )
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--model",
            str(path),
            "--task",
            "hf-causal-lm",
            "--out",
            str(tmp_path / "s"),
            "--projection",
            "kronecker",
            "--dim",
            "64",
            "--gradient",
            "measurement",
            "--measurement",
            "logprob",
        ],
    )
    assert result.exit_code == 0, result.output
    assert FeatureStore.open(tmp_path / "s").spec.gradient == "measurement"
    # by default a causal LM is projected on its eigenbasis, the budget chosen from the spectrum
    common = ["features", str(data), "--model", str(path), "--task", "hf-causal-lm"]
    refused = runner.invoke(app, [*common, "--out", str(tmp_path / "e")])
    assert refused.exit_code == 2 and "--basis" in refused.output
    basis = tmp_path / "basis.safetensors"
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "e"), "--basis", str(basis)])
    assert result.exit_code == 0, result.output
    projection = FeatureStore.open(tmp_path / "e").spec.projection
    assert projection["kind"] == "eigen" and projection["dim"] == "auto"
    assert projection["budget"]["dim"] == projection["feature_dim"]
    info = runner.invoke(app, ["store", "info", str(tmp_path / "e")])
    assert f"budget: k = {projection['feature_dim']:,} chosen from the spectrum" in info.output
    # score says which damping the spectrum chose
    scored = runner.invoke(
        app,
        [
            "score", "--train", str(tmp_path / "e"), "--query", str(tmp_path / "e"),
            "--method", "ekfac", "--factors", str(basis), "--damping", "auto",
            "--out", str(tmp_path / "scores"),
        ],
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert "damping auto: relative λ = " in scored.output
    assert "median eigenvalue" in scored.output


def test_missing_model_directory_is_a_clear_error(tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x", "label": 0}])
    result = runner.invoke(
        app,
        ["features", str(data), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "s")],
    )
    assert result.exit_code == 2
    assert "model directory not found" in result.output


def test_fit_factors_then_score_with_ekfac(tmp_path, bert_dir):
    from infscope.attribution import load_scores

    path, _ = bert_dir
    data = _jsonl(
        tmp_path / "train.jsonl",
        [{"id": f"s{i}", "text": s, "label": i % 2} for i, s in enumerate(SENTENCES)],
    )
    common = ["--model", str(path), "--dim", "256", "--max-length", "32"]
    factors = tmp_path / "factors.safetensors"
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--out",
            str(tmp_path / "train"),
            "--fit-factors",
            str(factors),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert factors.is_file()
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--out",
            str(tmp_path / "query"),
            "--gradient",
            "measurement",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    for method in ("ekfac", "kfac"):
        out = tmp_path / method
        result = runner.invoke(
            app,
            [
                "score",
                "--train",
                str(tmp_path / "train"),
                "--query",
                str(tmp_path / "query"),
                "--method",
                method,
                "--factors",
                str(factors),
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        assert load_scores(out).values.shape == (len(SENTENCES), len(SENTENCES))


def test_eigen_projection_end_to_end_with_true_fisher(tmp_path, bert_dir):
    """features --projection eigen fits the basis on the training data and saves it; the query
    store reads it; a --gradient fisher store gives ekfac/influence the true Fisher. The CLI's
    scores equal the Python API's."""
    from infscope.attribution import EKFAC, load_scores
    from infscope.curvature import KroneckerBasis

    path, _ = bert_dir
    data = _jsonl(
        tmp_path / "train.jsonl",
        [{"id": f"s{i}", "text": s, "label": i % 2} for i, s in enumerate(SENTENCES)],
    )
    basis = tmp_path / "basis.safetensors"
    common = ["--model", str(path), "--max-length", "32", "--projection", "eigen"]
    common += ["--dim", "300", "--basis", str(basis)]

    def features(out, *extra):
        return runner.invoke(
            app, ["features", str(data), "--out", str(tmp_path / out), *common, *extra]
        )

    # a query store cannot create the basis
    result = features("query", "--gradient", "measurement")
    assert result.exit_code == 2 and "no eigenbasis" in result.output
    result = features("train")
    assert result.exit_code == 0, result.output
    assert "eigenbasis (empirical Fisher)" in result.output and basis.is_file()
    for out, gradient in (("query", "measurement"), ("fisher", "fisher")):
        result = features(out, "--gradient", gradient)
        assert result.exit_code == 0, result.output
        assert "eigenbasis" not in result.output  # read, not refitted
    train, query = FeatureStore.open(tmp_path / "train"), FeatureStore.open(tmp_path / "query")
    assert train.spec.projection["basis"] == KroneckerBasis.load(basis).digest
    assert train.feature_dim <= 300

    score = ["score", "--train", str(tmp_path / "train"), "--query", str(tmp_path / "query")]
    for fisher in ([], ["--fisher", str(tmp_path / "fisher")]):
        out = tmp_path / f"ekfac{len(fisher)}"
        result = runner.invoke(
            app, [*score, "--method", "ekfac", "--factors", str(basis), "--out", str(out), *fisher]
        )
        assert result.exit_code == 0, result.output
        store = FeatureStore.open(tmp_path / "fisher") if fisher else None
        expected = EKFAC(KroneckerBasis.load(basis), fisher=store).fit(train).score(query)
        np.testing.assert_allclose(load_scores(out).values, expected.values, rtol=1e-5)
    result = runner.invoke(
        app,
        [
            *score,
            "--method",
            "influence",
            "--fisher",
            str(tmp_path / "fisher"),
            "--out",
            str(tmp_path / "inf"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            *score,
            "--method",
            "tracin",
            "--fisher",
            str(tmp_path / "fisher"),
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert result.exit_code == 2 and "takes no Fisher store" in result.output


def test_eigen_bases_per_checkpoint_from_the_cli(tmp_path, bert_dir):
    """Two checkpoints: --basis-only fits each one's basis; features with both bases project each
    checkpoint on its own; ekfac with both averages the checkpoints, as the Python API does."""
    from infscope.attribution import EKFAC, load_scores
    from infscope.curvature import KroneckerBasis

    path, model = bert_dir
    other = tmp_path / "bert-2"
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.save_pretrained(other)
    (other / "tokenizer_config.json").write_text((path / "tokenizer_config.json").read_text())
    for name in ("vocab.txt", "special_tokens_map.json", "tokenizer.json"):
        if (path / name).exists():
            (other / name).write_bytes((path / name).read_bytes())
    data = _jsonl(
        tmp_path / "train.jsonl",
        [{"id": f"s{i}", "text": s, "label": i % 2} for i, s in enumerate(SENTENCES)],
    )
    models = {"early": path, "late": other}
    bases = [tmp_path / f"basis-{c}.safetensors" for c in models]
    common = ["--max-length", "32", "--projection", "eigen", "--dim", "200"]
    for model_dir, basis in zip(models.values(), bases):
        result = runner.invoke(
            app,
            [
                "features",
                str(data),
                "--model",
                str(model_dir),
                "--basis",
                str(basis),
                "--basis-only",
            ],
        )
        assert result.exit_code == 0 and basis.is_file(), result.output
    with_both = [arg for b in bases for arg in ("--basis", str(b))]
    for checkpoint, model_dir in models.items():
        for out, gradient in (("train", "loss"), ("query", "measurement")):
            result = runner.invoke(
                app,
                [
                    "features",
                    str(data),
                    "--model",
                    str(model_dir),
                    "--out",
                    str(tmp_path / out),
                    "--checkpoint",
                    checkpoint,
                    "--gradient",
                    gradient,
                    *common,
                    *with_both,
                ],
            )
            assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "score",
            "--train",
            str(tmp_path / "train"),
            "--query",
            str(tmp_path / "query"),
            "--method",
            "ekfac",
            "--out",
            str(tmp_path / "scores"),
            *[arg for b in bases for arg in ("--factors", str(b))],
        ],
    )
    assert result.exit_code == 0, result.output
    train, query = FeatureStore.open(tmp_path / "train"), FeatureStore.open(tmp_path / "query")
    expected = EKFAC([KroneckerBasis.load(b) for b in bases]).fit(train)
    assert list(expected.factors_by_checkpoint) == ["early", "late"]
    np.testing.assert_allclose(
        load_scores(tmp_path / "scores").values, expected.score(query).values, rtol=1e-5
    )
    # several bases: each must exist; --out is needed unless only fitting
    result = runner.invoke(
        app,
        [
            "features",
            str(data),
            "--model",
            str(path),
            "--out",
            str(tmp_path / "x"),
            *common,
            "--basis",
            str(bases[0]),
            "--basis",
            str(tmp_path / "missing.safetensors"),
        ],
    )
    assert result.exit_code == 2 and "fit each first" in result.output
    result = runner.invoke(app, ["features", str(data), "--model", str(path)])
    assert result.exit_code == 2 and "--out" in result.output


@pytest.fixture
def headless_dir(tmp_path, tokenizer):
    """A base encoder saved without a classification head (a sentence-embedding model)."""
    from transformers import BertModel

    path = tmp_path / "headless"
    BertModel(tiny_bert(tokenizer.vocab_size).config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_head_missing_from_the_directory_is_reported_and_the_same_every_load(headless_dir):
    """Before: the head was re-initialised at random on every `features` call, silently."""
    from infscope.errors import InfscopeWarning
    from infscope.gradients.extractor import model_fingerprint

    fingerprints = []
    for _ in range(2):
        with pytest.warns(InfscopeWarning, match=r"classifier\.(bias|weight).*initialised"):
            model, _ = load_model_and_task(str(headless_dir), "hf-seqcls")
        fingerprints.append(model_fingerprint(model))
    assert fingerprints[0] == fingerprints[1]


def test_a_complete_directory_loads_without_a_warning(bert_dir, recwarn):
    from infscope.errors import InfscopeWarning

    load_model_and_task(str(bert_dir[0]), "hf-seqcls")
    assert not [w for w in recwarn if issubclass(w.category, InfscopeWarning)]


def test_the_features_command_prints_the_warning(tmp_path, headless_dir):
    data = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "great", "label": 1}])
    args = ["features", str(data), "--model", str(headless_dir), "--out", str(tmp_path / "s"), "--dim", "32"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "initialised at random" in result.output


def test_max_length_within_the_model_positions(tmp_path, bert_dir):
    """Before: --max-length beyond the positions crashed in the forward pass; 0 was ignored."""
    data = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "great " * 100, "label": 1}])
    base = ["features", str(data), "--model", str(bert_dir[0]), "--dim", "32"]
    for value, message in (("65", "exceeds the 64 token positions"), ("0", "max-length")):
        result = runner.invoke(app, [*base, "--out", str(tmp_path / value), "--max-length", value])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert message in result.output, result.output
    # the default is capped at the model's 64 positions, so a long example just truncates
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    assert FeatureStore.open(tmp_path / "default").spec.task["max_length"] == 64


def test_string_labels_map_through_the_models_label2id(tmp_path, tokenizer):
    path = tmp_path / "named"
    model = tiny_bert(tokenizer.vocab_size)
    model.config.label2id, model.config.id2label = {"neg": 0, "pos": 1}, {0: "neg", 1: "pos"}
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    rows = [
        {"id": "a", "text": "great", "label": "pos"},
        {"id": "b", "text": "bad", "label": "meh"},
    ]
    data = _jsonl(tmp_path / "d.jsonl", rows)
    base = ["features", str(data), "--model", str(path), "--dim", "32"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "label='meh' is not a class" in result.output, result.output
    data = _jsonl(tmp_path / "d.jsonl", rows[:1])
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "s2")]).exit_code == 0
