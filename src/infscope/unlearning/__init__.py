"""Unlearning: remove the effect of a forget set from a trained model without retraining.

:func:`newton_unlearn` takes the influence (Newton) step on the remaining data's objective,
matrix-free, optionally iterated and followed by a gradient correction on the remaining data;
:func:`finetune_unlearn` and :func:`ascent_unlearn` are the first-order baselines. Every method
returns an :class:`Unlearned` copy; the caller's model is never changed. :mod:`.metrics` compares
the result with a model retrained without the forget set.
"""

from infscope.unlearning.gradient_steps import GradientConfig, ascent_unlearn, finetune_unlearn
from infscope.unlearning.metrics import agreement, loss_gap, parameter_distance
from infscope.unlearning.newton import FORMS, NewtonConfig, newton_unlearn
from infscope.unlearning.result import Unlearned
from infscope.unlearning.run import METHODS, mean_losses, unlearn
from infscope.unlearning.split import ForgetSplit, forget_split

__all__ = [
    "FORMS",
    "METHODS",
    "ForgetSplit",
    "GradientConfig",
    "NewtonConfig",
    "Unlearned",
    "agreement",
    "ascent_unlearn",
    "finetune_unlearn",
    "forget_split",
    "loss_gap",
    "mean_losses",
    "newton_unlearn",
    "parameter_distance",
    "unlearn",
]
