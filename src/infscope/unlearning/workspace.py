"""The copy of the model an unlearning method updates, and which of its parameters it may move.

Every method works on a deep copy, so the caller's model is never changed; the parameters it moves
are those of the tracked modules (``include`` patterns as in :func:`~infscope.gradients.
select_modules`: ``["classifier"]`` or ``["encoder.layer.5.*", "classifier"]`` restrict the
update to the top of a network), all others stay as trained.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from infscope.curvature.hessian import ModelHessian
from infscope.data import ExampleSet
from infscope.gradients import TrackedModule, select_modules
from infscope.tasks import Task
from infscope.unlearning.split import ForgetSplit, forget_split


@dataclass
class Workspace:
    """A model copy, its tracked modules and the forget/rest split of the training data."""

    model: nn.Module
    task: Task
    modules: list[TrackedModule]
    split: ForgetSplit
    batch_size: int

    @classmethod
    def create(
        cls,
        model: nn.Module,
        task: Task,
        data: ExampleSet,
        forget_ids: Sequence[str],
        modules: Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> Workspace:
        split = forget_split(data, forget_ids)
        work = copy.deepcopy(model)
        return cls(work, task, select_modules(work, include=modules), split, batch_size)

    def objective(self, part: str) -> ModelHessian:
        """The mean loss of ``part`` (``"rest"`` or ``"forget"``) over the tracked parameters at
        the copy's current weights: gradients, Hessian products, and writing new weights."""
        data = self.split.rest if part == "rest" else self.split.forget
        return ModelHessian(self.model, self.task, data, self.modules, batch_size=self.batch_size)

    def theta(self) -> np.ndarray:
        """The tracked parameters now, float64 in the Hessian's layout."""
        return self.objective("forget").theta.cpu().numpy()

    def describe(self) -> dict:
        return {
            "n_train": self.split.n_train,
            "n_forget": len(self.split.forget),
            "n_rest": len(self.split.rest),
            "modules": [m.name for m in self.modules],
            "n_params": int(sum(m.num_params for m in self.modules)),
        }
