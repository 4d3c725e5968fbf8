"""Audit a dataset of records: labels, texts and arrays read and checked against the records.

The policy the command line and the Python API share: labels come from ``label_field`` (integer
class indices, or strings — then the classes are the sorted distinct strings unless
``class_names`` are given); texts from ``text_field`` when every record has one; per-example
arrays (``.npy``, rows in record order) must have one row per record. With features and no other
model, the default model is :func:`~infscope.audit.probe.probe_fit_predict`'s MLP probe.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infscope.attribution.scores import SelfInfluence
from infscope.audit.core import AuditConfig, audit
from infscope.audit.evidence import check_features
from infscope.audit.kfold import FitPredict
from infscope.audit.probe import ProbeConfig, probe_fit_predict
from infscope.audit.result import AuditResult
from infscope.data import ExampleSet
from infscope.errors import InfscopeWarning, InputError


def _check_inferred_classes(
    labels: np.ndarray, ids: Sequence[str], names: list[str] | None
) -> None:
    """Without given class names the classes are whatever the labels hold, so a typo becomes a
    class of its own: a label carried by one example is an error, classes without examples (gaps
    in integer labels) a warning. Given class names settle both."""
    counts = np.bincount(labels)
    single = np.flatnonzero(counts == 1)
    if single.size:
        k = int(single[0])
        where = ids[int(np.flatnonzero(labels == k)[0])]
        shown = names[k] if names is not None else k
        more = f" ({single.size - 1} more labels occur once)" if single.size > 1 else ""
        raise InputError(
            f"label {shown!r} occurs once (example {where!r}){more}: with no class names given it "
            f"would become a class of its own; correct it, or give the class names "
            f"(--class-names / class_names=) if it is a real class"
        )
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        shown = ", ".join(map(str, empty[:10].tolist())) + (", ..." if empty.size > 10 else "")
        warnings.warn(
            f"integer labels run from 0 to {counts.size - 1} but classes {shown} have no "
            f"examples; give the class names (--class-names / class_names=) to fix the class set",
            InfscopeWarning,
            stacklevel=3,
        )


def record_labels(
    examples: ExampleSet, field: str = "label", class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels of the records and the class names (None for integer labels without
    ``class_names``). Without ``class_names`` a label that only one record carries is an error
    (a typo would otherwise become a class; see :func:`_check_inferred_classes`)."""
    values = []
    for id_, record in zip(examples.ids, examples.examples):
        if not isinstance(record, dict) or record.get(field) is None:
            raise InputError(f"example {id_!r} has no {field!r} field")
        values.append(record[field])
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        labels = np.asarray(values, dtype=np.int64)
        if labels.min() < 0:
            raise InputError(f"{field!r} holds negative class indices")
        if class_names is None:
            _check_inferred_classes(labels, examples.ids, None)
            return labels, None
        if labels.max() >= len(class_names):
            row = int(labels.argmax())
            raise InputError(
                f"example {examples.ids[row]!r} has label {int(labels[row])}, outside the "
                f"{len(class_names)} class names"
            )
        return labels, [str(c) for c in class_names]
    names = (
        [str(c) for c in class_names] if class_names is not None else sorted(map(str, set(values)))
    )
    index = {name: k for k, name in enumerate(names)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        where = next(i for i, v in zip(examples.ids, values) if str(v) == unknown[0])
        raise InputError(
            f"labels {unknown[:5]} are not among the class names (first: example {where!r})"
        )
    labels = np.array([index[str(v)] for v in values], dtype=np.int64)
    if class_names is None:
        _check_inferred_classes(labels, examples.ids, names)
    return labels, names


def record_texts(examples: ExampleSet, field: str | None = "text") -> list[str] | None:
    """The ``field`` of every record as text, or None when some record lacks it."""
    if field is None:
        return None
    texts = [r.get(field) if isinstance(r, dict) else None for r in examples.examples]
    return None if any(t is None for t in texts) else [str(t) for t in texts]


def load_rows(path: str | Path, n: int, name: str, ids: Sequence[str] | None = None) -> np.ndarray:
    """A ``.npy`` array of finite numbers with one row per example (never unpickled); errors
    name the file and the first bad row (and its id, given ``ids``)."""
    try:
        array = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read {name} ({err})") from None
    if array.ndim != 2 or array.shape[0] != n:
        raise InputError(
            f"{path}: {name} must have shape [{n}, ...] (one row per example), got {array.shape}"
        )
    try:
        return check_features(array, n, ids, name)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


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
