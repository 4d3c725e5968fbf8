"""From scores to a dataset: selectors that pick a training subset under a budget.

Every strategy is a :class:`Selector` reading a :class:`Pool` and returning a :class:`Selection`
(ids, weights, order and a reason per pick), ready to write out as jsonl or a
``datasets.Dataset``.
"""

from infscope.selection.bandit import ClusterBandit, cluster_features
from infscope.selection.base import Pool, Selection, Selector, resolve_budget
from infscope.selection.basic import RandomSelection, SoftmaxSampling, Stratified, TopK
from infscope.selection.targeted import BIDS, LESS, normalize_instances

__all__ = [
    "BIDS",
    "LESS",
    "ClusterBandit",
    "Pool",
    "RandomSelection",
    "Selection",
    "Selector",
    "SoftmaxSampling",
    "Stratified",
    "TopK",
    "cluster_features",
    "normalize_instances",
    "resolve_budget",
]
