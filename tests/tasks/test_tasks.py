"""Tasks: losses and measurements checked by hand, batches built from text, and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from infscope.errors import InputError
from infscope.tasks import (
    ClassificationTask,
    HFCausalLMTask,
    HFSequenceClassificationTask,
    RegressionTask,
    Task,
    margin_loss,
    model_inputs,
    to_device,
)
from tests.conftest import tiny_bert

LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
LABELS = torch.tensor([0, 2])
IDENTITY = nn.Identity()  # "model" whose logits are its inputs


def lse(*values: float) -> float:
    return math.log(sum(math.exp(v) for v in values))


# ---- ClassificationTask / RegressionTask --------------------------------------------------------


def test_classification_loss_is_per_example_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    losses = ClassificationTask().train_loss(IDENTITY, (logits, labels))
    assert losses.shape == (5,)
    torch.testing.assert_close(losses, F.cross_entropy(logits, labels, reduction="none"))
    # by hand for the 2x3 logits
    expected = torch.tensor([lse(1, 2, 3) - 1, lse(0.5, -1, 2) - 2])
    torch.testing.assert_close(
        ClassificationTask().train_loss(IDENTITY, (LOGITS, LABELS)), expected
    )
    # the default measurement is the loss
    torch.testing.assert_close(
        ClassificationTask().measurement(IDENTITY, (LOGITS, LABELS)), expected
    )


def test_margin_measurement_by_hand():
    task = ClassificationTask(measurement="margin")
    # logsumexp(other logits) - correct logit
    expected = torch.tensor([lse(2, 3) - 1, lse(0.5, -1) - 2])
    torch.testing.assert_close(task.measurement(IDENTITY, (LOGITS, LABELS)), expected)
    torch.testing.assert_close(margin_loss(LOGITS, LABELS), expected)
    # the training loss is still cross-entropy
    torch.testing.assert_close(
        task.train_loss(IDENTITY, (LOGITS, LABELS)),
        F.cross_entropy(LOGITS, LABELS, reduction="none"),
    )
    # lower is better: a more confident correct logit lowers the margin measurement
    better = LOGITS.clone()
    better[0, 0] += 1
    assert task.measurement(IDENTITY, (better, LABELS))[0] < expected[0]


def test_margin_gradient_is_finite():
    logits = LOGITS.clone().requires_grad_()
    margin_loss(logits, LABELS).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_dict_batches():
    task = ClassificationTask()
    expected = F.cross_entropy(LOGITS, LABELS, reduction="none")
    for key in ("labels", "targets"):
        torch.testing.assert_close(
            task.train_loss(IDENTITY, {"inputs": LOGITS, key: LABELS}), expected
        )
    with pytest.raises(InputError, match="'inputs' and 'labels'"):
        task.train_loss(IDENTITY, {"x": LOGITS, "labels": LABELS})
    with pytest.raises(InputError, match="expected a batch"):
        task.train_loss(IDENTITY, (LOGITS, LABELS, LABELS))


@pytest.mark.parametrize("labels", [torch.tensor([0, 3]), torch.tensor([-1, 0])])
def test_label_out_of_range_names_the_range(labels):
    for measurement in ("loss", "margin"):
        task = ClassificationTask(measurement=measurement)
        with pytest.raises(InputError, match=r"\[0, 2\]"):
            task.train_loss(IDENTITY, (LOGITS, labels))
        with pytest.raises(InputError, match=r"\[0, 2\]"):
            task.measurement(IDENTITY, (LOGITS, labels))


def test_classification_shape_errors():
    with pytest.raises(InputError, match="logits"):
        ClassificationTask().train_loss(IDENTITY, (LOGITS, LABELS[:1]))
    with pytest.raises(InputError, match="logits"):
        ClassificationTask().train_loss(IDENTITY, (LOGITS[0], LABELS))


def test_regression_loss():
    torch.manual_seed(0)
    predictions, targets = torch.randn(4, 3), torch.randn(4, 3)
    losses = RegressionTask().train_loss(IDENTITY, (predictions, targets))
    torch.testing.assert_close(losses, 0.5 * ((predictions - targets) ** 2).sum(1))
    # [B, 1] predictions against [B] targets
    losses = RegressionTask().train_loss(IDENTITY, (predictions[:, :1], targets[:, 0]))
    torch.testing.assert_close(losses, 0.5 * (predictions[:, 0] - targets[:, 0]) ** 2)
    # integer targets are fine
    losses = RegressionTask().train_loss(IDENTITY, (torch.zeros(2, 1), torch.tensor([[1], [2]])))
    torch.testing.assert_close(losses, torch.tensor([0.5, 2.0]))
    with pytest.raises(InputError, match="differ in shape"):
        RegressionTask().train_loss(IDENTITY, (predictions, targets[:, :2]))


@pytest.mark.parametrize(
    "make",
    [
        lambda tok: ClassificationTask(measurement="logprob"),
        lambda tok: RegressionTask(measurement="margin"),
        lambda tok: HFSequenceClassificationTask(tok, measurement="logprob"),
        lambda tok: HFCausalLMTask(tok, measurement="margin"),
    ],
)
def test_unknown_measurement(tokenizer, make):
    with pytest.raises(InputError, match="unknown measurement"):
        make(tokenizer)


def test_base_task_defaults():
    class Square(Task):
        def train_loss(self, model, batch):
            return model(batch).pow(2).sum(1)

    task = Square()
    batch = task.collate([torch.ones(2), torch.zeros(2)])  # default_collate stacks
    assert batch.shape == (2, 2)
    torch.testing.assert_close(task.measurement(IDENTITY, batch), torch.tensor([2.0, 0.0]))
    assert task.describe() == {"task": "Square", "measurement": "loss"}
    assert ClassificationTask("margin").describe()["measurement"] == "margin"


def test_to_device_keeps_structure():
    batch = {"a": torch.ones(1), "b": [torch.zeros(1), (torch.ones(2), "text")], "n": 3}
    moved = to_device(batch, "cpu")
    assert isinstance(moved["b"], list) and isinstance(moved["b"][1], tuple)
    assert moved["b"][1][1] == "text" and moved["n"] == 3


# ---- Hugging Face sequence classification ------------------------------------------------------


def test_seqcls_collate(tokenizer, text_examples):
    task = HFSequenceClassificationTask(tokenizer, max_length=32)
    batch = task.collate(text_examples)
    n = len(text_examples)
    width = max(len(tokenizer(ex["text"])["input_ids"]) for ex in text_examples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (n, width)
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [ex["label"] for ex in text_examples]
    for row, ex in enumerate(text_examples):
        ids = tokenizer(ex["text"])["input_ids"]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["attention_mask"][row].sum() == len(ids)
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "token_type_ids"}

    short = HFSequenceClassificationTask(tokenizer, max_length=5).collate(text_examples)
    assert short["input_ids"].shape == (n, 5)


def test_seqcls_text_pairs(tokenizer):
    task = HFSequenceClassificationTask(tokenizer, text_fields=("premise", "hypothesis"))
    batch = task.collate([{"premise": "a cat sat", "hypothesis": "an animal sat", "label": 2}])
    expected = tokenizer("a cat sat", "an animal sat")
    assert batch["input_ids"][0].tolist() == expected["input_ids"]
    assert batch["token_type_ids"][0].tolist() == expected["token_type_ids"]
    assert 1 in batch["token_type_ids"][0].tolist()
    assert batch["labels"].tolist() == [2]
    with pytest.raises(InputError, match="one or two"):
        HFSequenceClassificationTask(tokenizer, text_fields=("a", "b", "c"))


def test_seqcls_missing_field(tokenizer):
    task = HFSequenceClassificationTask(tokenizer)
    with pytest.raises(InputError, match="example 1 has no field 'label'"):
        task.collate([{"text": "a", "label": 0}, {"text": "b"}])
    with pytest.raises(InputError, match="has no field 'text'"):
        task.collate([{"sentence": "a", "label": 0}])


def test_seqcls_losses_match_the_model(tokenizer, text_examples):
    model = tiny_bert(tokenizer.vocab_size, num_labels=2).eval()
    task = HFSequenceClassificationTask(tokenizer, max_length=32, measurement="margin")
    batch = task.collate(text_examples)
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
        losses = task.train_loss(model, batch)
        margins = task.measurement(model, batch)
    torch.testing.assert_close(losses, F.cross_entropy(logits, batch["labels"], reduction="none"))
    torch.testing.assert_close(margins, margin_loss(logits, batch["labels"]))
    bad = task.collate([{"text": "a", "label": 2}])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        task.train_loss(model, bad)


# ---- Hugging Face causal LM --------------------------------------------------------------------


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


PAIRS = [
    {"prompt": "the movie was", "completion": "great fun"},
    {"prompt": "i", "completion": "would not watch it again"},
    {"prompt": "an utterly forgettable mess of a", "completion": "movie"},
]


def test_causal_lm_collate_labels(tokenizer):
    task = HFCausalLMTask(tokenizer, max_length=64)
    batch = task.collate(PAIRS)
    rows = [(tokens(tokenizer, p["prompt"]), tokens(tokenizer, p["completion"])) for p in PAIRS]
    width = max(len(a) + len(b) for a, b in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == (len(PAIRS), width)
    pad = tokenizer.pad_token_id
    for row, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        assert batch["input_ids"][row].tolist() == prompt + completion + [pad] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        labels = batch["labels"][row].tolist()
        assert labels[: len(prompt)] == [-100] * len(prompt)  # prompt
        assert labels[len(prompt) : n] == completion  # completion
        assert labels[n:] == [-100] * (width - n)  # padding


def test_causal_lm_truncation(tokenizer):
    prompt, completion = tokens(tokenizer, "the movie was"), tokens(tokenizer, "great fun to see")
    limit = len(prompt) + 2
    batch = HFCausalLMTask(tokenizer, max_length=limit).collate(
        [{"prompt": "the movie was", "completion": "great fun to see"}]
    )
    assert batch["input_ids"][0].tolist() == (prompt + completion)[:limit]
    assert batch["labels"][0].tolist() == [-100] * len(prompt) + completion[:2]


@pytest.mark.parametrize(
    "example, max_length",
    [
        ({"prompt": "the movie was", "completion": "great"}, 3),  # prompt fills max_length
        ({"prompt": "the movie was", "completion": "great"}, 2),  # prompt longer than it
        ({"prompt": "the movie was", "completion": ""}, 64),  # empty completion
    ],
)
def test_causal_lm_no_completion_tokens(tokenizer, example, max_length):
    assert len(tokens(tokenizer, example["prompt"])) == 3
    task = HFCausalLMTask(tokenizer, max_length=max_length)
    fine = {"prompt": "i", "completion": "would"}  # two tokens
    with pytest.raises(InputError, match="example 1 has no completion tokens"):
        task.collate([fine, example])


def test_causal_lm_missing_field(tokenizer):
    with pytest.raises(InputError, match="no field 'completion'"):
        HFCausalLMTask(tokenizer).collate([{"prompt": "hi"}])


def test_causal_lm_needs_a_pad_or_eos_token(tokenizer):
    class NoPad:
        pad_token_id = None
        eos_token_id = None

    with pytest.raises(InputError, match="pad"):
        HFCausalLMTask(NoPad())


def tiny_lm(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=vocab_size, n_positions=64)
    return GPT2LMHeadModel(config).eval()


def test_causal_lm_logprob_is_summed_completion_nll(tokenizer):
    model = tiny_lm(tokenizer.vocab_size)
    task = HFCausalLMTask(tokenizer, max_length=64)  # measurement defaults to logprob
    assert task.measurement_name == "logprob"
    batch = task.collate(PAIRS)
    with torch.no_grad():
        logprob = task.measurement(model, batch)
        loss = task.train_loss(model, batch)
    expected_sum, expected_mean = [], []
    for pair in PAIRS:
        prompt, completion = (
            tokens(tokenizer, pair["prompt"]),
            tokens(tokenizer, pair["completion"]),
        )
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():  # each example alone, without padding
            log_probs = model(input_ids=ids).logits[0].log_softmax(-1)
        nll = [
            -log_probs[t - 1, ids[0, t]].item() for t in range(len(prompt), ids.shape[1])
        ]  # token t is predicted at position t - 1
        expected_sum.append(sum(nll))
        expected_mean.append(sum(nll) / len(nll))
    torch.testing.assert_close(logprob, torch.tensor(expected_sum), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, torch.tensor(expected_mean), rtol=1e-4, atol=1e-4)
    loss_task = HFCausalLMTask(tokenizer, measurement="loss")
    with torch.no_grad():
        torch.testing.assert_close(loss_task.measurement(model, batch), loss)


@pytest.mark.parametrize("text", [None, float("nan"), ["a"], {"a": 1}, True])
def test_seqcls_refuses_a_null_or_non_text_field(tokenizer, text):
    """Before: "text": null was embedded as the string "None"."""
    task = HFSequenceClassificationTask(tokenizer)
    with pytest.raises(InputError, match="example 1: field 'text'"):
        task.collate([{"text": "fine", "label": 0}, {"text": text, "label": 1}])


def test_causal_lm_refuses_a_null_completion(tokenizer):
    task = HFCausalLMTask(tokenizer)
    with pytest.raises(InputError, match="field 'completion' is empty"):
        task.collate([{"prompt": "a", "completion": None}])


def test_seqcls_string_labels_through_label2id_or_a_clear_error(tokenizer):
    """Before: string labels raised a raw ValueError traceback from torch."""
    named = HFSequenceClassificationTask(tokenizer, label2id={"negative": 0, "positive": 1})
    batch = named.collate([{"text": "a", "label": "positive"}, {"text": "b", "label": 0.0}])
    assert batch["labels"].tolist() == [1, 0]
    with pytest.raises(
        InputError, match=r"label='neutral' is not a class: use one of \['negative', 'positive'\]"
    ):
        named.collate([{"text": "a", "label": "neutral"}])
    with pytest.raises(InputError, match="label=1.5 is not a class"):
        HFSequenceClassificationTask(tokenizer).collate([{"text": "a", "label": 1.5}])


@pytest.mark.parametrize("max_length", [0, -1, 2.5, True])
def test_max_length_must_be_a_positive_count(tokenizer, max_length):
    """Before: --max-length 0 was silently ignored."""
    for make in (HFSequenceClassificationTask, HFCausalLMTask):
        with pytest.raises(InputError, match="max_length"):
            make(tokenizer, max_length=max_length)


def test_classifiers_report_their_predicted_labels():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert ClassificationTask().predicted_labels(logits).tolist() == [1, 0]
    assert RegressionTask().predicted_labels(logits) is None
