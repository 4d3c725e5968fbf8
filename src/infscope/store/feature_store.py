"""On-disk, sharded, resumable store of per-example feature vectors.

A :class:`FeatureStore` holds one fixed-size float vector per example (projected per-example
gradients) for one or more model checkpoints. Extraction is the expensive part of attribution, so
the store is built to survive being killed and to be shared by several workers:

* **Sharded and atomic.** Rows are stored in shards of ``spec.shard_size`` examples. A shard is
  written to a hidden temporary file, fsynced and renamed into place, so *a shard file that exists
  is complete*. Its sha256 sidecar is renamed into place first, so every shard has its checksum.
* **Resumable and deterministic.** Re-creating a store with the same spec and ids re-opens it;
  :meth:`FeatureStore.missing_shards` lists what is left. Metadata is canonical JSON and shards are
  plain little-endian ``.npy`` files, so a resumed store is byte-identical to an uninterrupted one.
* **Several workers.** Shard ``i`` belongs to worker ``i % num_workers``; workers write disjoint
  files. Changes to store.json (registering a checkpoint, adding a learning rate) hold an
  exclusive lock on ``<root>/.store.lock`` around the read-modify-write, so concurrent writers
  never lose each other's checkpoints; two writers of the same shard write the same bytes.
* **Never looks complete when it is not.** Reads refuse to proceed while any shard is missing
  (:class:`~infscope.errors.StoreIncompleteError`), and unreadable files raise
  :class:`~infscope.errors.StoreCorruptError` naming the file.
* **Never reads corrupt data.** The first read of a shard in a process (again whenever its size or
  modification time changes) checks its sha256 against the sidecar and that every value is
  finite; a mismatch is a :class:`~infscope.errors.StoreCorruptError` naming the shard (and the
  examples, for non-finite rows). :meth:`FeatureStore.verify` checks every shard now.

No pickle anywhere: metadata is JSON and shards are loaded with ``allow_pickle=False``.

Layout::

    <root>/store.json
    <root>/ids.json
    <root>/checkpoints/<checkpoint_id>/shard-<start:010d>-<stop:010d>.npy   # rows [start, stop)
    <root>/checkpoints/<checkpoint_id>/shard-<start:010d>-<stop:010d>.sha256
    <root>/checkpoints/<checkpoint_id>/shard-<start:010d>-<stop:010d>.losses  # optional, per-example values
    <root>/checkpoints/<checkpoint_id>/shard-<start:010d>-<stop:010d>.predictions  # optional, labels
    <root>/checkpoints/<checkpoint_id>/shard-<start:010d>-<stop:010d>.losses.sha256  # and .predictions.sha256
"""

from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import (
    InputError,
    StoreCorruptError,
    StoreError,
    StoreIncompleteError,
    StoreMismatchError,
)
from infscope.io import (
    create_atomic,
    locked,
    write_atomic,
)
from infscope.store.shards import (
    _VERIFIED,
    LOSSES_SUFFIX,
    MAPPED_SHARDS,
    PREDICTIONS_SUFFIX,
    _checked_sidecar,
    _file_state,
    _shard_name,
    check_shard,
    open_shard,
    shard_file_problems,
    shard_rows,
    sidecar_arrays,
    write_shard_files,
)
from infscope.store.spec import (
    FORMAT,
    META_FILE,
    VERSION,
    CheckpointInfo,
    StoreSpec,
    _check_checkpoint_id,
    _check_ids,
    _ids_difference,
    _json_bytes,
    _positive_int,
    _read_meta,
    _spec_differences,
)

__all__ = ["CheckpointInfo", "FeatureStore", "StoreSpec"]

