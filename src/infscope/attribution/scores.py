"""Score containers: a query x train matrix, or one self-influence value per training example.

Sign convention (every estimator): a **positive score means the training example lowers the
query's measurement — it helps**; negative means it hurts. Arrays always travel with their ids.
Saved as ``.npy`` + JSON (never pickle), written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError, NonFiniteError
from infscope.io import HashingWriter, sha256_file, write_atomic, write_table

FORMAT = "infscope.scores"
VALUES_FILE = "values.npy"
META_FILE = "scores.json"
#: table formats ``infscope score`` writes beside the scores (``none``: no table)
TABLE_FORMATS = ("csv", "parquet", "none")
#: largest query x train matrix written as a table (a spreadsheet opens it)
TABLE_CELL_LIMIT = 2_000_000


def _check_finite(values: np.ndarray, method: str, ids: list[str], columns: list[str]) -> None:
    """Non-finite scores are an error naming examples, never a silent NaN ranked first or last.
    ``ids`` name the rows of a matrix (the values of a vector), ``columns`` a matrix's columns."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    if values.ndim == 2:
        rows, cols = np.nonzero(bad)
        where = ", ".join(
            f"query {ids[r]!r} x train {columns[c]!r}" for r, c in zip(rows[:3], cols)
        )
    else:
        where = ", ".join(f"train {ids[i]!r}" for i in np.flatnonzero(bad)[:3])
    raise NonFiniteError(
        f"{method} produced {int(bad.sum())} non-finite score(s) (NaN or inf), e.g. {where}: the "
        "features hold NaN/inf or the computation overflowed (check the stores with `infscope "
        "store verify`, or raise the damping)"
    )


def _save(directory: str | Path, values: np.ndarray, meta: dict[str, Any]) -> Path:
    """Values first, then the JSON that makes the directory readable and records the values'
    sha256: a crash, or values left from another run, never read as complete scores."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest: list[str] = []

    def write_values(handle: Any) -> None:
        writer = HashingWriter(handle)
        np.lib.format.write_array(writer, np.ascontiguousarray(values), allow_pickle=False)
        digest.append(writer.sha.hexdigest())

    write_atomic(directory / VALUES_FILE, write_values)
    meta = {"format": FORMAT, **meta, "values_sha256": digest[0]}
    text = json.dumps(meta).encode()
    write_atomic(directory / META_FILE, lambda h: h.write(text))
    return directory


@dataclass
class Scores:
    """Influence of each training example (columns) on each query (rows)."""

    values: np.ndarray
    query_ids: list[str]
    train_ids: list[str]
    method: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = (len(self.query_ids), len(self.train_ids))
        if self.values.shape != expected:
            raise InputError(f"score matrix {self.values.shape} does not match ids {expected}")
        _check_finite(self.values, self.method, self.query_ids, self.train_ids)

    def top(self, k: int, harmful: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per query, indices ``[n_query, k]`` and scores of the ``k`` most helpful training
        examples (largest scores) or, with ``harmful``, the most harmful (smallest)."""
        if k < 1:
            raise InputError(f"k must be positive, got {k}")
        k = min(k, self.values.shape[1])
        signed = -self.values if not harmful else self.values
        index = np.argsort(signed, axis=1, kind="stable")[:, :k]
        return index, np.take_along_axis(self.values, index, axis=1)

    def write_table(self, path: str | Path) -> bool:
        """A ``.csv`` / ``.parquet`` table: one row per query (``query_id``), one column per
        training id. False (nothing written) above :data:`TABLE_CELL_LIMIT` cells."""
        if self.values.size > TABLE_CELL_LIMIT:
            return False
        if "query_id" in self.train_ids:
            raise InputError("a training id is 'query_id', the table's first column name")
        columns = {"query_id": self.query_ids}
        columns.update({tid: self.values[:, j].tolist() for j, tid in enumerate(self.train_ids)})
        write_table(path, columns)
        return True

    def top_rows(self, k: int, max_queries: int | None = None) -> list[dict[str, Any]]:
        """Per query (the first ``max_queries``), its ``k`` most helpful then ``k`` most
        harmful training examples: ``query_id``, ``direction`` (helps / hurts), ``rank``,
        ``train_id``, ``score``."""
        rows = []
        queries = range(min(max_queries or len(self.query_ids), len(self.query_ids)))
        picks = [(word, *self.top(k, harmful=word == "hurts")) for word in ("helps", "hurts")]
        for q in queries:
            for word, index, values in picks:
                for rank, (i, v) in enumerate(zip(index[q], values[q]), 1):
                    rows.append(
                        {
                            "query_id": self.query_ids[q],
                            "direction": word,
                            "rank": rank,
                            "train_id": self.train_ids[i],
                            "score": float(v),
                        }
                    )
        return rows

    def save(self, directory: str | Path) -> Path:
        meta = {"kind": "matrix", "method": self.method, "query_ids": self.query_ids}
        return _save(
            directory, self.values, {**meta, "train_ids": self.train_ids, "metadata": self.metadata}
        )

    def to_pandas(self) -> Any:
        """The matrix as a ``pandas.DataFrame``: rows = query ids, columns = training ids."""
        import pandas as pd

        return pd.DataFrame(self.values, index=list(self.query_ids), columns=list(self.train_ids))

    def _repr_html_(self) -> str:
        from infscope.html import table

        columns = ["query_id", "direction", "rank", "train_id", "score"]
        rows = self.top_rows(3, max_queries=10)
        caption = (
            f"{self.method}: {len(self.query_ids)} queries x {len(self.train_ids)} training "
            "examples; the 3 most helpful and harmful for the first 10 queries"
        )
        return table(columns, [[r[c] for c in columns] for r in rows], caption=caption)


