"""How close an unlearned model is to the model retrained without the forget set.

Pure functions of weights, predictions and losses (the passes that produce them are the caller's):

* relative parameter distance ``‖θ_u − θ_r‖ / ‖θ_o − θ_r‖`` — 0 is the retrained model, 1 is no
  closer than the original (doing nothing);
* prediction agreement — the share of examples on which two models predict the same label;
* the membership-inference-style loss gap — mean loss on the forget set minus mean loss on
  held-out data: a model that still remembers the forget set has a clearly negative gap, the
  retrained model's gap is the target (forgotten examples look like unseen ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from infscope.errors import InputError

Weights = Mapping[str, torch.Tensor]


def _flat(weights: Weights, names: Sequence[str]) -> np.ndarray:
    return np.concatenate([weights[n].detach().double().cpu().reshape(-1).numpy() for n in names])


def parameter_distance(
    unlearned: Weights, retrained: Weights, original: Weights, names: Sequence[str] | None = None
) -> float:
    """``‖θ_u − θ_r‖ / ‖θ_o − θ_r‖`` over the weights ``names`` (default: every floating-point
    weight the three share)."""
    if names is None:
        names = [
            n
            for n, v in retrained.items()
            if v.is_floating_point() and n in unlearned and n in original
        ]
    if not names:
        raise InputError("no weights to compare")
    u, r, o = (_flat(w, names) for w in (unlearned, retrained, original))
    if not (u.shape == r.shape == o.shape):
        raise InputError("the three models' weights differ in shape")
    reference = np.linalg.norm(o - r)
    if reference == 0:
        raise InputError("the original and retrained weights are equal: nothing to compare with")
    return float(np.linalg.norm(u - r) / reference)


def agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share of positions where two label arrays agree."""
    a, b = np.asarray(predicted), np.asarray(reference)
    if a.shape != b.shape or a.size == 0:
        raise InputError(f"label arrays of shapes {a.shape} and {b.shape} cannot be compared")
    return float((a == b).mean())


def loss_gap(forget_losses: np.ndarray, heldout_losses: np.ndarray) -> float:
    """Mean loss on the forget set minus mean loss on held-out data."""
    f, h = np.asarray(forget_losses, dtype=float), np.asarray(heldout_losses, dtype=float)
    if f.size == 0 or h.size == 0:
        raise InputError("the loss gap needs losses on both the forget set and held-out data")
    return float(f.mean() - h.mean())
