"""Unlearning by name, and the losses that show what was forgotten: what ``infscope unlearn`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.gradients.losses import per_example_losses
from infscope.tasks import Task
from infscope.unlearning.gradient_steps import GradientConfig, ascent_unlearn, finetune_unlearn
from infscope.unlearning.newton import NewtonConfig, newton_unlearn
from infscope.unlearning.result import Unlearned
from infscope.unlearning.split import ForgetSplit

#: the unlearning methods by name
METHODS = ("newton", "finetune", "ascent")


def unlearn(
    model: nn.Module,
    task: Task,
    data: ExampleSet,
    forget_ids: Sequence[str],
    method: str = "newton",
    *,
    newton: NewtonConfig | None = None,
    gradient: GradientConfig | None = None,
    modules: Sequence[str] | None = None,
    progress: bool = False,
) -> Unlearned:
    """Remove the forget set's effect by ``method``: ``"newton"`` (:func:`newton_unlearn` with
    ``newton``), ``"finetune"`` or ``"ascent"`` (with ``gradient``'s steps). ``progress``: bars
    of the conjugate-gradient solves and the gradient steps."""
    if method not in METHODS:
        raise InputError(f"unknown unlearning method {method!r}; choose from {METHODS}")
    if method == "newton":
        config = newton or NewtonConfig()
        return newton_unlearn(model, task, data, forget_ids, config, modules, progress=progress)
    run = finetune_unlearn if method == "finetune" else ascent_unlearn
    config = gradient or GradientConfig()
    return run(model, task, data, forget_ids, config, modules, progress=progress)


def mean_losses(
    before: nn.Module, after: nn.Module, task: Task, split: ForgetSplit, batch_size: int = 256
) -> dict[str, float]:
    """Mean training loss on the forget set and on the rest, before and after unlearning
    (``forget_before``, ``rest_before``, ``forget_after``, ``rest_after``)."""
    losses = {}
    for name, model in (("before", before), ("after", after)):
        for part in ("forget", "rest"):
            values = per_example_losses(model, task, getattr(split, part), batch_size)
            losses[f"{part}_{name}"] = float(values.mean())
    return losses
