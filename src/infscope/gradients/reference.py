"""Exact, slow references: per-example gradients by an autograd loop over examples.

These are what the fast paths are tested against; use them only on small models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from infscope.gradients.modules import TrackedModule
from infscope.tasks.base import Task, to_device


def per_example_gradients_loop(
    model: torch.nn.Module,
    task: Task,
    examples: Sequence[Any],
    modules: Sequence[TrackedModule],
    gradient: str = "loss",
) -> list[dict[str, dict[str, torch.Tensor]]]:
    """For each example, ``{module name: {param name: gradient}}`` from its own backward pass."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results = []
    try:
        for example in examples:
            batch = to_device(task.collate([example]), device)
            fn = task.train_loss if gradient == "loss" else task.measurement
            loss = fn(model, batch).sum()
            params = [(m.name, pname, p) for m in modules for pname, p in m.parameters().items()]
            grads = torch.autograd.grad(loss, [p for _, _, p in params], allow_unused=True)
            row: dict[str, dict[str, torch.Tensor]] = {}
            for (mname, pname, param), grad in zip(params, grads):
                row.setdefault(mname, {})[pname] = torch.zeros_like(param) if grad is None else grad
            results.append(row)
    finally:
        model.train(was_training)
    return results


def flatten_reference(
    reference: dict[str, dict[str, torch.Tensor]], modules: Sequence[TrackedModule]
) -> torch.Tensor:
    """One example's reference gradients in the identity projection's layout (module matrices)."""
    blocks = []
    for module in modules:
        params = reference[module.name]
        # ``split`` of the coordinate indices says where each parameter's entries live
        positions = module.split(torch.arange(module.num_params, dtype=torch.float64))
        flat = torch.zeros(module.num_params, dtype=params["weight"].dtype)
        for name, index in positions.items():
            flat[index.reshape(-1).long()] = params[name].reshape(-1).to(flat.dtype)
        blocks.append(flat)
    return torch.cat(blocks)
