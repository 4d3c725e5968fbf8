"""A library-neutral view of a fitted gradient-boosted classifier: what influence needs, no more.

Each tree adds one leaf value to one raw output (the logit for binary, a class's score for
multiclass); trees are ordered iteration-major (iteration ``t``, output ``k`` is tree
``t * n_outputs + k``), as scikit-learn, LightGBM and XGBoost all store them. Leaf values include
the learning rate. ``apply`` maps feature rows to the leaf each tree sends them to, with the
library's own split semantics (thresholds, missing values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from infscope.errors import InputError


@dataclass(frozen=True)
class TreeEnsemble:
    """A fitted boosted classifier as leaf tables plus the settings its leaf values follow from.

    ``leaf_values[t][leaf]``: tree ``t``'s value at leaf id ``leaf`` (NaN at ids that are not
    leaves); ``init_score``: the raw score before the first tree, one per output, or ``None`` when
    the library fitted it to the training labels and folded it into the first iteration's leaves
    (:meth:`with_labels` takes it out); ``classes``: the label of each class index, if known;
    ``learning_rate`` and ``l2``: leaf value ``= -learning_rate * G / (H + l2)`` over the gradients
    ``G`` and hessians ``H`` of the training examples in the leaf; ``hessian_scale``: the factor the
    library multiplies softmax hessians by (LightGBM ``K/(K-1)``, XGBoost 2; 1 for binary).
    """

    library: str
    apply: Callable[[np.ndarray], np.ndarray]
    leaf_values: list[np.ndarray]
    n_outputs: int
    init_score: np.ndarray | None
    learning_rate: float
    l2: float
    hessian_scale: float = 1.0
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n_outputs < 1 or len(self.leaf_values) % self.n_outputs:
            raise InputError(
                f"{len(self.leaf_values)} trees do not split into iterations of "
                f"{self.n_outputs} output(s)"
            )
        if self.init_score is not None and np.shape(self.init_score) != (self.n_outputs,):
            raise InputError(f"init_score must have {self.n_outputs} value(s)")
        if not self.learning_rate > 0 or self.l2 < 0:
            raise InputError(
                f"need learning_rate > 0 and l2 >= 0, got {self.learning_rate}, {self.l2}"
            )

    @property
    def n_trees(self) -> int:
        return len(self.leaf_values)

    @property
    def n_classes(self) -> int:
        """Classes the model predicts (a binary model has one output and two classes)."""
        return 2 if self.n_outputs == 1 else self.n_outputs

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Class indices ``0..n_classes-1`` of ``labels`` (mapped through :attr:`classes`)."""
        y = np.asarray(labels)
        if self.classes is None:
            return y
        index = np.searchsorted(self.classes, y)
        index = np.clip(index, 0, len(self.classes) - 1)
        if not np.array_equal(self.classes[index], y):
            raise InputError(f"labels outside the model's classes {self.classes.tolist()}")
        return index

    def with_labels(self, labels: np.ndarray) -> TreeEnsemble:
        """This ensemble with its initial score fixed: when it was fitted to the training labels
        (``init_score is None``), the log-odds or log class shares of ``labels`` (class indices),
        taken out of the first iteration's leaf values."""
        if self.init_score is not None:
            return self
        y = np.asarray(labels, dtype=np.int64)
        eps = 1e-15
        if self.n_outputs == 1:
            p = np.clip(y.mean(), eps, 1 - eps)
            init = np.array([np.log(p / (1 - p))])
        else:
            init = np.log(np.maximum(np.bincount(y, minlength=self.n_outputs) / y.size, eps))
        tables = list(self.leaf_values)
        for k in range(self.n_outputs):
            tables[k] = tables[k] - init[k]
        return replace(self, leaf_values=tables, init_score=init)

    def leaves(self, features: np.ndarray) -> np.ndarray:
        """``[n, n_trees]`` leaf ids of every row in every tree (checked against the tables)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise InputError(f"features must be a 2-D array, got shape {x.shape}")
        ids = np.asarray(self.apply(x), dtype=np.int64)
        if ids.shape != (x.shape[0], self.n_trees):
            raise InputError(
                f"leaf ids of shape {ids.shape}, expected {(x.shape[0], self.n_trees)}"
            )
        for t, table in enumerate(self.leaf_values):
            column = ids[:, t]
            if column.size and (
                column.min() < 0 or column.max() >= len(table) or np.isnan(table[column]).any()
            ):
                raise InputError(f"tree {t} sent a row to an id that is not one of its leaves")
        return ids

    def tree_values(self, leaves: np.ndarray) -> np.ndarray:
        """``[n, n_trees]`` value each tree adds for rows with these ``leaves``."""
        return np.stack([table[leaves[:, t]] for t, table in enumerate(self.leaf_values)], axis=1)

    def staged_raw(self, leaves: np.ndarray) -> np.ndarray:
        """``[n, n_iterations + 1, n_outputs]`` raw scores before each iteration and after the
        last (``[:, -1]`` is the model's decision function)."""
        n = leaves.shape[0]
        steps = self.tree_values(leaves).reshape(n, -1, self.n_outputs)
        if self.init_score is None:
            raise InputError("the initial score is fitted to the labels: call with_labels first")
        start = np.broadcast_to(self.init_score, (n, 1, self.n_outputs))
        return np.cumsum(np.concatenate([start, steps], axis=1), axis=1)

    def offsets(self) -> np.ndarray:
        """Start of each tree's leaf ids in one global (tree, leaf) numbering."""
        sizes = np.array([len(table) for table in self.leaf_values], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(sizes)])