@dataclass
class SelfInfluence:
    """One score per training example: its influence on its own loss (high = unusual/memorised;
    mislabeled examples rank high)."""

    values: np.ndarray
    train_ids: list[str]
    method: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.train_ids),):
            raise InputError(f"{self.values.shape} values for {len(self.train_ids)} ids")
        _check_finite(self.values, self.method, self.train_ids, [])

    @property
    def higher_is_harder(self) -> bool | None:
        """Whether a high value means hard or suspicious (self-influence, EL2N, forgetting), not
        easy (confidence, AUM): ``metadata["higher_is_harder"]``, ``None`` when not recorded."""
        return self.metadata.get("higher_is_harder")

    def oriented(self, negate: bool = False) -> SelfInfluence:
        """These scores with high = hard / suspicious: negated when they record that higher means
        easier, or — for scores that record no direction — when ``negate`` is asked.
        :class:`InputError` for ``negate`` on scores that record their direction (they are
        oriented already; negating again would silently invert them)."""
        harder = self.higher_is_harder
        if negate and harder is not None:
            means = self.metadata.get("high_means", "harder" if harder else "easier")
            raise InputError(
                f"{self.method} scores record their direction (high = {means}) and are oriented "
                "automatically; drop the negation"
            )
        if harder is not False and not negate:
            return self
        metadata = {**self.metadata, "higher_is_harder": True, "negated": True}
        return SelfInfluence(-self.values, list(self.train_ids), f"-{self.method}", metadata)

    def ranking(self) -> np.ndarray:
        """Indices from highest to lowest value (of :meth:`oriented` for the most suspicious
        first)."""
        return np.argsort(-self.values, kind="stable")

    def write_table(self, path: str | Path) -> bool:
        """A ``.csv`` / ``.parquet`` table of ``train_id``, ``score`` and ``rank`` (1 = most
        suspicious, by :meth:`oriented`), in the store's order. Always True."""
        rank = np.empty(len(self.train_ids), dtype=np.int64)
        rank[self.oriented().ranking()] = np.arange(1, len(rank) + 1)
        write_table(
            path, {"train_id": self.train_ids, "score": self.values.tolist(), "rank": rank.tolist()}
        )
        return True

    def top_rows(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` most suspicious examples (by :meth:`oriented`): ``rank``, ``train_id``,
        ``score`` (the value as stored)."""
        if k < 1:
            raise InputError(f"k must be positive, got {k}")
        return [
            {"rank": rank, "train_id": self.train_ids[i], "score": float(self.values[i])}
            for rank, i in enumerate(self.oriented().ranking()[:k], 1)
        ]

    def recorded_predictions(self) -> dict[str, int] | None:
        """Train id → the label the model predicted at the last checkpoint of the training
        store these scores came from, when that store still exists and recorded predictions
        (classification tasks); else ``None``."""
        from infscope.errors import StoreError
        from infscope.store import FeatureStore

        root = self.metadata.get("train_store")
        if not root:
            return None
        try:
            store = FeatureStore.open(root)
            predicted = store.predictions(store.checkpoints[-1].id)
        except (StoreError, IndexError):
            return None
        return dict(zip(store.ids, predicted.tolist()))

    def save(self, directory: str | Path) -> Path:
        meta = {"kind": "self", "method": self.method, "train_ids": self.train_ids}
        return _save(directory, self.values, {**meta, "metadata": self.metadata})

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` indexed by training id: ``score`` and ``rank`` (1 = most
        suspicious, by :meth:`oriented`)."""
        import pandas as pd

        rank = np.empty(len(self.train_ids), dtype=np.int64)
        rank[self.oriented().ranking()] = np.arange(1, len(rank) + 1)
        frame = pd.DataFrame({"score": self.values, "rank": rank}, index=list(self.train_ids))
        frame.index.name = "train_id"
        return frame

    def _repr_html_(self) -> str:
        from infscope.html import table

        rows = self.top_rows(20)
        caption = f"{self.method}: {len(self.train_ids)} examples, the 20 most suspicious"
        return table(["rank", "train_id", "score"], [list(r.values()) for r in rows], caption)


#: what a command needing the other kind of scores is told
_NEEDED = {
    Scores: "holds self-influence (one score per training example); this needs query x train "
    "scores (`infscope score --query ...`)",
    SelfInfluence: "holds a query x train matrix; this needs one score per training example "
    "(self-influence: `infscope score` without --query)",
}


def load_scores(
    directory: str | Path, expect: type[Scores] | type[SelfInfluence] | None = None
) -> Scores | SelfInfluence:
    """Read what :meth:`Scores.save` or :meth:`SelfInfluence.save` wrote; :class:`InputError`
    for a missing, foreign, incomplete or altered scores directory, or for scores of another
    kind than ``expect``."""
    loaded = _load_scores(Path(directory))
    if expect is not None and not isinstance(loaded, expect):
        raise InputError(f"{directory} {_NEEDED[expect]}")
    return loaded


def _load_scores(directory: Path) -> Scores | SelfInfluence:
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{directory} holds no readable scores ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{directory}/{META_FILE} is not an infscope scores file")
    recorded = meta.get("values_sha256")
    try:
        if recorded is not None and sha256_file(directory / VALUES_FILE) != recorded:
            raise InputError(
                f"{directory}/{VALUES_FILE} does not match its {META_FILE} (a run was "
                "interrupted, or the file changed): score again"
            )
        values = np.load(directory / VALUES_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"{directory} holds no readable scores ({err})") from None
    try:
        kind, method, metadata = meta["kind"], str(meta["method"]), dict(meta.get("metadata", {}))
        if kind == "self":
            return SelfInfluence(values, list(meta["train_ids"]), method, metadata)
        if kind == "matrix":
            return Scores(
                values, list(meta["query_ids"]), list(meta["train_ids"]), method, metadata
            )
    except InputError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{directory}/{META_FILE} is malformed ({err!r})") from None
    raise InputError(f"{directory}/{META_FILE}: unknown kind {kind!r}")
