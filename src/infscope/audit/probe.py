"""A ready training function for audits of fixed features (sentence embeddings, frozen encoder
outputs): a small MLP (or linear) classifier trained with AdamW, recording its training dynamics
and the held-out examples' logits after every epoch. The benchmark uses it as the shared model of
cleanlab and infscope.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infscope.audit.evidence import _labels
from infscope.audit.kfold import FoldRun
from infscope.dynamics import DynamicsRecorder
from infscope.errors import InputError


@dataclass(frozen=True)
class ProbeConfig:
    """``hidden=0`` gives a linear (softmax-regression) probe."""

    hidden: int = 256
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (("hidden", 0), ("epochs", 1), ("batch_size", 1)):
            if getattr(self, name) < least:
                raise InputError(
                    f"the probe's {name} must be at least {least}, got {getattr(self, name)}"
                )
        if not self.lr > 0 or self.weight_decay < 0:
            raise InputError(
                f"the probe needs lr > 0 and weight_decay >= 0, got {self.lr} and "
                f"{self.weight_decay}"
            )

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class Probe(nn.Module):
    def __init__(self, dim: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) if hidden else nn.Identity()
        self.classifier = nn.Linear(hidden or dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def train_probe(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: ProbeConfig = ProbeConfig(),
    seed: int | None = None,
    ids: list[str] | None = None,
    recorder: DynamicsRecorder | None = None,
    heldout: tuple[np.ndarray, np.ndarray, list[str], DynamicsRecorder] | None = None,
) -> Probe:
    """Train a fresh probe (seeded by ``seed``, default ``config.seed``); record each training
    forward into ``recorder`` (needs ``ids``) and, after every epoch, the logits of the
    ``heldout = (features, labels, ids, recorder)`` examples."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(_labels(labels, n_classes))
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InputError(f"features {tuple(x.shape)} do not match {y.shape[0]} labels")
    if recorder is not None and (ids is None or len(ids) != len(y)):
        raise InputError("recording the training dynamics needs one id per training example")
    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Probe(x.shape[1], n_classes, config.hidden)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            rows = order[start : start + config.batch_size]
            logits = model(x[rows])
            if recorder is not None:
                recorder.record([ids[int(r)] for r in rows], logits, y[rows], epoch)
            loss = F.cross_entropy(logits, y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if heldout is not None:
            hx, hy, hids, hrec = heldout
            hrec.record(hids, predict_logits(model, hx), hy, epoch)
    return model.eval()


def predict_logits(model: nn.Module, features: np.ndarray, batch: int = 4096) -> torch.Tensor:
    model.eval()
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch]) for s in range(0, len(x), batch)])


def predict_proba(model: nn.Module, features: np.ndarray) -> np.ndarray:
    return F.softmax(predict_logits(model, features), dim=1).double().numpy()


def probe_fit_predict(
    features: np.ndarray,
    labels: np.ndarray | list[int],
    n_classes: int,
    ids: list[str],
    config: ProbeConfig = ProbeConfig(),
):
    """A ``fit_predict`` for :func:`~infscope.audit.kfold.cross_validate`: fold ``f`` trains a
    probe seeded ``config.seed * 1000 + f`` and returns a :class:`FoldRun` with both recordings."""
    x = np.asarray(features, dtype=np.float32)
    y = _labels(labels, n_classes)

    def fit_predict(train_idx: np.ndarray, heldout_idx: np.ndarray, fold: int) -> FoldRun:
        train_rec, heldout_rec = DynamicsRecorder(), DynamicsRecorder()
        held_ids = [ids[i] for i in heldout_idx]
        model = train_probe(
            x[train_idx],
            y[train_idx],
            n_classes,
            config,
            seed=config.seed * 1000 + fold,
            ids=[ids[i] for i in train_idx],
            recorder=train_rec,
            heldout=(x[heldout_idx], y[heldout_idx], held_ids, heldout_rec),
        )
        return FoldRun(predict_proba(model, x[heldout_idx]), heldout_rec, train_rec)

    return fit_predict
