"""First-order unlearning: fine-tuning on the remaining data and gradient ascent on the forget set.

Both are the usual baselines of influence-based unlearning, and the first also serves as the
gradient correction after a Newton step (:mod:`infscope.unlearning.newton`). A step is plain SGD
on the tracked parameters with minibatches drawn without replacement (seeded):

* fine-tuning: ``θ ← θ − lr (∇ mean_batch ℓ + weight_decay θ)`` on the remaining data;
* gradient ascent: ``θ ← θ + lr ∇ mean_batch ℓ`` on the forget set (no weight decay: it would pull
  every weight towards zero, which is not forgetting).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from infscope.curvature.hessian import ModelHessian
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.tasks import Task
from infscope.unlearning.result import Unlearned
from infscope.unlearning.workspace import Workspace


@dataclass(frozen=True)
class GradientConfig:
    """SGD settings of fine-tuning / gradient ascent (and of the Newton step's correction)."""

    steps: int = 50
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise InputError("steps must be >= 0 and batch_size >= 1")
        if not (np.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise InputError("lr must be positive and weight_decay >= 0")


def sgd_steps(
    objective: ModelHessian, config: GradientConfig, ascent: bool = False, progress: bool = False
) -> float:
    """Run ``config.steps`` SGD steps on ``objective`` (descent, or ascent) and write the result
    into its model; returns the mean minibatch loss of the last step. ``progress``: a bar of
    the steps."""
    rng = np.random.default_rng(config.seed)
    theta = objective.theta.cpu().numpy()
    n = objective.n_examples
    loss = float("nan")
    order = rng.permutation(n)
    cursor = 0
    label = "gradient ascent" if ascent else "SGD on the rest"
    for _ in tqdm(range(config.steps), desc=label, unit="step", disable=not progress):
        if cursor + min(config.batch_size, n) > n:
            order, cursor = rng.permutation(n), 0
        rows = order[cursor : cursor + config.batch_size]
        cursor += len(rows)
        loss, gradient = objective.gradient(rows=rows, theta=theta)
        if ascent:
            theta = theta + config.lr * gradient
        else:
            theta = theta - config.lr * (gradient + config.weight_decay * theta)
    if not np.isfinite(theta).all():
        raise InputError("the gradient steps diverged (non-finite weights): lower lr or steps")
    objective.assign(theta)
    return loss


def _run(
    method: str,
    model: nn.Module,
    task: Task,
    data: ExampleSet,
    forget_ids: Sequence[str],
    config: GradientConfig,
    modules: Sequence[str] | None,
    progress: bool,
) -> Unlearned:
    start = time.perf_counter()
    work = Workspace.create(model, task, data, forget_ids, modules, config.batch_size)
    before = work.theta()
    ascent = method == "ascent"
    objective = work.objective("forget" if ascent else "rest")
    last = sgd_steps(objective, config, ascent=ascent, progress=progress)
    info = {
        **work.describe(),
        "config": asdict(config),
        "last_batch_loss": last,
        "step_norm": float(np.linalg.norm(work.theta() - before)),
        "seconds": time.perf_counter() - start,
    }
    return Unlearned(work.model, method, info)


def finetune_unlearn(
    model: nn.Module,
    task: Task,
    data: ExampleSet,
    forget_ids: Sequence[str],
    config: GradientConfig = GradientConfig(),
    modules: Sequence[str] | None = None,
    progress: bool = False,
) -> Unlearned:
    """Baseline: ``config.steps`` SGD steps on the remaining data (the forget set is simply no
    longer seen). ``model`` is not changed; the result holds an updated copy. ``progress``: a
    bar of the steps."""
    return _run("finetune", model, task, data, forget_ids, config, modules, progress)


def ascent_unlearn(
    model: nn.Module,
    task: Task,
    data: ExampleSet,
    forget_ids: Sequence[str],
    config: GradientConfig = GradientConfig(),
    modules: Sequence[str] | None = None,
    progress: bool = False,
) -> Unlearned:
    """Baseline: ``config.steps`` steps of gradient *ascent* on the forget set's loss. It raises
    that loss without regard for the rest, so it over-forgets when run long; ``model`` is not
    changed. ``progress``: a bar of the steps."""
    return _run("ascent", model, task, data, forget_ids, config, modules, progress)