IDS_FILE = "ids.json"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = ".store.lock"


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class FeatureStore:
    """Sharded on-disk feature vectors (one row per example) for one or more checkpoints.

    Create or resume with :meth:`create`, open for reading with :meth:`open`. See the module
    docstring for the layout and the guarantees.
    """

    def __init__(
        self, root: Path, spec: StoreSpec, ids: list[str], checkpoints: list[CheckpointInfo]
    ) -> None:
        # Internal: use create() or open().
        self.root = Path(root)
        self.spec = spec
        self.ids = ids
        self._checkpoints = list(checkpoints)
        #: shard file -> (its state, the checked memory map): random access (:meth:`rows`)
        #: opens each shard once, not once per call; least recently used first
        self._mapped: OrderedDict[Path, tuple[tuple[int, int, int], np.ndarray]] = OrderedDict()
        self._paths: dict[tuple[str, int], Path] = {}  # (checkpoint, start) -> file, built once
        self._complete: set[str] = set()  # checkpoints found complete: not listed again

    def __repr__(self) -> str:
        cps = ", ".join(c.id for c in self._checkpoints)
        return (
            f"FeatureStore({str(self.root)!r}, n_examples={self.n_examples}, "
            f"feature_dim={self.feature_dim}, dtype={self.spec.dtype}, checkpoints=[{cps}])"
        )

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike, ids: Sequence[str], spec: StoreSpec) -> FeatureStore:
        """New store, or re-open an existing one to resume.

        If ``<root>/store.json`` exists, the saved spec and ids must equal the given ones, else
        :class:`StoreMismatchError` naming every differing field. Validates that ids are a
        non-empty sequence of unique strings (:class:`InputError` otherwise). Several workers may
        call this concurrently on the same root; the first to write store.json wins and the others
        re-open and compare.
        """
        if not isinstance(spec, StoreSpec):
            raise InputError(f"spec must be a StoreSpec, got {type(spec).__name__}")
        ids = _check_ids(ids)
        root = Path(root)
        meta = root / META_FILE
        if not meta.exists():
            root.mkdir(parents=True, exist_ok=True)
            (root / CHECKPOINTS_DIR).mkdir(exist_ok=True)
            # ids.json first: once store.json exists, ids.json must exist too. Never touch an
            # ids.json that belongs to an existing store.
            if not meta.exists():
                write_atomic(root / IDS_FILE, _json_bytes(ids))
                doc = {
                    "format": FORMAT,
                    "version": VERSION,
                    "spec": spec.to_json(),
                    "n_examples": len(ids),
                    "checkpoints": [],
                }
                if create_atomic(meta, _json_bytes(doc)):
                    return cls(root, spec, ids, [])
        # An existing store (possibly just written by another worker): it must match.
        store = cls.open(root)
        problems = _spec_differences(store.spec, spec)
        ids_problem = _ids_difference(store.ids, ids)
        if ids_problem:
            problems.append(ids_problem)
        if problems:
            raise StoreMismatchError(
                f"the feature store at {root} was created with different settings: "
                + "; ".join(problems)
                + ". Use a new store root, or the original settings to resume."
            )
        return store

    @classmethod
    def open(cls, root: str | os.PathLike) -> FeatureStore:
        """Open an existing store for reading or appending.

        :class:`StoreError` if ``root`` has no store.json; :class:`StoreCorruptError` if
        store.json or ids.json are unreadable or inconsistent.
        """
        root = Path(root)
        meta_path = root / META_FILE
        if not meta_path.is_file():
            raise StoreError(
                f"no feature store at {root} ({META_FILE} not found); create one first"
            )
        spec, n_examples, checkpoints = _read_meta(meta_path)
        ids_path = root / IDS_FILE
        try:
            ids = json.loads(ids_path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise StoreCorruptError(f"{ids_path} is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StoreCorruptError(f"{ids_path} is unreadable: {exc}") from None
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise StoreCorruptError(f"{ids_path} must hold a JSON list of strings")
        if len(ids) != n_examples:
            raise StoreCorruptError(
                f"{ids_path} lists {len(ids)} ids but {meta_path} records n_examples={n_examples}"
            )
        if len(set(ids)) != len(ids):
            raise StoreCorruptError(f"{ids_path} contains duplicate ids")
        return cls(root, spec, ids, checkpoints)

    # ---- basic properties ------------------------------------------------------------------

    @property
    def n_examples(self) -> int:
        """Number of examples (rows per checkpoint)."""
        return len(self.ids)

    @property
    def feature_dim(self) -> int:
        """Length of each feature vector."""
        return self.spec.feature_dim

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        """Registered checkpoints, in registration order."""
        return list(self._checkpoints)

    # ---- checkpoints -----------------------------------------------------------------------

    def add_checkpoint(
        self,
        checkpoint_id: str,
        *,
        learning_rate: float | None = None,
        fingerprint: str | None = None,
    ) -> CheckpointInfo:
        """Register a checkpoint whose features will be written.

        Idempotent when the info is equal; :class:`StoreMismatchError` when a checkpoint of that
        id exists with a different learning rate or fingerprint. The re-read and replace of
        store.json hold the store's lock, so a checkpoint registered by another process at the
        same time is never lost.
        """
        info = CheckpointInfo(checkpoint_id, learning_rate=learning_rate, fingerprint=fingerprint)
        with locked(self.root / LOCK_FILE):
            self._refresh()
            existing = next((c for c in self._checkpoints if c.id == info.id), None)
            if existing is None:
                self._write_meta([*self._checkpoints, info])
            elif existing != info:
                diffs = [
                    f"{name} (stored {getattr(existing, name)!r}, given {getattr(info, name)!r})"
                    for name in ("learning_rate", "fingerprint")
                    if getattr(existing, name) != getattr(info, name)
                ]
                raise StoreMismatchError(
                    f"checkpoint {info.id!r} is already registered in {self.root} with different "
                    f"info: {'; '.join(diffs)}"
                )
        (self.root / CHECKPOINTS_DIR / info.id).mkdir(parents=True, exist_ok=True)
        return info

    def set_learning_rate(
        self, checkpoint_id: str, learning_rate: float, *, replace: bool = False
    ) -> CheckpointInfo:
        """Record the learning rate of an existing checkpoint (TracIn's weight) without
        re-extracting. A different rate already recorded is kept unless ``replace``
        (:class:`StoreMismatchError` then). Locked like :meth:`add_checkpoint`."""
        with locked(self.root / LOCK_FILE):
            self._refresh()
            existing = self.checkpoint(checkpoint_id)
            info = CheckpointInfo(existing.id, learning_rate, existing.fingerprint)
            if existing.learning_rate not in (None, info.learning_rate) and not replace:
                raise StoreMismatchError(
                    f"checkpoint {existing.id!r} of {self.root} already records learning rate "
                    f"{existing.learning_rate!r}; pass replace=True (--replace) to change it"
                )
            self._write_meta([info if c.id == info.id else c for c in self._checkpoints])
        return info

    def same_weights(self) -> list[list[str]]:
        """Groups of checkpoint ids whose recorded weight fingerprints are equal (each group has
        two or more ids): features of one model state recorded under several names."""
        self._refresh()
        groups: dict[str, list[str]] = {}
        for c in self._checkpoints:
            if c.fingerprint is not None:
                groups.setdefault(c.fingerprint, []).append(c.id)
        return [ids for ids in groups.values() if len(ids) > 1]

    def checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        """The registered checkpoint of that id; :class:`StoreError` listing known ids if not."""
        _check_checkpoint_id(checkpoint_id)
        for refresh in (False, True):
            if refresh:  # maybe registered by another process since we opened the store
                self._refresh()
            for c in self._checkpoints:
                if c.id == checkpoint_id:
                    return c
        known = ", ".join(repr(c.id) for c in self._checkpoints) or "none"
        raise StoreError(
            f"unknown checkpoint {checkpoint_id!r} in {self.root} (known: {known}); "
            "register it with add_checkpoint()"
        )

    # ---- shards ----------------------------------------------------------------------------

    def shard_ranges(self) -> list[tuple[int, int]]:
        """The ``[start, stop)`` example ranges of all shards, in order."""
        n, size = self.n_examples, self.spec.shard_size
        return [(s, min(s + size, n)) for s in range(0, n, size)]

    def shard_path(self, checkpoint_id: str, start: int) -> Path:
        """Path of the shard starting at example ``start`` (whether or not it exists)."""
        _check_checkpoint_id(checkpoint_id)
        stop = self._shard_stop(start)
        return self.root / CHECKPOINTS_DIR / checkpoint_id / _shard_name(int(start), stop)

    def missing_shards(
        self, checkpoint_id: str, *, worker: int = 0, num_workers: int = 1
    ) -> list[tuple[int, int]]:
        """Ranges of shards of this worker (shard ``i`` belongs to ``i % num_workers``) that are
        not written yet for the checkpoint."""
        num_workers = _positive_int("num_workers", num_workers)
        if isinstance(worker, bool) or not isinstance(worker, (int, np.integer)):
            raise InputError(f"worker must be an integer, got {worker!r}")
        if not 0 <= worker < num_workers:
            raise InputError(f"worker must be in [0, {num_workers}), got {worker}")
        self.checkpoint(checkpoint_id)
        try:  # one directory listing instead of a stat per shard
            present = set(os.listdir(self.root / CHECKPOINTS_DIR / checkpoint_id))
        except FileNotFoundError:
            present = set()
        return [
            (start, stop)
            for i, (start, stop) in enumerate(self.shard_ranges())
            if i % num_workers == worker and _shard_name(start, stop) not in present
        ]

    def write_shard(
        self,
        checkpoint_id: str,
        start: int,
        features: Any,
        losses: Any | None = None,
        predictions: Any | None = None,
    ) -> None:
        """Atomically write rows ``[start, start + len(features))`` for a checkpoint.

        ``features``: numpy array or torch tensor of shape exactly ``(stop - start, feature_dim)``
        for a valid shard start; cast to the spec dtype. :class:`InputError` for a wrong start or
        shape, any non-finite value, or values that overflow float16; nothing is written then.
        The ``.sha256`` sidecar is renamed into place before the ``.npy``, so an existing shard
        always has its checksum. Re-writing an existing shard replaces it.

        ``losses`` (optional, shape ``(stop - start,)``): the per-example value of the function
        whose gradients the features are (training loss or query measurement), kept beside the
        shard as ``<shard>.losses`` (float64 ``.npy`` bytes) and written before it.
        ``predictions`` (optional, integers, shape ``(stop - start,)``): the label the model
        predicted for each example (classifiers), kept as ``<shard>.predictions`` likewise.
        """
        self.checkpoint(checkpoint_id)
        stop = self._shard_stop(start)
        ids = self.ids[start:stop]
        out = shard_rows(features, (start, stop), self.feature_dim, self.spec.dtype, ids)
        sidecars = sidecar_arrays(losses, predictions, (start, stop))
        write_shard_files(self.shard_path(checkpoint_id, start), out, sidecars)

    # ---- completeness ----------------------------------------------------------------------

    def is_complete(self, checkpoint_id: str | None = None) -> bool:
        """Whether every shard of the checkpoint is written. ``None``: of every registered
        checkpoint, and at least one is registered."""
        if checkpoint_id is not None:
            return not self.missing_shards(checkpoint_id)
        self._refresh()
        return bool(self._checkpoints) and all(
            not self.missing_shards(c.id) for c in self._checkpoints
        )

    def status(self) -> dict[str, tuple[int, int]]:
        """``checkpoint id -> (shards written, shards expected)``, for registered checkpoints."""
        self._refresh()
        expected = len(self.shard_ranges())
        return {
            c.id: (expected - len(self.missing_shards(c.id)), expected) for c in self._checkpoints
        }

    # ---- reading ---------------------------------------------------------------------------

    def losses(self, checkpoint_id: str | None = None) -> np.ndarray:
        """Per-example values of the differentiated function (float64 ``[n_examples]``), as
        recorded by extraction. :class:`StoreError` if the store holds none."""
        return self._per_example(checkpoint_id, LOSSES_SUFFIX, "per-example losses")

    def predictions(self, checkpoint_id: str | None = None) -> np.ndarray:
        """The label the model predicted for each example (int64 ``[n_examples]``), as recorded
        by extraction for classification tasks. :class:`StoreError` if the store holds none."""
        return self._per_example(checkpoint_id, PREDICTIONS_SUFFIX, "predicted labels")

    def _per_example(self, checkpoint_id: str | None, suffix: str, what: str) -> np.ndarray:
        cid = self._resolve_checkpoint(checkpoint_id)
        self._require_complete(cid)
        parts = []
        for start, stop in self.shard_ranges():
            path = self.shard_path(cid, start).with_suffix(suffix)
            try:
                payload = path.read_bytes()
            except FileNotFoundError:
                raise StoreError(
                    f"{path} is missing: this store has no recorded {what} for checkpoint "
                    f"{cid!r} (re-extract to record them)"
                ) from None
            except OSError as exc:
                raise StoreCorruptError(f"{path}: unreadable {what} ({exc})") from None
            parts.append(_checked_sidecar(path, payload, stop - start, what))
        return np.concatenate(parts)

    def features(self, checkpoint_id: str | None = None) -> np.ndarray:
        """All rows of a checkpoint as one float32 ``(n_examples, feature_dim)`` array.

        Loads everything into memory (fine for small stores; use :meth:`iter_blocks` otherwise).
        Default checkpoint: the only registered one. :class:`StoreIncompleteError` if a shard is
        missing.
        """
        cid = self._resolve_checkpoint(checkpoint_id)
        self._require_complete(cid)
        out = np.empty((self.n_examples, self.feature_dim), dtype=np.float32)
        for start, stop in self.shard_ranges():
            out[start:stop] = self._load_shard(cid, start)
        return out

    def iter_blocks(
        self, checkpoint_id: str | None = None, block_size: int = 4096
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` blocks of a checkpoint in order, rows as float32 arrays of at
        most ``block_size`` rows, with bounded memory (blocks are copied out of memory-mapped
        shards and may span shards). :class:`StoreIncompleteError` if a shard is missing."""
        block_size = _positive_int("block_size", block_size)
        cid = self._resolve_checkpoint(checkpoint_id)
        self._require_complete(cid)  # checked eagerly, before the first block is asked for
        return self._blocks(cid, block_size)

    def rows(self, checkpoint_id: str | None, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows ``indices`` (any order, repeats allowed) of a checkpoint as float32
        ``(len(indices), feature_dim)``, read from the memory-mapped shards that hold them
        (random access: candidate re-scoring, index training samples)."""
        cid = self._resolve_checkpoint(checkpoint_id)
        self._require_complete(cid)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_examples):
            raise InputError(f"row indices must lie in [0, {self.n_examples})")
        out = np.empty((len(indices), self.feature_dim), dtype=np.float32)
        size = self.spec.shard_size
        order = np.argsort(indices, kind="stable")  # grouped by shard: one slice each
        shard_of = indices[order] // size
        starts = np.flatnonzero(np.diff(shard_of, prepend=-1))
        for start, stop in zip(starts, [*starts[1:], len(order)]):
            where, first = order[start:stop], int(shard_of[start]) * size
            shard = np.asarray(self._load_shard(cid, first))  # a plain array: faster indexing
            out[where] = shard[indices[where] - first]
        return out

    def _blocks(self, cid: str, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
        ranges = self.shard_ranges()
        size = self.spec.shard_size
        cached: tuple[int, np.ndarray] | None = None
        for b0 in range(0, self.n_examples, block_size):
            b1 = min(b0 + block_size, self.n_examples)
            block = np.empty((b1 - b0, self.feature_dim), dtype=np.float32)
            for i in range(b0 // size, (b1 - 1) // size + 1):
                s0, s1 = ranges[i]
                if cached is None or cached[0] != i:  # mapped once: not kept (see _load_shard)
                    cached = (i, self._load_shard(cid, s0, keep=False))
                lo, hi = max(b0, s0), min(b1, s1)
                block[lo - b0 : hi - b0] = cached[1][lo - s0 : hi - s0]
            yield b0, block

    def verify(self) -> None:
        """Check every shard file of every registered checkpoint now: a readable ``.npy`` whose
        dtype and shape match the spec, an expected range, a sha256 equal to its sidecar's and
        finite values. :class:`StoreCorruptError` naming each bad file and the problem. Missing
        shards are not an error here (see :meth:`is_complete`)."""
        self._refresh()
        expected = dict(self.shard_ranges())
        problems: list[str] = []
        for c in self._checkpoints:
            folder = self.root / CHECKPOINTS_DIR / c.id
            load = functools.partial(self._load_shard, c.id, recheck=True)
            problems += shard_file_problems(folder, expected, load)
        if problems:
            shown = problems[:20]
            more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise StoreCorruptError(
                f"feature store {self.root} has {len(problems)} corrupt file(s):\n"
                + "\n".join(shown)
                + more
            )

    # ---- internals -------------------------------------------------------------------------

    def _shard_stop(self, start: Any) -> int:
        size, n = self.spec.shard_size, self.n_examples
        if (
            isinstance(start, bool)
            or not isinstance(start, (int, np.integer))
            or start < 0
            or start >= n
            or start % size
        ):
            raise InputError(
                f"bad shard start {start!r}: shards start at multiples of shard_size={size} "
                f"below n_examples={n}"
            )
        return min(int(start) + size, n)

    def _resolve_checkpoint(self, checkpoint_id: str | None) -> str:
        if checkpoint_id is not None:
            return self.checkpoint(checkpoint_id).id
        if not self._checkpoints:
            self._refresh()
        if not self._checkpoints:
            raise StoreError(f"feature store {self.root} has no checkpoints registered")
        if len(self._checkpoints) > 1:
            raise InputError(
                f"feature store {self.root} has {len(self._checkpoints)} checkpoints "
                f"({', '.join(c.id for c in self._checkpoints)}); name the one to read"
            )
        return self._checkpoints[0].id

    def _require_complete(self, cid: str) -> None:
        missing = [] if cid in self._complete else self.missing_shards(cid)
        if missing:
            total = len(self.shard_ranges())
            rows = sum(stop - start for start, stop in missing)
            raise StoreIncompleteError(
                f"checkpoint {cid!r} of feature store {self.root} is incomplete: "
                f"{total - len(missing)} of {total} shards written ({rows} of {self.n_examples} "
                f"examples missing, first missing rows [{missing[0][0]}, {missing[0][1]})). "
                "Resume by re-running extraction with the same store root and settings; "
                "it writes only the missing shards."
            )
        self._complete.add(cid)

    def _load_shard(
        self, cid: str, start: int, recheck: bool = False, keep: bool = True
    ) -> np.ndarray:
        """Memory-map one shard, checking its header's dtype and shape, and — the first time in
        this process, whenever the file changed, or with ``recheck`` — its checksum and values.
        Kept mapped for the next random read unless ``keep=False`` (a sequential pass: a kept
        map holds every page read in the process's memory, the whole store after one pass),
        which also drops a map kept by earlier reads."""
        key = (cid, int(start))  # a shard deleted since fails here: StoreIncompleteError
        path = self._paths.get(key) or self._paths.setdefault(key, self.shard_path(cid, start))
        try:
            state = _file_state(path)
        except FileNotFoundError:
            raise StoreIncompleteError(
                f"shard {path} is missing; resume extraction to write it"
            ) from None
        mapped = self._mapped.get(path) if keep else self._mapped.pop(path, None)
        if mapped is not None and mapped[0] == state and not recheck:
            if keep:
                self._mapped.move_to_end(path)
            return mapped[1]
        rows = self._shard_stop(start) - start
        arr = open_shard(path, (rows, self.feature_dim), self.spec.dtype)
        if recheck or _VERIFIED.get(str(path)) != state:
            check_shard(path, arr, self.ids[start : start + rows])
            _VERIFIED[str(path)] = state
        if keep:
            self._mapped[path] = (state, arr)
        if len(self._mapped) > MAPPED_SHARDS:
            self._mapped.popitem(last=False)
        return arr

    def _refresh(self) -> None:
        """Re-read the checkpoint list from store.json (another process may have added one)."""
        spec, n_examples, checkpoints = _read_meta(self.root / META_FILE)
        if spec != self.spec or n_examples != self.n_examples:
            raise StoreCorruptError(
                f"{self.root / META_FILE} changed under an open store (spec or n_examples differ)"
            )
        self._checkpoints = checkpoints

    def _write_meta(self, checkpoints: list[CheckpointInfo]) -> None:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "spec": self.spec.to_json(),
            "n_examples": self.n_examples,
            "checkpoints": [c.to_json() for c in checkpoints],
        }
        write_atomic(self.root / META_FILE, _json_bytes(doc))
        self._checkpoints = list(checkpoints)
