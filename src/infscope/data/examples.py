"""Examples with stable ids, from Python lists, jsonl/csv/parquet files or ``datasets``.

Every array infscope writes travels with the ids of its rows, so an example keeps its identity
through shuffles, shards and subsets.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infscope.errors import InfscopeWarning, InputError


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

    def column(
        self,
        field: str,
        ids: Sequence[str] | None = None,
        source: str = "the data",
        what: str = "ids",
    ) -> list[Any]:
        """The ``field`` of every example, or of the examples with ``ids`` in that order (the
        join of this set with another file's rows by id); an :class:`InputError` for an id not
        here (see :func:`positions`) or a record without the field, naming ``source``."""
        rows = range(len(self)) if ids is None else positions(ids, self.ids, source, what)
        values = []
        for row in rows:
            record = self.examples[row]
            if not isinstance(record, Mapping) or field not in record:
                raise InputError(f"example {self.ids[row]!r} in {source} has no field {field!r}")
            values.append(record[field])
        return values

    @classmethod
    def from_records(
        cls, records: Sequence[dict[str, Any]], id_field: str | None = "id"
    ) -> ExampleSet:
        """Dict records with ids from ``id_field`` (strings or integers). Every record has one,
        or none does: then the row numbers are the ids, with an
        :class:`~infscope.errors.InfscopeWarning` (two files numbered alike share ids). A
        record without one among records with one is an :class:`InputError`."""
        records = list(records)
        if not id_field:
            return cls(records, tuple(str(i) for i in range(len(records))))
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise InputError(f"record {i} is a {type(record).__name__}, not a record (object)")
        lacking = [i for i, r in enumerate(records) if id_field not in r]
        if lacking and len(lacking) < len(records):
            raise InputError(
                f"record {lacking[0]} has no {id_field!r} field but others do "
                f"({len(lacking)} of {len(records)} records lack one): give every record an id, "
                "or none to number them"
            )
        if lacking:
            warnings.warn(
                f"no record has an {id_field!r} field: the row numbers 0..{len(records) - 1} are "
                "the example ids (another file numbered the same way gets the same ids)",
                InfscopeWarning,
                stacklevel=2,
            )
            return cls(records, tuple(str(i) for i in range(len(records))))
        return cls(
            records, tuple(_id_text(r[id_field], i, id_field) for i, r in enumerate(records))
        )

    @classmethod
    def from_file(cls, path: str | Path, id_field: str | None = "id") -> ExampleSet:
        """Read ``.jsonl``, ``.json`` (a list), ``.csv`` or ``.parquet`` records."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such data file: {path}")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
        if suffix == ".jsonl":
            records = []
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise InputError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
                    except RecursionError:
                        raise InputError(f"{path}:{line_no}: JSON nested too deeply") from None
        elif suffix == ".json":
            try:
                records = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
            except RecursionError:
                raise InputError(f"{path}: JSON nested too deeply") from None
            if not isinstance(records, list):
                raise InputError(f"{path}: expected a JSON list of records")
        elif suffix in (".csv", ".parquet"):
            records = _read_table(path, "csv" if suffix == ".csv" else "parquet", id_field)
        else:
            raise InputError(
                f"{path}: unsupported data format {suffix!r} (jsonl, json, csv, parquet)"
            )
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(
                    f"{path}: record {i} is a {type(record).__name__}; every record must be a "
                    "JSON object"
                )
        return cls.from_records(records, id_field)

    @classmethod
    def from_dataset(cls, dataset: Any, id_field: str | None = "id") -> ExampleSet:
        """A ``datasets.Dataset`` (records) or any torch-style dataset with ``len`` and indexing."""
        if getattr(dataset, "column_names", None) is not None:
            return cls.from_records(list(dataset), id_field)
        return cls([dataset[i] for i in range(len(dataset))], tuple(map(str, range(len(dataset)))))


def positions(
    ids: Sequence[str], within: Sequence[str], source: str, what: str = "ids"
) -> list[int]:
    """Where each of ``ids`` is in ``within`` (the ids of ``source``): how rows of two files
    are matched, by id and never by position; an :class:`InputError` naming the ids missing."""
    where = {i: k for k, i in enumerate(within)}
    missing = [i for i in ids if i not in where]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} {what} are not in {source}: {shown}")
    return [where[i] for i in ids]


def _id_text(value: Any, index: int, id_field: str) -> str:
    """An id as text: strings as they are, integers in decimal; anything else is refused (a
    float id such as 3.0 — a column with gaps — or null would silently not match)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(
        f"record {index}: {id_field}={value!r} is a {type(value).__name__}; ids must be strings "
        "or integers"
    )


def _read_table(path: Path, loader: str, id_field: str | None) -> list[dict[str, Any]]:
    """Records of a csv or parquet file, read with ``datasets``; csv ids are kept as written."""
    import datasets

    if loader == "csv":
        _check_csv_shape(path)
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


def _check_csv_shape(path: Path) -> None:
    """Every csv row has as many fields as the header: pandas would otherwise read a row with one
    field too many as shifted (its first field becoming an index), silently."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty csv file (no header row)")
            for row in reader:
                if row and len(row) != len(header):
                    raise InputError(
                        f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                        f"{len(header)} ({', '.join(header)}); quote fields that contain commas"
                    )
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read csv data ({type(err).__name__}: {err})") from None
