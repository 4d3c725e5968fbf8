"""What a training step yields per example — loss, probabilities, margin, correctness, the final
layer's gradient norm — and the dense per-epoch arrays a :class:`~infscope.dynamics.recorder.
DynamicsRecorder` turns its records into (what every dynamics score reads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from infscope.errors import InputError

__all__ = [
    "DynamicsArrays",
    "EpochKey",
    "as_ids",
    "as_labels",
    "epoch_key",
    "last_layer_grad_norm",
    "per_example_dynamics",
]

#: Epoch (or checkpoint) keys: an integer epoch or a checkpoint name.
EpochKey = int | str


def epoch_key(epoch: Any) -> EpochKey:
    if isinstance(epoch, (bool, np.bool_)):
        raise InputError(f"epoch must be an int or a checkpoint name, got {epoch!r}")
    if isinstance(epoch, (int, np.integer)):
        return int(epoch)
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 and not epoch.is_floating_point():
        return int(epoch.item())
    if isinstance(epoch, str) and epoch:
        return epoch
    raise InputError(f"epoch must be an int or a non-empty checkpoint name, got {epoch!r}")


def as_ids(ids: Any, n: int | None = None) -> list[str]:
    """Example ids as strings (like :class:`~infscope.data.ExampleSet`); tensors and arrays too."""
    if isinstance(ids, (str, bytes)):
        raise InputError("ids must be a sequence of ids, not one string")
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        ids = ids.tolist()
    ids = list(ids)
    if any(i is None for i in ids):
        raise InputError("example ids must not be None")
    out = [str(i) for i in ids]
    if n is not None and len(out) != n:
        raise InputError(f"{len(out)} ids for a batch of {n} logits: they must match")
    return out


def as_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"labels must have shape ({n},) to match the logits, got {labels.shape}")
    if (
        labels.size
        and not np.issubdtype(labels.dtype, np.integer)
        and not np.all(np.equal(np.mod(labels, 1), 0))
    ):
        raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"labels must lie in [0, {num_classes - 1}] for {num_classes} classes; got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    return labels


def per_example_dynamics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss, probabilities, margin and correctness of each row (float64, on the logits' device)."""
    z = logits.detach().to(torch.float64)
    y = labels.to(z.device, torch.long).unsqueeze(1)
    z_y = z.gather(1, y).squeeze(1)
    others = z.scatter(1, y, float("-inf"))
    return {
        "loss": torch.logsumexp(z, dim=1) - z_y,
        "probs": torch.softmax(z, dim=1),
        "margin": z_y - others.max(dim=1).values,
        "correct": z.argmax(dim=1) == y.squeeze(1),
    }


def last_layer_grad_norm(
    probs: torch.Tensor, labels: torch.Tensor, features: torch.Tensor, bias: bool = True
) -> torch.Tensor:
    """``||p - onehot(y)|| * ||[h, 1]||``: the exact norm of each example's cross-entropy gradient
    with respect to a final linear layer's weight (and bias), given its input ``h`` ``[batch, d]``."""
    residual = probs.clone()
    residual[torch.arange(len(labels), device=probs.device), labels.to(probs.device)] -= 1.0
    h_sq = features.detach().to(probs.device, torch.float64).pow(2).sum(dim=1)
    return residual.norm(dim=1) * torch.sqrt(h_sq + (1.0 if bias else 0.0))


@dataclass
class DynamicsArrays:
    """Dense view of the records: rows follow ``ids``, columns follow ``epochs``.

    Missing records are NaN (``recorded`` says which are present); ``correct`` is 1.0/0.0/NaN;
    ``grad_norm`` is NaN where it was not recorded. ``labels[i]`` is example ``i``'s label.
    """

    ids: list[str]
    epochs: list[EpochKey]
    labels: np.ndarray  # [n] int64
    loss: np.ndarray  # [n, E]
    probs: np.ndarray  # [n, E, C]
    margin: np.ndarray  # [n, E]
    correct: np.ndarray  # [n, E] float: 1, 0 or NaN
    grad_norm: np.ndarray  # [n, E]
    recorded: np.ndarray  # [n, E] bool
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return len(self.ids)

    @property
    def n_epochs(self) -> int:
        return len(self.epochs)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[2])

    @property
    def correct_prob(self) -> np.ndarray:
        """``[n, E]`` probability of each example's label (NaN where not recorded)."""
        index = np.broadcast_to(self.labels[:, None, None], (*self.probs.shape[:2], 1))
        return np.take_along_axis(self.probs, index, axis=2)[:, :, 0]

    def epoch_index(self, epoch: EpochKey | None) -> int:
        """Column of ``epoch`` (``None``: the first epoch)."""
        if not self.epochs:
            raise InputError("there are no recorded epochs")
        if epoch is None:
            return 0
        key = epoch_key(epoch)
        if key not in self.epochs:
            raise InputError(f"epoch {key!r} was not recorded; recorded epochs: {self.epochs}")
        return self.epochs.index(key)

    def select_epochs(self, epochs: Sequence[EpochKey]) -> DynamicsArrays:
        """The same records restricted to (and ordered by) ``epochs``."""
        if isinstance(epochs, (str, int)):
            raise InputError("epochs must be a sequence of epoch keys")
        cols = [self.epoch_index(e) for e in epochs]
        if not cols:
            raise InputError("select at least one epoch")
        return DynamicsArrays(
            ids=list(self.ids),
            epochs=[self.epochs[c] for c in cols],
            labels=self.labels,
            loss=self.loss[:, cols],
            probs=self.probs[:, cols],
            margin=self.margin[:, cols],
            correct=self.correct[:, cols],
            grad_norm=self.grad_norm[:, cols],
            recorded=self.recorded[:, cols],
            metadata=dict(self.metadata),
        )

    def column(self, rows: np.ndarray, col: int) -> dict[str, np.ndarray]:
        """The values of ``rows`` at epoch column ``col``, as :meth:`DynamicsRecorder.record`
        takes them."""
        return {
            "loss": self.loss[rows, col],
            "probs": self.probs[rows, col],
            "margin": self.margin[rows, col],
            "correct": self.correct[rows, col].astype(bool),
            "grad_norm": self.grad_norm[rows, col],
        }
