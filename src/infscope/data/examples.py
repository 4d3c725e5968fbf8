"""Examples with stable ids, from Python lists, jsonl/csv/parquet files or ``datasets``.

Every array infscope writes travels with the ids of its rows, so an example keeps its identity
through shuffles, shards and subsets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infscope.errors import InputError


@dataclass(frozen=True)
class ExampleSet:
    """A sequence of examples (any objects the task can collate) and their unique string ids."""

    examples: Sequence[Any]
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.ids, (str, bytes)):
            raise InputError("ids must be a sequence of ids, not one string")
        if any(i is None for i in self.ids):
            raise InputError("example ids must not be None")
        ids = tuple(str(i) for i in self.ids)
        object.__setattr__(self, "ids", ids)
        if len(self.examples) == 0:
            raise InputError("empty dataset: there are no examples")
        if len(ids) != len(self.examples):
            raise InputError(f"{len(self.examples)} examples but {len(ids)} ids: they must match")
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise InputError(f"duplicate example id {i!r}: ids must be unique")
            seen.add(i)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Any:
        return self.examples[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.examples)

    @classmethod
    def from_records(
        cls, records: Sequence[dict[str, Any]], id_field: str | None = "id"
    ) -> ExampleSet:
        """Dict records; ids from ``id_field`` when every record has it, else the row numbers."""
        records = list(records)
        if id_field and records and all(id_field in r for r in records):
            return cls(records, tuple(str(r[id_field]) for r in records))
        return cls(records, tuple(str(i) for i in range(len(records))))

    @classmethod
    def from_file(cls, path: str | Path, id_field: str | None = "id") -> ExampleSet:
        """Read ``.jsonl``, ``.json`` (a list), ``.csv`` or ``.parquet`` records."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such data file: {path}")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            records = []
            with path.open(encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise InputError(
                                f"{path}:{line_no}: invalid JSON ({err.msg})"
                            ) from None
        elif suffix == ".json":
            try:
                records = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
            if not isinstance(records, list):
                raise InputError(f"{path}: expected a JSON list of records")
        elif suffix in (".csv", ".parquet"):
            records = _read_table(path, "csv" if suffix == ".csv" else "parquet", id_field)
        else:
            raise InputError(
                f"{path}: unsupported data format {suffix!r} (jsonl, json, csv, parquet)"
            )
        if not all(isinstance(r, dict) for r in records):
            raise InputError(f"{path}: every record must be a JSON object")
        return cls.from_records(records, id_field)

    @classmethod
    def from_dataset(cls, dataset: Any, id_field: str | None = "id") -> ExampleSet:
        """A ``datasets.Dataset`` (records) or any torch-style dataset with ``len`` and indexing."""
        column_names = getattr(dataset, "column_names", None)
        if column_names is not None:
            return cls.from_records(list(dataset), id_field if id_field in column_names else None)
        return cls([dataset[i] for i in range(len(dataset))], tuple(map(str, range(len(dataset)))))


def _read_table(path: Path, loader: str, id_field: str | None) -> list[dict[str, Any]]:
    """Records of a csv or parquet file, read with ``datasets``; csv ids are kept as written."""
    import datasets

    try:
        table = datasets.load_dataset(loader, data_files=str(path), split="train")
        id_type = getattr(table.features.get(id_field or ""), "dtype", None)
        if loader == "csv" and id_type is not None and id_type not in ("string", "large_string"):
            # pandas parses numeric-looking ids ("007" -> 7): read that column again as text
            features = table.features.copy()
            features[id_field] = datasets.Value("string")
            table = datasets.load_dataset(
                loader, data_files=str(path), split="train", features=features
            )
    except Exception as err:  # datasets, pandas and pyarrow raise many types for bad files
        raise InputError(
            f"{path}: cannot read {loader} data ({type(err).__name__}: {err})"
        ) from None
    return list(table)
