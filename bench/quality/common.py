"""What every benchmark task provides, and small shared helpers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infscope.data import ExampleSet
from infscope.gradients import ProjectionConfig
from infscope.tasks.base import Task


@dataclass
class Checkpoint:
    """A model state on the training trajectory, with the learning rate in effect (TracIn)."""

    name: str
    state: dict[str, torch.Tensor]
    learning_rate: float


@dataclass
class Split:
    """Tensors of one split. Classification: ``x`` inputs, ``y`` labels. Language modelling:
    ``x`` = (input_ids, attention_mask), ``y`` = token labels (-100 = not scored)."""

    x: Any
    y: torch.Tensor
    examples: ExampleSet  # what infscope's task collates (same order as the tensors)

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index) -> tuple:
        if isinstance(self.x, tuple):
            return (*(t[index] for t in self.x), self.y[index])
        return self.x[index], self.y[index]

    def subset(self, index: np.ndarray) -> Split:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        x = tuple(t[index] for t in self.x) if isinstance(self.x, tuple) else self.x[index]
        items = [self.examples[int(i)] for i in index]
        ids = tuple(self.examples.ids[int(i)] for i in index)
        return Split(x, self.y[index], ExampleSet(items, ids))


@dataclass
class BenchTask:
    """One benchmark task: data, model, training and what infscope needs to featurize it."""

    name: str
    description: str
    kind: str  # "classification" | "lm"
    train: Split
    queries: Split  # LDS queries
    heldout: Split  # held-out queries for damping selection
    make_model: Callable[[int], nn.Module]
    fit: Callable[..., list[Checkpoint]]  # fit(model, split, seed, checkpoints=bool) -> trajectory
    measure: Callable[[nn.Module, Split], np.ndarray]  # LDS ground-truth measurement (loss-like)
    infscope_task: Callable[[str], Task]  # measurement name -> Task
    projection: ProjectionConfig
    final_layer: str
    l2: float  # λ of the final layer's λ‖[W|b]‖² (representer points)
    n_classes: int = 0
    noisy_train: Split | None = None  # 10% flipped labels (classification)
    flipped: np.ndarray | None = None
    ensemble: int = 1  # independently trained models for TRAK ensembles
    hessian: bool = False  # exact model-Hessian influence is feasible
    settings: dict[str, Any] = field(default_factory=dict)
    anchor_batch: int = 64
    trak_dim: int = 512  # projection dimension for traker (and our TRAK where projected)

    def train_model(self, split: Split, seed: int, checkpoints: bool = False):
        model = self.make_model(seed)
        trajectory = self.fit(model, split, seed, checkpoints=checkpoints)
        return model, trajectory


def negative_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logsumexp(other logits) − logit[label]`` (infscope's "margin" measurement)."""
    correct = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return torch.logsumexp(others, dim=1) - correct


def classifier_measure(model: nn.Module, split: Split, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(split), batch):
            x, y = split.batch(slice(start, start + batch))
            out.append(negative_margin(model(x), y))
    return torch.cat(out).double().numpy()


def predict_proba(model: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [F.softmax(model(x[s : s + batch]), dim=1) for s in range(0, len(x), batch)]
        ).numpy()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})


def tensor_examples(x: torch.Tensor, y: torch.Tensor, prefix: str) -> ExampleSet:
    return ExampleSet(
        [(x[i], y[i]) for i in range(len(y))], [f"{prefix}{i}" for i in range(len(y))]
    )


def with_labels(split: Split, labels: np.ndarray, prefix: str) -> Split:
    y = torch.as_tensor(labels, dtype=torch.long)
    return Split(split.x, y, tensor_examples(split.x, y, prefix))
