"""Permissive label propagation: labels flow from a small labelled set to an unlabelled pool only
through the context examples that influence each prediction (a closed-form influence graph of an
L2 softmax regression), each propagated label with a confidence and its supporting examples."""

from infscope.propagation.influence_graph import (
    CURVATURES,
    permissive_vote,
    support_directions,
    support_matrix,
)
from infscope.propagation.propagator import UNLABELLED, InfluencePropagation, PropagationConfig
from infscope.propagation.softmax import SoftmaxHessian, SoftmaxRegression

__all__ = [
    "CURVATURES",
    "UNLABELLED",
    "InfluencePropagation",
    "PropagationConfig",
    "SoftmaxHessian",
    "SoftmaxRegression",
    "permissive_vote",
    "support_directions",
    "support_matrix",
]
