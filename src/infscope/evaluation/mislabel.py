"""Mislabel detection: does self-influence rank the known-mislabeled examples first?

Higher self-influence = more suspicious (mislabeled examples are hard to fit, so their own
gradients are large and they strongly lower their own loss). Reports ROC AUC and average precision
(scikit-learn) and, for each inspection budget ``f``, the fraction of all mislabeled examples found
among the ``round(f * n)`` highest-ranked examples, at least one (recall at that budget; a random
ranking finds ``f`` on average). Ties keep the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from infscope.attribution.scores import SelfInfluence
from infscope.data import ExampleSet, positions
from infscope.errors import InputError

#: how a data file may write a mislabeled flag (besides JSON booleans and 0/1)
TRUE = frozenset({"1", "true", "yes", "y", "t"})
FALSE = frozenset({"0", "false", "no", "n", "f", ""})


@dataclass(frozen=True)
class MislabelReport:
    """``auc``: chance a random mislabeled example outranks a random clean one (0.5 = random).
    ``average_precision``: random = ``n_mislabeled / n``. ``found_at[f]``: recall in the top f."""

    auc: float
    average_precision: float
    found_at: dict[float, float]
    n_mislabeled: int
    n: int

    def to_dict(self) -> dict[str, object]:
        return {
            "auc": self.auc,
            "average_precision": self.average_precision,
            "found_at": {str(f): v for f, v in self.found_at.items()},
            "n_mislabeled": self.n_mislabeled,
            "n": self.n,
        }


def _as_flags(is_mislabeled: np.ndarray | Sequence[bool]) -> np.ndarray:
    flags = np.asarray(is_mislabeled)
    if flags.ndim != 1:
        raise InputError(f"is_mislabeled must be 1-D, got shape {flags.shape}")
    if flags.dtype != bool:
        if flags.size and not (
            np.issubdtype(flags.dtype, np.number) and np.isin(flags, (0, 1)).all()
        ):
            raise InputError(f"is_mislabeled must be booleans (or 0/1), got dtype {flags.dtype}")
        flags = flags.astype(bool)
    return flags


def mislabel_detection(
    self_influence: np.ndarray | SelfInfluence,
    is_mislabeled: np.ndarray | Sequence[bool],
    fractions: Sequence[float] = (0.05, 0.1, 0.2),
) -> MislabelReport:
    """Score a ranking against known mislabeled examples (same order): high values first, of a
    :class:`SelfInfluence` in its recorded direction (:meth:`SelfInfluence.oriented`: AUM or
    confidence, where low means suspicious, are negated)."""
    if isinstance(self_influence, SelfInfluence):
        self_influence = self_influence.oriented()
    raw = self_influence.values if isinstance(self_influence, SelfInfluence) else self_influence
    values = np.asarray(raw, dtype=np.float64)
    if values.ndim != 1:
        raise InputError(f"self-influence must be 1-D (one value per example), got {values.shape}")
    flags = _as_flags(is_mislabeled)
    if values.shape[0] != flags.shape[0]:
        raise InputError(
            f"{values.shape[0]} self-influence values but {flags.shape[0]} is_mislabeled flags"
        )
    if not np.isfinite(values).all():
        raise InputError(
            f"self-influence holds {int((~np.isfinite(values)).sum())} non-finite values"
        )
    n_bad = int(flags.sum())
    if n_bad == 0:
        raise InputError("no example is marked mislabeled: AUC and precision are undefined")
    if n_bad == flags.size:
        raise InputError("every example is marked mislabeled: AUC and precision are undefined")
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise InputError(f"fractions must be in (0, 1], got {f}")
    ranking = np.argsort(-values, kind="stable")
    found_at = {
        float(f): float(flags[ranking[: max(1, int(round(f * values.size)))]].sum() / n_bad)
        for f in fractions
    }
    return MislabelReport(
        auc=float(roc_auc_score(flags, values)),
        average_precision=float(average_precision_score(flags, values)),
        found_at=found_at,
        n_mislabeled=n_bad,
        n=int(values.size),
    )


def _flag(value: Any, example_id: str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise InputError(f"example {example_id!r}: {field}={value!r} is not a boolean")


def mislabel_flags(
    train_ids: Sequence[str],
    *,
    data: str | Path | None = None,
    field: str = "is_mislabeled",
    mislabeled_ids: str | Path | None = None,
) -> list[bool]:
    """Which of ``train_ids`` are known mislabeled, joined by id: the boolean ``field`` of each
    one's record in the ``data`` file, or membership in ``mislabeled_ids`` (a file of one id per
    line, every one a training id). Give exactly one of the two."""
    if (data is None) == (mislabeled_ids is None):
        raise InputError("give exactly one of data and mislabeled_ids")
    if data is not None:
        values = ExampleSet.from_file(data).column(
            field, train_ids, str(data), "training ids of the scores"
        )
        flags = [_flag(v, i, field) for v, i in zip(values, train_ids)]
        if 2 * sum(flags) > len(flags):
            raise InputError(
                f"{data}: {field!r} marks {sum(flags)} of {len(flags)} examples as mislabeled; "
                "mislabel flags mark a minority, so this looks like a label column: give the "
                "boolean field that marks the mislabeled examples"
            )
        return flags
    try:
        text = Path(mislabeled_ids).read_text()  # type: ignore[arg-type]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {mislabeled_ids}: {err}") from None
    listed = [line.strip() for line in text.splitlines() if line.strip()]
    positions(listed, train_ids, "the training ids of the scores", f"ids in {mislabeled_ids}")
    chosen = set(listed)
    return [i in chosen for i in train_ids]
