"""What a store's features are (:class:`StoreSpec`), the checkpoints it holds
(:class:`CheckpointInfo`), and its metadata file ``store.json``: canonical JSON, validated on
read (a malformed file is a :class:`~infscope.errors.StoreCorruptError`, never a crash)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError, StoreCorruptError, StoreError
from infscope.store.layout import BlockLayout

__all__ = ["CheckpointInfo", "StoreSpec"]

FORMAT = "infscope.feature_store"
VERSION = 1
META_FILE = "store.json"
DTYPES = ("float16", "float32")
GRADIENTS = ("loss", "measurement", "fisher")
_CHECKPOINT_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _normalise_dtype(value: Any) -> str:
    """Accept 'float32', np.float32, np.dtype('float16') or torch.float16; return the name."""
    name = value if isinstance(value, str) else str(value)
    name = name.removeprefix("torch.")
    if not isinstance(value, str):
        with contextlib.suppress(TypeError):
            name = np.dtype(value).name
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return name


def _canonical_json(value: Any, what: str) -> Any:
    """Round-trip through JSON so in-memory values equal what a re-opened store reads back."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable (no NaN/inf): {exc}") from None


@dataclass(frozen=True)
class StoreSpec:
    """What a store's features are. Two runs may share a store (resume) or be scored together only
    if these agree."""

    feature_dim: int
    dtype: str = "float32"  # "float16" | "float32"
    gradient: str = "loss"  # "loss" (training-loss grads) | "measurement" (query-measurement grads)
    modules: tuple[str, ...] = ()  # tracked module names
    projection: dict = field(default_factory=dict)  # JSON-serialisable projection config
    model: str = ""  # model fingerprint or name
    shard_size: int = 1024
    task: dict = field(
        default_factory=dict
    )  # JSON-serialisable task description (measurement, fields)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, at construction
        set_(self, "feature_dim", _positive_int("feature_dim", self.feature_dim))
        set_(self, "shard_size", _positive_int("shard_size", self.shard_size))
        set_(self, "dtype", _normalise_dtype(self.dtype))
        if self.gradient not in GRADIENTS:
            raise InputError(
                f"gradient must be one of {', '.join(GRADIENTS)}, got {self.gradient!r}"
            )
        modules = self.modules
        if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
            raise InputError(f"modules must be a list or tuple of strings, got {modules!r}")
        if not all(isinstance(m, str) for m in modules):
            raise InputError(f"modules must all be strings, got {list(modules)!r}")
        set_(self, "modules", tuple(str(m) for m in modules))
        if not isinstance(self.projection, dict):
            raise InputError(f"projection must be a dict, got {type(self.projection).__name__}")
        set_(self, "projection", _canonical_json(self.projection, "projection"))
        if not isinstance(self.task, dict):
            raise InputError(f"task must be a dict, got {type(self.task).__name__}")
        set_(self, "task", _canonical_json(self.task, "task"))
        if not isinstance(self.model, str):
            raise InputError(f"model must be a string, got {self.model!r}")

    def __hash__(self) -> int:  # projection is a dict, so hash the canonical JSON form
        return hash(json.dumps(self.to_json(), sort_keys=True))

    @property
    def layout(self) -> BlockLayout | None:
        """Where each module sits in the features (:class:`~infscope.store.layout.BlockLayout`),
        when the projection keeps modules apart (identity, kronecker, eigen with one basis);
        ``None`` when it mixes them (dense, sjlt) or lays out each checkpoint on its own."""
        blocks = self.projection.get("blocks")
        return BlockLayout.parse(blocks) if blocks else None

    @property
    def measurement(self) -> str | None:
        """The task's measurement the features differentiate (``"loss"``, ``"margin"``,
        ``"logit"``, ``"logprob"``), as the task recorded it; ``None`` if it did not."""
        value = self.task.get("measurement")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict:
        """The spec as a JSON-serialisable dict (the ``"spec"`` entry of store.json)."""
        return {
            "feature_dim": self.feature_dim,
            "dtype": self.dtype,
            "gradient": self.gradient,
            "modules": list(self.modules),
            "projection": self.projection,
            "model": self.model,
            "shard_size": self.shard_size,
            "task": self.task,
        }

    @classmethod
    def from_json(cls, d: dict) -> StoreSpec:
        """Inverse of :meth:`to_json`; InputError for missing or unknown keys or bad values."""
        if not isinstance(d, dict):
            raise InputError(f"spec must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown spec field(s): {', '.join(unknown)}")
        if "feature_dim" not in d:
            raise InputError("spec is missing 'feature_dim'")
        kwargs = dict(d)
        if isinstance(kwargs.get("modules"), list):
            kwargs["modules"] = tuple(kwargs["modules"])
        return cls(**kwargs)


