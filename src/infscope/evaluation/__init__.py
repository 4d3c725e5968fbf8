"""Evaluate attribution scores against ground truth: retraining (LDS, leave-one-out), known
mislabeled examples, and the time and memory each stage costs.

Sign convention: a positive score ``tau(q, z)`` means training example ``z`` lowers query ``q``'s
loss-like measurement. The datamodel prediction for a model trained on subset ``S`` is
``-sum_{z in S} tau(q, z)``; leave-one-out deltas ``m(without z) - m(all)`` should correlate
positively with ``tau(q, z)``.
"""

from infscope.evaluation.accounting import ResourceMeter, current_rss_mb
from infscope.evaluation.damping import DampingSelection, select_damping
from infscope.evaluation.lds import (
    LDSConfig,
    LDSDifference,
    LDSResult,
    lds_difference,
    lds_ground_truth,
    linear_datamodeling_score,
)
from infscope.evaluation.loo import LOOResult, leave_one_out, loo_correlation
from infscope.evaluation.mislabel import MislabelReport, mislabel_detection, mislabel_flags
from infscope.evaluation.noise import NOISE_MODELS, conflicting_duplicates, flip_labels
from infscope.evaluation.retraining import (
    RetrainingOutcomes,
    RetrainingRunner,
    TrainFn,
    leave_one_out_masks,
    random_subset_masks,
)

__all__ = [
    "NOISE_MODELS",
    "DampingSelection",
    "LDSConfig",
    "LDSDifference",
    "LDSResult",
    "LOOResult",
    "MislabelReport",
    "ResourceMeter",
    "RetrainingOutcomes",
    "RetrainingRunner",
    "TrainFn",
    "conflicting_duplicates",
    "current_rss_mb",
    "flip_labels",
    "lds_difference",
    "lds_ground_truth",
    "leave_one_out",
    "leave_one_out_masks",
    "linear_datamodeling_score",
    "loo_correlation",
    "mislabel_detection",
    "mislabel_flags",
    "random_subset_masks",
    "select_damping",
]
