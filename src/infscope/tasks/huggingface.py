"""Tasks for Hugging Face ``transformers`` models: sequence classification and causal LMs.

PEFT/LoRA models need no task of their own: wrap the base model with ``peft`` as usual; infscope
tracks only parameters that require gradients, which for a PEFT model are its adapter weights (and
any ``modules_to_save`` such as a classification head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infscope.errors import InputError
from infscope.tasks.base import (
    CLASSIFICATION_MEASUREMENTS,
    Batch,
    Task,
    classification_measurement,
    sample_labels,
)

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a batch that a ``transformers`` model takes as keyword arguments."""
    return {key: batch[key] for key in MODEL_INPUT_KEYS if key in batch}


def _field(example: Any, name: str, index: int) -> Any:
    if not isinstance(example, dict) or name not in example:
        keys = sorted(example) if isinstance(example, dict) else type(example).__name__
        raise InputError(f"example {index} has no field {name!r} (it has {keys})")
    return example[name]


def _text(example: Any, name: str, index: int) -> str:
    """A text field as a string; null (or NaN, a missing csv cell) and containers are refused
    rather than embedded as the words "None" or "nan"."""
    value = _field(example, name, index)
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and value != value):
        raise InputError(f"example {index}: field {name!r} is empty (null); give it a text")
    if isinstance(value, (bool, dict, list, tuple)):
        raise InputError(f"example {index}: field {name!r} is a {type(value).__name__}, not a text")
    return str(value)


def _check_max_length(max_length: Any) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise InputError(f"max_length must be a positive number of tokens, got {max_length!r}")
    return max_length


def is_peft_model(model: nn.Module) -> bool:
    """True for models wrapped by ``peft`` (detected without importing peft)."""
    return hasattr(model, "peft_config") and hasattr(model, "base_model")


class HFSequenceClassificationTask(Task):
    """``AutoModelForSequenceClassification``-style models on text (or text-pair) examples.

    Examples are dicts with the ``text_fields`` (one field, or two for sentence pairs such as NLI)
    and a ``label_field``: a class index, or a class name of ``label2id`` (a model config's
    mapping, e.g. ``{"negative": 0, "positive": 1}``). Measurements: ``"loss"``, ``"margin"`` or
    ``"logit"``.
    """

    measurements = CLASSIFICATION_MEASUREMENTS

    def __init__(
        self,
        tokenizer: Any,
        text_fields: Sequence[str] = ("text",),
        label_field: str = "label",
        max_length: int = 128,
        measurement: str | None = None,
        label2id: dict[str, int] | None = None,
    ) -> None:
        super().__init__(measurement)
        if not 1 <= len(text_fields) <= 2:
            raise InputError(f"text_fields must name one or two fields, got {list(text_fields)}")
        self.tokenizer = tokenizer
        self.text_fields = tuple(text_fields)
        self.label_field = label_field
        self.max_length = _check_max_length(max_length)
        self.label2id = dict(label2id or {})

    def _label(self, example: Any, index: int) -> int:
        """A class index from an integer (or integral float) label or a ``label2id`` name."""
        value = _field(example, self.label_field, index)
        if isinstance(value, str) and value in self.label2id:
            return int(self.label2id[value])
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        names = f"one of {sorted(self.label2id)} or " if self.label2id else ""
        raise InputError(
            f"example {index}: {self.label_field}={value!r} is not a class: use {names}an "
            "integer class index"
        )

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        columns = [
            [_text(ex, name, i) for i, ex in enumerate(examples)] for name in self.text_fields
        ]
        labels = [self._label(ex, i) for i, ex in enumerate(examples)]
        encoded = self.tokenizer(
            *columns, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = dict(encoded)
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        return batch

    def _logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(**model_inputs(batch)).logits
        n_classes = logits.shape[-1]
        labels = batch["labels"]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise InputError(
                f"labels must lie in [0, {n_classes - 1}] for a model with {n_classes} labels; "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        return logits

    def train_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self._logits(model, batch), batch["labels"], reduction="none")

    def predicted_labels(self, output: Any) -> torch.Tensor | None:
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor) and logits.ndim == 2:
            return logits.argmax(dim=1)
        return None

    def measurement(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return classification_measurement(
            self.measurement_name, self._logits(model, batch), batch["labels"]
        )

    def sampled_loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> torch.Tensor:
        logits = self._logits(model, batch)
        return F.cross_entropy(logits, sample_labels(logits, generator), reduction="none")

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "text_fields": list(self.text_fields),
            "label_field": self.label_field,
            "max_length": self.max_length,
        }


class HFCausalLMTask(Task):
    """Causal LMs on prompt/completion pairs; only completion tokens are scored.

    The training loss is the mean negative log-likelihood of the completion tokens. Measurements:
    ``"logprob"`` — the negative log-probability of the whole completion given the prompt (summed
    token NLL, lower is better) — or ``"loss"`` (the training loss).
    """

    measurements = ("logprob", "loss")

    def __init__(
        self,
        tokenizer: Any,
        prompt_field: str = "prompt",
        completion_field: str = "completion",
        max_length: int = 512,
        measurement: str | None = None,
    ) -> None:
        super().__init__(measurement)
        self.tokenizer = tokenizer
        self.prompt_field = prompt_field
        self.completion_field = completion_field
        self.max_length = _check_max_length(max_length)
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        if pad is None:
            raise InputError("the tokenizer has neither a pad nor an eos token to pad with")
        self.pad_token_id = int(pad)

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows: list[tuple[list[int], int]] = []
        for i, ex in enumerate(examples):
            prompt = self.tokenizer(_text(ex, self.prompt_field, i), add_special_tokens=False)
            completion = self.tokenizer(
                _text(ex, self.completion_field, i), add_special_tokens=False
            )
            ids = (list(prompt["input_ids"]) + list(completion["input_ids"]))[: self.max_length]
            n_prompt = len(prompt["input_ids"])
            if len(ids) <= max(n_prompt, 1):
                raise InputError(
                    f"example {i} has no completion tokens within max_length={self.max_length} "
                    f"(prompt is {n_prompt} tokens)"
                )
            rows.append((ids, n_prompt))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, n_prompt : len(ids)] = torch.as_tensor(ids[n_prompt:])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _token_nll(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL of the completion tokens (of tokens drawn from the model at those
        positions when ``generator`` is given) and the number of scored tokens per example."""
        logits = model(**model_inputs(batch)).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        scored = targets != -100
        if generator is not None:
            targets = torch.where(scored, sample_labels(logits, generator), targets)
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.clamp_min(0).reshape(-1),
            reduction="none",
        ).reshape(targets.shape)
        return nll * scored, scored.sum(dim=1)

    def train_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        nll, n_tokens = self._token_nll(model, batch)
        return nll.sum(dim=1) / n_tokens.clamp_min(1)

    def sampled_loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> torch.Tensor:
        nll, n_tokens = self._token_nll(model, batch, generator)
        return nll.sum(dim=1) / n_tokens.clamp_min(1)

    def measurement(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if self.measurement_name == "logprob":
            nll, _ = self._token_nll(model, batch)
            return nll.sum(dim=1)
        return self.train_loss(model, batch)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "prompt_field": self.prompt_field,
            "completion_field": self.completion_field,
            "max_length": self.max_length,
        }
