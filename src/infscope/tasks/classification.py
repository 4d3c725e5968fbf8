"""Built-in tasks for any ``nn.Module`` that maps inputs to logits or predictions."""

from __future__ import annotations

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


def _inputs_and_targets(batch: Batch) -> tuple[Any, torch.Tensor]:
    """Accept ``(inputs, targets)`` pairs or ``{"inputs": ..., "labels"/"targets": ...}`` dicts."""
    if isinstance(batch, dict):
        targets = batch.get("labels", batch.get("targets"))
        if "inputs" not in batch or targets is None:
            raise InputError(
                f"a dict batch needs 'inputs' and 'labels' (or 'targets') keys, got {sorted(batch)}"
            )
        return batch["inputs"], targets
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise InputError(
        f"expected a batch (inputs, targets) or a dict with 'inputs' and 'labels', got {type(batch)}"
    )


class ClassificationTask(Task):
    """Cross-entropy classification: ``model(inputs)`` returns logits ``[batch, classes]``.

    Measurements: ``"loss"`` (cross-entropy), ``"margin"`` (negative correct-class margin) or
    ``"logit"`` (negative label logit).
    """

    measurements = CLASSIFICATION_MEASUREMENTS

    def _logits_and_labels(
        self, model: nn.Module, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = _inputs_and_targets(batch)
        logits = model(inputs)
        if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
            raise InputError(
                f"ClassificationTask expects logits [batch, classes] and labels [batch]; got "
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
            )
        n_classes = logits.shape[1]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise InputError(
                f"labels must lie in [0, {n_classes - 1}] for a model with {n_classes} outputs; "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        return logits, labels.long()

    def train_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits, labels = self._logits_and_labels(model, batch)
        return F.cross_entropy(logits, labels, reduction="none")

    def predicted_labels(self, output: Any) -> torch.Tensor | None:
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            return output.argmax(dim=1)
        return None

    def measurement(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return classification_measurement(
            self.measurement_name, *self._logits_and_labels(model, batch)
        )

    def sampled_loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> torch.Tensor:
        logits, _ = self._logits_and_labels(model, batch)
        return F.cross_entropy(logits, sample_labels(logits, generator), reduction="none")


class RegressionTask(Task):
    """Squared-error regression: per example ``0.5 * ||model(inputs) - targets||^2``."""

    def train_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = _inputs_and_targets(batch)
        predictions = model(inputs)
        if predictions.shape != targets.shape:
            predictions = (
                predictions.reshape(targets.shape)
                if predictions.numel() == targets.numel()
                else predictions
            )
        if predictions.shape != targets.shape:
            raise InputError(
                f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape"
            )
        residual = (predictions - targets.to(predictions.dtype)).reshape(targets.shape[0], -1)
        return 0.5 * residual.pow(2).sum(dim=1)

    def sampled_loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> torch.Tensor:
        """Targets drawn from the unit-variance Gaussian the squared error is the likelihood of."""
        inputs, targets = _inputs_and_targets(batch)
        predictions = model(inputs).reshape(targets.shape[0], -1)
        noise = torch.randn(predictions.shape, generator=generator, dtype=torch.float64)
        sampled = predictions.detach() + noise.to(predictions.device, predictions.dtype)
        return 0.5 * (predictions - sampled).pow(2).sum(dim=1)
