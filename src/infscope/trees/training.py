"""Deterministic boosted classifiers from the same settings in scikit-learn, LightGBM or XGBoost.

One settings object fits all three so a benchmark (or ``infscope trees``) compares like with like,
and every fit leaves out what would break the influence model's assumptions: no row subsampling,
no early stopping, no L1 penalty, a fixed seed, a given thread count. Leaf-wise growth with at most
``max_leaves`` leaves in every library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from infscope.errors import InputError

LIBRARIES: tuple[str, ...] = ("sklearn", "lightgbm", "xgboost")


@dataclass(frozen=True)
class TreeParams:
    """Boosting settings shared by the three libraries (``l2``: the leaf-value penalty lambda;
    ``min_leaf``: the fewest training examples in a leaf, which XGBoost cannot bound — it bounds
    the hessian sum by ``min_child_weight`` instead, set near zero)."""

    n_estimators: int = 100
    learning_rate: float = 0.1
    max_leaves: int = 8
    min_leaf: int = 5
    l2: float = 1.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.n_estimators < 1 or self.max_leaves < 2 or self.min_leaf < 1 or self.threads < 1:
            raise InputError(f"invalid tree settings {asdict(self)}")
        if not self.learning_rate > 0 or self.l2 < 0:
            raise InputError(f"need learning_rate > 0 and l2 >= 0: {asdict(self)}")


def fit_classifier(
    library: str,
    features: np.ndarray,
    labels: np.ndarray,
    params: TreeParams = TreeParams(),
    sample_weight: np.ndarray | None = None,
    seed: int = 0,
) -> Any:
    """A fitted classifier of ``library`` (``sklearn``, ``lightgbm`` or ``xgboost``) on
    ``features`` and integer ``labels``."""
    p = params
    if library == "sklearn":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model: Any = HistGradientBoostingClassifier(
            max_iter=p.n_estimators,
            learning_rate=p.learning_rate,
            max_leaf_nodes=p.max_leaves,
            min_samples_leaf=p.min_leaf,
            l2_regularization=p.l2,
            early_stopping=False,
            random_state=seed,
        )
    elif library == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(
            n_estimators=p.n_estimators,
            learning_rate=p.learning_rate,
            num_leaves=p.max_leaves,
            min_child_samples=p.min_leaf,
            min_child_weight=1e-6,
            reg_lambda=p.l2,
            n_jobs=p.threads,
            random_state=seed,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
    elif library == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=p.n_estimators,
            learning_rate=p.learning_rate,
            max_leaves=p.max_leaves,
            max_depth=0,
            grow_policy="lossguide",
            tree_method="hist",
            min_child_weight=1e-6,
            reg_lambda=p.l2,
            n_jobs=p.threads,
            random_state=seed,
        )
    else:
        raise InputError(f"library must be one of {LIBRARIES}, got {library!r}")
    return model.fit(np.asarray(features, dtype=np.float64), labels, sample_weight=sample_weight)
