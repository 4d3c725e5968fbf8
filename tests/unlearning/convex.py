"""An L2-regularised multinomial logistic regression trained to its exact optimum (float64,
full-batch L-BFGS): the convex case where a Newton step should match retraining."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from infscope.data import ExampleSet
from infscope.tasks import ClassificationTask

N, D, C, WD = 240, 6, 3, 1e-2


def data(n: int = N, seed: int = 0) -> ExampleSet:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((C, D))
    labels = rng.integers(0, C, n)
    x = centres[labels] + 1.5 * rng.standard_normal((n, D))
    examples = [(torch.tensor(x[i]), torch.tensor(int(labels[i]))) for i in range(n)]
    return ExampleSet(examples, tuple(f"e{i}" for i in range(n)))


def fit(examples: ExampleSet, rows=None, seed: int = 0) -> nn.Module:
    """Minimise mean cross-entropy + (WD/2)‖θ‖² (weights and bias) over ``rows``."""
    rows = range(len(examples)) if rows is None else rows
    x = torch.stack([examples[i][0] for i in rows])
    y = torch.stack([examples[i][1] for i in rows])
    torch.manual_seed(seed)
    model = nn.Linear(D, C).double()
    optimiser = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss = loss + WD / 2 * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    optimiser.step(closure)
    return model


def flat(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().reshape(-1).numpy() for p in model.parameters()])


TASK = ClassificationTask()
