"""Per-example training losses of a model on a data set, without gradients.

What unlearning reports and verifies: the loss on the forget set against the loss on held-out data
(a membership-inference-style gap) before and after a model update.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.tasks.base import Task, to_device


def per_example_losses(
    model: nn.Module, task: Task, data: ExampleSet, batch_size: int = 256
) -> np.ndarray:
    """``task.train_loss`` of every example of ``data`` in eval mode, float64 ``[n]``."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                examples = [data[i] for i in range(start, min(start + batch_size, len(data)))]
                batch = to_device(task.collate(examples), device)
                out.append(task.train_loss(model, batch).detach().double().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()
