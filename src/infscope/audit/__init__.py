"""Find mislabeled training examples and explain them: out-of-fold probabilities (K-fold
retraining), their training dynamics and neighbour votes, combined; duplicates with conflicting
labels. ``cleanlab`` (the ``audit`` extra) supplies the confident-learning joint."""

from infscope.audit.core import AuditConfig, audit, dynamics_evidence
from infscope.audit.dataset import audit_examples, load_rows, record_labels, record_texts
from infscope.audit.diagnostics import EvidenceCheck, check_evidence
from infscope.audit.duplicates import DuplicateGroup, find_duplicates
from infscope.audit.evidence import (
    Neighbours,
    NoiseStructure,
    label_suspicion,
    nearest,
    neighbour_votes,
    noise_structure,
    stack_weights,
)
from infscope.audit.kfold import FitPredict, FoldRun, OutOfFold, cross_validate
from infscope.audit.probe import ProbeConfig, probe_fit_predict, train_probe
from infscope.audit.result import AuditResult

__all__ = [
    "AuditConfig",
    "AuditResult",
    "DuplicateGroup",
    "EvidenceCheck",
    "FitPredict",
    "FoldRun",
    "Neighbours",
    "NoiseStructure",
    "OutOfFold",
    "ProbeConfig",
    "audit",
    "audit_examples",
    "check_evidence",
    "cross_validate",
    "dynamics_evidence",
    "find_duplicates",
    "label_suspicion",
    "load_rows",
    "nearest",
    "neighbour_votes",
    "noise_structure",
    "probe_fit_predict",
    "record_labels",
    "record_texts",
    "stack_weights",
    "train_probe",
]
