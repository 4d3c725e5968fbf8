"""The selection vocabulary: a :class:`Pool` of candidates, a :class:`Selector` that picks from it
under a budget, and the :class:`Selection` it returns.

Every strategy reads what it needs from one :class:`Pool` (per-example scores, a query x train
influence matrix with the target task of each query row, features, tags, texts, target-side
features or texts) and says which fields it requires, so a missing input is a clear error at the
door rather than a shape error deep inside. Selections are deterministic given the selector's
``seed``, keep the order in which examples were picked, and say why each one was picked.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from infscope.errors import InfscopeWarning, InputError
from infscope.io import write_atomic
from infscope.plotting import saved_figure
from infscope.selection.balance import SKEW_MARGIN, label_skew
from infscope.selection.label_noise import noise_in_picks

FORMAT = "infscope.selection"
#: prefix of the columns a selection adds to the records it writes (never the data's own)
COLUMN_PREFIX = "selection_"


def _matrix(name: str, values: Any, rows: int | None = None, cols: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2-D array, got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise InputError(f"{name} has {array.shape[0]} rows, expected {rows}")
    if cols is not None and array.shape[1] != cols:
        raise InputError(f"{name} has {array.shape[1]} columns, expected {cols}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf")
    return array


@dataclass
class Pool:
    """The candidates to select from, and what is known about them.

    ``ids`` name the ``n`` candidates. Optional inputs, each validated against ``n``:

    * ``scores`` ``[n]``: one value per candidate, higher = more desirable to the strategy (e.g.
      mean influence on a target, or a dynamics score oriented the way the user wants).
    * ``influence`` ``[n_query, n]``: a query x train score matrix (infscope's sign: positive =
      the candidate helps the query); ``query_tasks`` ``[n_query]`` names the target task of each row.
    * ``features`` ``[n, d]``: gradient features or embeddings of the candidates;
      ``target_features`` ``[m, d]`` those of the target set.
    * ``texts`` ``[n]`` and ``target_texts``: raw text (for n-gram importance resampling).
    * ``tags``: named per-candidate labels, e.g. ``{"task": [...], "label": [...]}``.
    """

    ids: Sequence[str]
    scores: np.ndarray | None = None
    influence: np.ndarray | None = None
    query_tasks: Sequence[str] | None = None
    features: np.ndarray | None = None
    target_features: np.ndarray | None = None
    texts: Sequence[str] | None = None
    target_texts: Sequence[str] | None = None
    tags: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.ids, (str, bytes)):
            raise InputError("ids must be a sequence of ids, not one string")
        self.ids = [str(i) for i in self.ids]
        n = len(self.ids)
        if n == 0:
            raise InputError("the pool is empty: there is nothing to select from")
        if len(set(self.ids)) != n:
            dup = next(i for i, c in Counter(self.ids).items() if c > 1)
            raise InputError(f"duplicate candidate id {dup!r}: ids must be unique")
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64)
            if scores.shape != (n,):
                raise InputError(f"scores have shape {scores.shape}, expected ({n},): one per id")
            if not np.isfinite(scores).all():
                raise InputError("scores contain NaN or inf: compute them for every candidate")
            self.scores = scores
        if self.influence is not None:
            self.influence = _matrix("influence", self.influence, cols=n)
            if self.query_tasks is not None:
                if len(self.query_tasks) != self.influence.shape[0]:
                    raise InputError(
                        f"{len(self.query_tasks)} query tasks for {self.influence.shape[0]} "
                        "influence rows: give one target task per query"
                    )
                self.query_tasks = [str(t) for t in self.query_tasks]
        elif self.query_tasks is not None:
            raise InputError("query_tasks were given without an influence matrix")
        if self.features is not None:
            self.features = _matrix("features", self.features, rows=n)
        if self.target_features is not None:
            cols = None if self.features is None else self.features.shape[1]
            self.target_features = _matrix("target_features", self.target_features, cols=cols)
        for name in ("texts", "target_texts"):
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, str) or not all(isinstance(t, str) for t in values):
                raise InputError(f"{name} must be a sequence of strings")
        if self.texts is not None and len(self.texts) != n:
            raise InputError(f"{len(self.texts)} texts for {n} candidates")
        tags = {}
        for name, values in dict(self.tags).items():
            values = list(values)
            if len(values) != n:
                raise InputError(f"tag {name!r} has {len(values)} values for {n} candidates")
            if any(v is None for v in values):
                raise InputError(f"tag {name!r} is missing for some candidates")
            tags[name] = values
        self.tags = tags

    def __len__(self) -> int:
        return len(self.ids)

    def tag(self, name: str) -> np.ndarray:
        """The values of tag ``name`` as an array (a clear error when it was not given)."""
        if name not in self.tags:
            known = ", ".join(sorted(self.tags)) or "none"
            raise InputError(f"this strategy needs the tag {name!r}; the pool has: {known}")
        return np.asarray(self.tags[name], dtype=object)

    def subset(self, indices: Sequence[int]) -> Pool:
        """The candidates at ``indices`` (target-side inputs kept as they are)."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Pool(
            ids=[self.ids[i] for i in idx],
            scores=pick(self.scores),
            influence=None if self.influence is None else self.influence[:, idx],
            query_tasks=self.query_tasks,
            features=pick(self.features),
            target_features=self.target_features,
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            target_texts=self.target_texts,
            tags={k: [v[i] for i in idx] for k, v in self.tags.items()},
        )


