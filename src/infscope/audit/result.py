"""What an audit returns: one row per example, ranked by suspicion, with its explanation.

Saved as ``audit.json`` (ids, labels, texts, settings, duplicate groups) and ``arrays.npz``
(scores, class probabilities, evidence, explaining neighbours): JSON and NumPy without pickle,
each written atomically, the JSON last.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infscope.audit.duplicates import DuplicateGroup
from infscope.errors import InputError
from infscope.html import table
from infscope.io import write_atomic

FORMAT = "infscope.audit"
META_FILE = "audit.json"
ARRAYS_FILE = "arrays.npz"
_ARRAYS = (
    "labels",
    "suspicion",
    "suggested",
    "support",
    "probs",
    "flagged",
    "supporting",
    "contradicting",
)


@dataclass
class AuditResult:
    """Per example (rows follow ``ids``): the given label, ``suspicion`` in [0, 1] (high = likely
    mislabeled), the ``suggested`` label and its probability ``support``, the combined class
    probabilities ``probs``, whether it is ``flagged`` (among the estimated number of label
    errors), named ``evidence`` columns, and the positions of the training examples that
    ``supporting`` (carry the suggested label) and ``contradicting`` (carry the given label) it
    — its most similar other examples, -1 where there are fewer. ``duplicates``: duplicate groups.
    ``warnings``: why the evidence may be too weak to trust (empty when the checks pass; see
    :mod:`infscope.audit.diagnostics`).
    """

    ids: list[str]
    labels: np.ndarray
    suspicion: np.ndarray
    suggested: np.ndarray
    support: np.ndarray
    probs: np.ndarray
    flagged: np.ndarray
    supporting: np.ndarray
    contradicting: np.ndarray
    evidence: dict[str, np.ndarray] = field(default_factory=dict)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    class_names: list[str] | None = None
    texts: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in _ARRAYS:
            value = getattr(self, name)
            if len(value) != n:
                raise InputError(f"{name} has {len(value)} rows for {n} ids")
        for name, value in self.evidence.items():
            if len(value) != n:
                raise InputError(f"evidence {name!r} has {len(value)} rows for {n} ids")
        if self.texts is not None and len(self.texts) != n:
            raise InputError(f"{len(self.texts)} texts for {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    def ranking(self) -> np.ndarray:
        """Positions from most to least suspicious (ties keep the input order)."""
        return np.argsort(-self.suspicion, kind="stable")

    def flagged_ids(self) -> list[str]:
        """The ids of the flagged examples, in data order (e.g. to leave out of a selection:
        ``infscope select --exclude AUDIT_DIR``)."""
        return [self.ids[i] for i in np.flatnonzero(self.flagged)]

    def label_name(self, label: int) -> str:
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def duplicate_of(self) -> dict[int, int]:
        """Position -> index of its duplicate group in :attr:`duplicates`."""
        return {m: g for g, group in enumerate(self.duplicates) for m in group.members}

    def records(self, k: int | None = None) -> list[dict[str, Any]]:
        """One dict per example, most suspicious first (the top ``k``, or all)."""
        order = self.ranking()[: k if k is not None else len(self)]
        groups = self.duplicate_of()
        out = []
        for rank, i in enumerate(order.tolist()):
            row: dict[str, Any] = {
                "rank": rank + 1,
                "id": self.ids[i],
                "given": self.label_name(int(self.labels[i])),
                "suggested": self.label_name(int(self.suggested[i])),
                "suspicion": float(self.suspicion[i]),
                "support": float(self.support[i]),
                "flagged": bool(self.flagged[i]),
            }
            if self.texts is not None:
                row["text"] = self.texts[i]
            for name, values in self.evidence.items():
                row[name] = float(values[i])
            row["supporting"] = [self.ids[j] for j in self.supporting[i].tolist() if j >= 0]
            row["contradicting"] = [self.ids[j] for j in self.contradicting[i].tolist() if j >= 0]
            group = groups.get(i)
            row["duplicates"] = (
                ""
                if group is None
                else f"{self.duplicates[group].kind} group {group}"
                + (" (conflicting labels)" if self.duplicates[group].conflicting else "")
            )
            out.append(row)
        return out

    def to_pandas(self, k: int | None = None) -> Any:
        """:meth:`records` as a ``pandas.DataFrame`` indexed by id."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records(k)).set_index("id")

    def summary(self) -> str:
        conflicting = sum(g.conflicting for g in self.duplicates)
        caution = f" — {len(self.warnings)} warning(s): weak evidence" if self.warnings else ""
        return (
            f"audit of {len(self)} examples: {int(self.flagged.sum())} flagged as likely "
            f"mislabeled, {len(self.duplicates)} duplicate groups ({conflicting} with conflicting "
            f"labels){caution}"
        )

    def describe_ranking(self) -> str:
        """How the ranking was chosen: the noise structure's estimate, its uncertainty and β."""
        structure = self.info.get("noise_structure")
        if not structure:
            return ""
        from infscope.audit.evidence import NoiseStructure

        text = NoiseStructure(**structure).describe()
        if self.info.get("beta_source") == "config":
            text += f"; β = {self.info['beta']:g} given in the configuration"
        return text

    def _repr_html_(self) -> str:
        rows = self.records(20)
        columns = ["rank", "id", "given", "suggested", "suspicion", "support", "flagged"]
        if self.texts is not None:
            columns.append("text")
        return table(
            columns,
            [[r[c] for c in columns] for r in rows],
            caption=f"{self.summary()} — the 20 most suspicious",
        ) + "".join(f"<p><b>warning:</b> {html.escape(w)}</p>" for w in self.warnings)

    def save(self, directory: str | Path) -> Path:
        """Arrays first, then ``audit.json``: a crash never leaves a result that looks complete."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        arrays.update({f"evidence.{k}": np.asarray(v) for k, v in self.evidence.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(directory / ARRAYS_FILE, buffer.getvalue())
        meta = {
            "format": FORMAT,
            "ids": self.ids,
            "evidence": list(self.evidence),
            "duplicates": [g.to_dict() for g in self.duplicates],
            "class_names": self.class_names,
            "texts": self.texts,
            "info": self.info,
            "warnings": self.warnings,
        }
        text = json.dumps(meta, default=_json_default)
        write_atomic(directory / META_FILE, text.encode())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AuditResult:
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{directory} holds no readable audit ({err})") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"{directory}/{META_FILE} is not an infscope audit")
        evidence = {name: arrays[f"evidence.{name}"] for name in meta["evidence"]}
        groups = [
            DuplicateGroup(tuple(g["members"]), g["kind"], tuple(g["labels"]))
            for g in meta["duplicates"]
        ]
        return cls(
            ids=list(meta["ids"]),
            **{name: arrays[name] for name in _ARRAYS},
            evidence=evidence,
            duplicates=groups,
            class_names=meta["class_names"],
            texts=meta["texts"],
            info=meta["info"],
            warnings=list(meta.get("warnings", [])),
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
