"""Exact and near duplicates, and duplicates whose labels disagree.

Exact duplicates share their text after Unicode (NFKC) normalisation, case folding and whitespace
collapsing. Near duplicates have a cosine similarity of at least ``threshold`` in the given
features (among each example's nearest neighbours). Pairs are joined into groups (connected
components); a group *conflicts* when its members carry more than one label — at least one of
them is then mislabeled, or the task is ambiguous for that text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError


@dataclass(frozen=True)
class DuplicateGroup:
    """Positions of the members, ``kind`` ``"exact"`` or ``"near"`` (near if any link is only
    near), the labels they carry and whether those disagree."""

    members: tuple[int, ...]
    kind: str
    labels: tuple[int, ...]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1

    def to_dict(self) -> dict[str, object]:
        return {
            "members": list(self.members),
            "kind": self.kind,
            "labels": list(self.labels),
            "conflicting": self.conflicting,
        }


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def find_duplicates(
    labels: np.ndarray | Sequence[int],
    texts: Sequence[str] | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    threshold: float = 0.95,
) -> list[DuplicateGroup]:
    """Duplicate groups (largest first) from exact ``texts`` matches and from ``neighbours``
    ``(index, similarity)`` (as :func:`~infscope.audit.evidence.nearest` returns) at or above
    ``threshold``."""
    y = np.asarray(labels)
    n = y.size
    if texts is not None and len(texts) != n:
        raise InputError(f"{len(texts)} texts for {n} labels")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must lie in (0, 1], got {threshold}")
    parent = list(range(n))
    exact_root: dict[str, int] = {}
    near_links: list[tuple[int, int]] = []
    if texts is not None:
        for i, text in enumerate(texts):
            key = normalize_text(str(text))
            if key in exact_root:
                parent[_find(parent, i)] = _find(parent, exact_root[key])
            else:
                exact_root[key] = i
    if neighbours is not None:
        index, similarity = neighbours
        rows, cols = np.nonzero(similarity >= threshold)
        for i, j in zip(rows.tolist(), index[rows, cols].tolist()):
            a, b = _find(parent, i), _find(parent, j)
            if a != b:
                near_links.append((i, j))
                parent[a] = b
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(_find(parent, i), []).append(i)
    near_roots = {_find(parent, i) for i, _ in near_links}
    out = [
        DuplicateGroup(
            tuple(members),
            "near" if root in near_roots else "exact",
            tuple(int(y[m]) for m in members),
        )
        for root, members in groups.items()
        if len(members) > 1
    ]
    return sorted(out, key=lambda g: (-g.conflicting, -len(g.members), g.members[0]))