def resolve_budget(budget: int | float, n: int) -> int:
    """A count from ``budget``: an int is a number of examples, a float in (0, 1] a fraction of
    ``n`` (rounded, at least 1)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise InputError(f"budget must be a count or a fraction, got {budget!r}")
    if isinstance(budget, (float, np.floating)):
        if not 0 < budget <= 1:
            raise InputError(f"a fractional budget must lie in (0, 1], got {budget}")
        return max(1, int(round(float(budget) * n)))
    if not 1 <= budget <= n:
        raise InputError(f"budget {budget} must lie in 1..{n} (the pool's size)")
    return int(budget)


@dataclass
class Selection:
    """The picked candidates, in the order they were picked.

    ``indices`` are positions in the pool, ``ids`` their ids, ``weights`` a training weight per
    pick (1 unless the strategy says otherwise, e.g. importance weights), ``reasons`` one short
    sentence per pick saying why. ``info`` holds strategy-level facts (e.g. TAROT's preferred
    selection ratio, the bandit's number of scored examples).
    """

    indices: np.ndarray
    ids: list[str]
    method: str
    weights: np.ndarray | None = None
    reasons: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        k = len(self.indices)
        if len(self.ids) != k:
            raise InputError(f"{len(self.ids)} ids for {k} selected indices")
        if len(set(self.indices.tolist())) != k:
            raise InputError("a selection must not pick the same candidate twice")
        self.weights = np.ones(k) if self.weights is None else np.asarray(self.weights, float)
        if self.weights.shape != (k,):
            raise InputError(f"{self.weights.shape} weights for {k} picks")
        self.reasons = [self.method] * k if self.reasons is None else list(self.reasons)
        if len(self.reasons) != k:
            raise InputError(f"{len(self.reasons)} reasons for {k} picks")

    def __len__(self) -> int:
        return len(self.indices)

    def mask(self, n: int) -> np.ndarray:
        """Boolean mask over a pool of ``n`` candidates."""
        mask = np.zeros(n, dtype=bool)
        mask[self.indices] = True
        return mask

    def counts(self, pool: Pool, tag: str) -> dict[str, tuple[int, int]]:
        """Per value of ``tag``: (candidates in the pool, candidates selected)."""
        values = pool.tag(tag)
        before = Counter(map(str, values))
        after = Counter(map(str, values[self.indices]))
        return {key: (before[key], after.get(key, 0)) for key in sorted(before)}

    def summary(self, pool: Pool, margin: float = SKEW_MARGIN) -> str:
        """A short text summary: budget, method facts, per-tag counts and shares before and
        after, the majority-label share of the picks against the pool's (see
        :func:`~infscope.selection.balance.label_skew`), a warning line when the selection is
        more skewed than the pool by over ``margin``, and — when the pool has an influence matrix
        and target features — the estimated label noise of the picks against the pool's
        (:func:`~infscope.selection.label_noise.noise_in_picks`)."""
        lines = [
            f"{self.method}: selected {len(self)} of {len(pool)} ({len(self) / len(pool):.1%})"
        ]
        lines += [f"  {key}: {value}" for key, value in self.info.items() if _is_scalar(value)]
        for tag in pool.tags:
            lines.append(f"  by {tag}: pool -> selected (share of the pool -> of the selection)")
            for key, (before, after) in self.counts(pool, tag).items():
                lines.append(
                    f"    {key}: {before} -> {after} ({after / before:.0%}), "
                    f"share {before / len(pool):.1%} -> {after / max(len(self), 1):.1%}"
                )
        skew = label_skew(pool, self.indices)
        if skew is not None and skew.groups:
            scope = f" within {skew.within}" if skew.within else ""
            lines.append(
                f"  most frequent {skew.by}'s share{scope}: pool {skew.pool_share:.2f} -> "
                f"selected {skew.selected_share:.2f}"
            )
            warning = skew.warning(margin)
            if warning:
                lines.append(f"  warning: {warning}")
        noise = noise_in_picks(pool.influence, pool.features, pool.target_features, self.indices)
        if noise is not None:
            lines.append(f"  {noise.text()}")
        return "\n".join(lines)

    def plot(self, pool: Pool, tag: str, path: str | Path) -> Path:
        """Bar chart of each value of ``tag``'s share of the pool and of the selection (so a
        reader sees at a glance what the selection favours or drops), saved to ``path``."""
        counts = self.counts(pool, tag)
        names = list(counts)
        before = np.array([c[0] for c in counts.values()]) / len(pool)
        after = np.array([c[1] for c in counts.values()]) / max(len(self), 1)
        x = np.arange(len(names))
        with saved_figure(path, figsize=(max(6.4, 0.5 * len(names) + 2), 4.2)) as axis:
            axis.bar(x - 0.2, before, 0.4, label=f"pool ({len(pool)})", color="lightgray")
            axis.bar(x + 0.2, after, 0.4, label=f"{self.method} ({len(self)})")
            axis.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right")
            axis.set_ylabel(f"share of examples by {tag}")
            axis.legend(fontsize=8)
            axis.grid(axis="y", alpha=0.3)
        return Path(path)

    def records(self, examples: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One dict per pick, in pick order: the example's own fields (when ``examples``,
        aligned with the pool, are given) untouched, ``id`` when they have none, and its own
        columns under :data:`COLUMN_PREFIX` (``selection_rank``, ``selection_weight``,
        ``selection_reason``). :class:`InputError` when an example already has one of them."""
        own = [f"{COLUMN_PREFIX}{name}" for name in ("rank", "weight", "reason")]
        rows = []
        for rank, (index, id_, weight, reason) in enumerate(
            zip(self.indices.tolist(), self.ids, self.weights.tolist(), self.reasons)
        ):
            row: dict[str, Any] = dict(examples[index]) if examples is not None else {}
            taken = [name for name in own if name in row]
            if taken:
                raise InputError(
                    f"example {id_!r} already has the field(s) {taken} that the selection "
                    "writes; rename them in the data"
                )
            row.setdefault("id", id_)
            row.update({own[0]: rank, own[1]: weight, own[2]: reason})
            rows.append(row)
        return rows

    def write_jsonl(self, path: str | Path, examples: Sequence[Mapping] | None = None) -> Path:
        """Write :meth:`records` as jsonl, atomically."""
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.records(examples))
        path = Path(path)
        write_atomic(path, lambda h: h.write(lines.encode()))
        return path

    def to_dataset(self, examples: Sequence[Mapping[str, Any]] | None = None) -> Any:
        """The picks as a ``datasets.Dataset`` (needs the ``hf`` extra)."""
        from datasets import Dataset

        return Dataset.from_list(self.records(examples))

    def save(self, directory: str | Path) -> Path:
        """Indices, ids, weights, reasons and info as JSON (never pickle), atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "method": self.method,
            "indices": self.indices.tolist(),
            "ids": self.ids,
            "weights": self.weights.tolist(),
            "reasons": self.reasons,
            "info": self.info,
        }
        text = json.dumps(payload, default=_json_default)
        write_atomic(directory / "selection.json", lambda h: h.write(text.encode()))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Selection:
        path = Path(directory) / "selection.json"
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{path} is not a readable selection ({err})") from None
        if payload.get("format") != FORMAT:
            raise InputError(f"{path} is not an infscope selection")
        return cls(
            payload["indices"],
            payload["ids"],
            payload["method"],
            payload["weights"],
            payload["reasons"],
            payload["info"],
        )

    def to_pandas(self, examples: Sequence[Mapping[str, Any]] | None = None) -> Any:
        """:meth:`records` as a ``pandas.DataFrame`` (pick order)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records(examples))

    def _repr_html_(self) -> str:
        from infscope.html import table

        rows = self.records()[:20]
        caption = f"{self.method}: {len(self)} picks" + (", the first 20" if len(self) > 20 else "")
        columns = ["id"] + [f"{COLUMN_PREFIX}{c}" for c in ("rank", "weight", "reason")]
        return table(columns, [[r[c] for c in columns] for r in rows], caption)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, np.integer, np.floating))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Selector(ABC):
    """Picks a subset of a :class:`Pool` under a budget.

    Subclasses set ``name``, list the pool fields they need in ``requires`` (checked before
    :meth:`_select` runs) and implement :meth:`_select`. Randomness comes only from ``self.seed``.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def select(self, pool: Pool, budget: int | float) -> Selection:
        """Validate, resolve the budget, select."""
        if not isinstance(pool, Pool):
            raise InputError(f"select() takes a Pool, got {type(pool).__name__}")
        missing = [name for name in self.requires if _missing(pool, name)]
        if missing:
            raise InputError(f"{self.name} needs {', '.join(missing)} in the pool")
        k = resolve_budget(budget, len(pool))
        selection = self._select(pool, k, np.random.default_rng(self.seed))
        if len(selection) != k:  # every strategy fills its budget
            raise AssertionError(f"{self.name} picked {len(selection)} of a budget of {k}")
        skew = label_skew(pool, selection.indices)
        warning = skew.warning() if skew is not None else None
        if warning:
            warnings.warn(f"{self.name}: {warning}", InfscopeWarning, stacklevel=2)
        return selection

    @abstractmethod
    def _select(self, pool: Pool, k: int, rng: np.random.Generator) -> Selection:
        """Pick exactly ``k`` candidates."""

    def _selection(
        self,
        pool: Pool,
        indices: Iterable[int],
        reasons: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        **info: Any,
    ) -> Selection:
        indices = np.fromiter(indices, dtype=np.int64)
        ids = [pool.ids[i] for i in indices]
        return Selection(indices, ids, self.name, weights, reasons, info)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def _missing(pool: Pool, name: str) -> bool:
    if name.startswith("tag:"):
        return name[4:] not in pool.tags
    return getattr(pool, name) is None
