"""Lists of example ids read from a file: the forget set of unlearning, the rows to leave out of
a selection pool."""

from __future__ import annotations

import json
from pathlib import Path

from infscope.data.examples import ExampleSet
from infscope.errors import InputError


def read_ids(path: str | Path, what: str = "ids") -> list[str]:
    """Ids from ``.json`` (a list), ``.jsonl``/``.csv``/``.parquet`` (records with ``id``) or any
    other file (one id per line, blank lines skipped). ``what`` names the file in errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such {what} file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv", ".parquet"):
        return list(ExampleSet.from_file(path).ids)
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(values, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in values
        ):
            raise InputError(f"{path} must hold a JSON list of ids (strings or integers)")
        return [str(v) for v in values]
    return [line.strip() for line in text.splitlines() if line.strip()]
