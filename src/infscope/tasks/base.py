"""The Task contract: what is differentiated for training examples and for queries.

A :class:`Task` tells infscope two things about a model, in the manner of kronfluence's ``Task``:

* :meth:`Task.train_loss` — the per-example training loss whose gradient is a training example's
  feature;
* :meth:`Task.measurement` — the per-example quantity explained for a query.

**Measurements are loss-like: lower is better.** The built-ins provide the query loss, the negative
correct-class margin and the negative log-probability of a completion. With that one rule every
estimator shares one sign convention: a positive score means training on the example *lowers* the
query's measurement, i.e. the example helps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from infscope.errors import InputError

Batch = Any


class Task(ABC):
    """How to get per-example losses and measurements from a model and a batch."""

    #: Names of the measurements :meth:`measurement` supports (first is the default).
    measurements: tuple[str, ...] = ("loss",)

    def __init__(self, measurement: str | None = None) -> None:
        measurement = measurement or self.measurements[0]
        if measurement not in self.measurements:
            raise InputError(
                f"unknown measurement {measurement!r} for {type(self).__name__}; "
                f"choose one of {list(self.measurements)}"
            )
        self.measurement_name = measurement

    def collate(self, examples: Sequence[Any]) -> Batch:
        """Turn a list of dataset items into a batch (default: ``torch.utils.data.default_collate``)."""
        return default_collate(list(examples))

    @abstractmethod
    def train_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-example training loss, shape ``[batch_size]``."""

    def measurement(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-example loss-like measurement for queries, shape ``[batch_size]`` (default: the loss)."""
        return self.train_loss(model, batch)

    def sampled_loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-example training loss with the targets drawn from the model's own predictive
        distribution (``generator`` on the CPU): its gradients give the *true* Fisher, where the
        observed targets give the empirical one. Built-in tasks implement it."""
        raise InputError(
            f"{type(self).__name__} cannot sample targets from the model: implement "
            f"sampled_loss(model, batch, generator) for the true Fisher, or use the empirical one"
        )

    def predicted_labels(self, output: Any) -> torch.Tensor | None:
        """The label the model predicts for each example, from ``output`` — what the model
        returned in the pass that computed the loss — recorded beside the features (shown by
        ``infscope top``); ``None`` (the default) for tasks that predict no labels."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description recorded with extracted features."""
        return {"task": type(self).__name__, "measurement": self.measurement_name}


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def sample_labels(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One label per row of ``logits [..., classes]`` drawn from ``softmax(logits)`` (on the CPU,
    so that a seeded ``generator`` gives the same draw on any device)."""
    probabilities = torch.softmax(logits.detach().double().cpu(), dim=-1)
    flat = probabilities.reshape(-1, probabilities.shape[-1])
    drawn = torch.multinomial(flat, 1, generator=generator).reshape(probabilities.shape[:-1])
    return drawn.to(logits.device)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative correct-class margin: ``logsumexp(other logits) - logit[label]`` per row.

    Lower is better, as for every measurement; it is the margin used by kronfluence and TRAK with the
    sign flipped.
    """
    correct = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(others, dim=-1) - correct


#: Measurements of classifiers (all loss-like): cross-entropy, negative margin, negative logit.
CLASSIFICATION_MEASUREMENTS = ("loss", "margin", "logit")


def classification_measurement(
    name: str, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """A classifier's per-example measurement: ``"loss"`` (cross-entropy), ``"margin"`` (see
    :func:`margin_loss`) or ``"logit"`` (``-logit[label]``, what representer points explain)."""
    if name == "margin":
        return margin_loss(logits, labels)
    if name == "logit":
        return -logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")
