"""Audit a dataset of records: labels, texts and arrays read and checked against the records.

The policy the command line and the Python API share: labels come from ``label_field`` (integer
class indices, or strings — then the classes are the sorted distinct strings unless
``class_names`` are given); texts from ``text_field`` when every record has one; per-example
arrays (``.npy``, rows in record order) must have one row per record. With features and no other
model, the default model is :func:`~infscope.audit.probe.probe_fit_predict`'s MLP probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infscope.attribution.scores import SelfInfluence
from infscope.audit.core import AuditConfig, audit
from infscope.audit.kfold import FitPredict
from infscope.audit.probe import ProbeConfig, probe_fit_predict
from infscope.audit.result import AuditResult
from infscope.data import ExampleSet
from infscope.errors import InputError


def record_labels(
    examples: ExampleSet, field: str = "label", class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels of the records and the class names (None for integer labels without
    ``class_names``)."""
    values = []
    for id_, record in zip(examples.ids, examples.examples):
        if not isinstance(record, dict) or record.get(field) is None:
            raise InputError(f"example {id_!r} has no {field!r} field")
        values.append(record[field])
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        labels = np.asarray(values, dtype=np.int64)
        if labels.min() < 0:
            raise InputError(f"{field!r} holds negative class indices")
        return labels, None if class_names is None else [str(c) for c in class_names]
    names = (
        [str(c) for c in class_names] if class_names is not None else sorted(map(str, set(values)))
    )
    index = {name: k for k, name in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise InputError(f"labels {unknown[:5]} are not among the class names")
    return np.array([index[str(v)] for v in values], dtype=np.int64), names


def record_texts(examples: ExampleSet, field: str | None = "text") -> list[str] | None:
    """The ``field`` of every record as text, or None when some record lacks it."""
    if field is None:
        return None
    texts = [r.get(field) if isinstance(r, dict) else None for r in examples.examples]
    return None if any(t is None for t in texts) else [str(t) for t in texts]


def load_rows(path: str | Path, n: int, name: str) -> np.ndarray:
    """A ``.npy`` array with one row per example (never unpickled)."""
    try:
        array = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read {name} ({err})") from None
    if array.ndim != 2 or array.shape[0] != n:
        raise InputError(
            f"{path}: {name} must have shape [{n}, ...] (one row per example), got {array.shape}"
        )
    return array


def audit_examples(
    examples: ExampleSet,
    *,
    label_field: str = "label",
    text_field: str | None = "text",
    class_names: Sequence[str] | None = None,
    features: np.ndarray | None = None,
    pred_probs: np.ndarray | None = None,
    fit_predict: FitPredict | None = None,
    probe: ProbeConfig | None = None,
    self_influence: SelfInfluence | None = None,
    config: AuditConfig | None = None,
) -> AuditResult:
    """:func:`~infscope.audit.audit` of records: with ``features`` and neither ``pred_probs`` nor
    ``fit_predict``, the K-fold model is the feature probe (``probe``, seeded by ``config.seed``)."""
    config = config or AuditConfig()
    labels, names = record_labels(examples, label_field, class_names)
    n_classes = len(names) if names is not None else int(labels.max()) + 1
    ids = list(examples.ids)
    settings = None
    if features is not None and pred_probs is None and fit_predict is None:
        settings = probe or ProbeConfig(seed=config.seed)
        fit_predict = probe_fit_predict(features, labels, n_classes, ids, settings)
    result = audit(
        labels,
        ids=ids,
        n_classes=n_classes,
        pred_probs=pred_probs,
        fit_predict=fit_predict,
        features=features,
        texts=record_texts(examples, text_field),
        self_influence=self_influence,
        class_names=names,
        config=config,
    )
    result.info["data"] = {"label_field": label_field, "text_field": text_field}
    if settings is not None:
        result.info["model"] = {"probe": settings.to_dict()}
    return result