@dataclass(frozen=True)
class CheckpointInfo:
    """One model checkpoint whose features a store holds."""

    id: str
    learning_rate: float | None = None  # used by TracIn
    fingerprint: str | None = None  # model-weights hash at this checkpoint

    def __post_init__(self) -> None:
        _check_checkpoint_id(self.id)
        lr = self.learning_rate
        if lr is not None:
            if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
                raise InputError(f"learning_rate must be a number or None, got {lr!r}")
            lr = float(lr)
            if not math.isfinite(lr) or lr < 0:
                raise InputError(f"learning_rate must be finite and >= 0, got {lr!r}")
            object.__setattr__(self, "learning_rate", lr)
        if self.fingerprint is not None and not isinstance(self.fingerprint, str):
            raise InputError(f"fingerprint must be a string or None, got {self.fingerprint!r}")

    def to_json(self) -> dict:
        """The info as a JSON-serialisable dict (an entry of store.json's ``"checkpoints"``)."""
        return {"id": self.id, "learning_rate": self.learning_rate, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: dict) -> CheckpointInfo:
        """Inverse of :meth:`to_json`."""
        if not isinstance(d, dict) or "id" not in d:
            raise InputError(f"checkpoint entry must be an object with an 'id', got {d!r}")
        unknown = sorted(set(d) - {"id", "learning_rate", "fingerprint"})
        if unknown:
            raise InputError(f"unknown checkpoint field(s): {', '.join(unknown)}")
        return cls(**d)


def _check_checkpoint_id(checkpoint_id: Any) -> str:
    if (
        not isinstance(checkpoint_id, str)
        or checkpoint_id in (".", "..")
        or not _CHECKPOINT_ID_RE.match(checkpoint_id)
    ):
        raise InputError(
            f"bad checkpoint id {checkpoint_id!r}: use letters, digits, '.', '_' or '-' "
            "(it names a folder; '.' and '..' are not allowed)"
        )
    return checkpoint_id


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n").encode("utf-8")


def _read_meta(path: Path) -> tuple[StoreSpec, int, list[CheckpointInfo]]:
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"no feature store metadata at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreCorruptError(f"{path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise StoreCorruptError(f"{path} must hold a JSON object")
    keys = ("format", "version", "spec", "n_examples", "checkpoints")
    missing = [k for k in keys if k not in doc]
    if missing:
        raise StoreCorruptError(f"{path} is missing key(s): {', '.join(missing)}")
    if doc["format"] != FORMAT:
        raise StoreCorruptError(f"{path}: format {doc['format']!r}, expected {FORMAT!r}")
    if doc["version"] != VERSION:
        raise StoreCorruptError(
            f"{path}: unsupported version {doc['version']!r} (this infscope reads {VERSION})"
        )
    n = doc["n_examples"]
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise StoreCorruptError(f"{path}: bad n_examples {n!r}")
    try:
        spec = StoreSpec.from_json(doc["spec"])
        if not isinstance(doc["checkpoints"], list):
            raise InputError("'checkpoints' must be a list")
        checkpoints = [CheckpointInfo.from_json(c) for c in doc["checkpoints"]]
    except (InputError, TypeError) as exc:
        raise StoreCorruptError(f"{path}: bad metadata: {exc}") from None
    if len({c.id for c in checkpoints}) != len(checkpoints):
        raise StoreCorruptError(f"{path}: duplicate checkpoint ids")
    return spec, n, checkpoints


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _spec_differences(stored: StoreSpec, given: StoreSpec) -> list[str]:
    a, b = stored.to_json(), given.to_json()
    return [
        f"{name} (stored {_short(a[name])}, given {_short(b[name])})"
        for name in a
        if a[name] != b[name]
    ]


def _ids_difference(stored: list[str], given: list[str]) -> str | None:
    if stored == given:
        return None
    for i, (x, y) in enumerate(zip(stored, given, strict=False)):
        if x != y:
            pos = f"first difference at position {i}: {json.dumps(x)} vs {json.dumps(y)}"
            break
    else:
        pos = f"first difference at position {min(len(stored), len(given))}"
    if len(stored) != len(given):
        return f"ids (stored {len(stored)} ids, given {len(given)}; {pos})"
    return f"ids ({pos})"


def _check_ids(ids: Any) -> list[str]:
    if isinstance(ids, np.ndarray):
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InputError(f"ids must be a sequence of strings, got {type(ids).__name__}")
    if len(ids) == 0:
        raise InputError("empty dataset: a feature store needs at least one example id")
    out: list[str] = []
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise InputError(f"example ids must be strings; ids[{i}] is {type(x).__name__} {x!r}")
        out.append(str(x))
    if len(set(out)) != len(out):
        seen: dict[str, int] = {}
        for i, x in enumerate(out):
            if x in seen:
                raise InputError(
                    f"example ids must be unique; {x!r} appears at positions {seen[x]} and {i}"
                )
            seen[x] = i
    return out
