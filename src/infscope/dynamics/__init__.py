"""Training dynamics: record per-example loss, probabilities, margins, correctness and last-layer
gradient norms during training (plain loop or Hugging Face ``Trainer``), and turn them into
per-example scores — data maps, EL2N, GraNd, forgetting events, AUM, VoG — each optionally
normalised within classes.

``DynamicsCallback`` and ``IdCollator`` need ``transformers`` and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from infscope.dynamics.arrays import DynamicsArrays, last_layer_grad_norm, per_example_dynamics
from infscope.dynamics.recorder import DynamicsRecorder
from infscope.dynamics.saving import PRUNING_SCORES, save_scores
from infscope.dynamics.scores import (
    NORMALIZE_METHODS,
    SCORES,
    aum,
    class_normalize,
    compute_score,
    confidence,
    correctness,
    data_map,
    el2n,
    forgetting_events,
    grand,
    hardness,
    mean_loss,
    seed_average,
    self_influence_score,
    variability,
)
from infscope.dynamics.vog import input_gradients, vog, vog_from_checkpoints

__all__ = [
    "NORMALIZE_METHODS",
    "PRUNING_SCORES",
    "SCORES",
    "DynamicsArrays",
    "DynamicsCallback",
    "DynamicsRecorder",
    "IdCollator",
    "aum",
    "class_normalize",
    "compute_score",
    "confidence",
    "correctness",
    "data_map",
    "el2n",
    "forgetting_events",
    "grand",
    "hardness",
    "input_gradients",
    "last_layer_grad_norm",
    "mean_loss",
    "per_example_dynamics",
    "save_scores",
    "seed_average",
    "self_influence_score",
    "variability",
    "vog",
    "vog_from_checkpoints",
]


def __getattr__(name: str) -> Any:
    if name in ("DynamicsCallback", "IdCollator"):
        from infscope.dynamics import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'infscope.dynamics' has no attribute {name!r}")
