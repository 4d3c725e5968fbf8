"""Atomic file writes: readers see either the old file or the whole new one, never a part; and
the check that an output path can be written at all, made before any heavy work.

Every file infscope writes (store shards and metadata, scores, retraining caches, recordings)
goes through :func:`write_atomic`: a hidden temporary file in the same folder, flushed and
fsynced, renamed into place, and the folder fsynced so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

Writer = Callable[[BinaryIO], object]


class HashingWriter:
    """File-like wrapper that sha256-hashes what is written through it. Not a real file, so
    numpy writes an array in bounded chunks through :meth:`write` instead of ``tofile``."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self._handle.write(data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def tmp_path(final: Path) -> Path:
    """A hidden temporary name beside ``final``, unique per process and thread."""
    return final.with_name(f".{final.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_tmp(final: Path, data: bytes | Writer) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary handle) to a synced temp file."""
    tmp = tmp_path(final)
    try:
        with open(tmp, "wb") as handle:
            if isinstance(data, (bytes, bytearray, memoryview)):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_atomic(final: str | Path, data: bytes | Writer) -> None:
    """Replace ``final`` with ``data`` atomically."""
    final = Path(final)
    tmp = write_tmp(final, data)
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def _finite(value: Any) -> Any:
    """NaN and infinities as None, in nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(final: str | Path, payload: dict[str, Any]) -> None:
    """``payload`` as strict JSON (NaN and infinities written as null), atomically, creating the
    folder."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(final, json.dumps(_finite(payload), indent=2, allow_nan=False).encode())


def create_atomic(final: str | Path, data: bytes | Writer) -> bool:
    """Like :func:`write_atomic` but never replaces an existing file; False if one exists."""
    final = Path(final)
    tmp = write_tmp(final, data)
    try:
        try:
            os.link(tmp, final)  # atomic, and fails if ``final`` exists
        except FileExistsError:
            return False
        except OSError:  # filesystem without hard links: small race window, acceptable
            if final.exists():
                return False
            os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(final.parent)
    return True


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block: processes
    that update one file by read-modify-write take turns. Without ``fcntl`` (Windows) the block
    runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


TABLE_SUFFIXES = (".csv", ".parquet")


def write_table(path: str | Path, columns: dict[str, Sequence[Any]]) -> Path:
    """Write named, equally long columns as a ``.csv`` or ``.parquet`` table, atomically (the
    parquet writer, pyarrow, is imported only then)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        from infscope.errors import InputError

        raise InputError(f"{path}: a table is written as {' or '.join(TABLE_SUFFIXES)}")
    if suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
        data = text.getvalue().encode("utf-8")
        write_atomic(path, data)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: list(values) for name, values in columns.items()})
    write_atomic(path, lambda handle: pq.write_table(table, handle))
    return path


def check_writable(path: str | Path, *, directory: bool, option: str = "--out") -> None:
    """Raise :class:`~infscope.errors.InputError` unless ``path`` can be written: an output
    folder (``directory=True``, created later if missing) or an output file. Called before any
    heavy work, so a run never computes for minutes and then fails on its output. Nothing is
    created: a probe file is written in the nearest existing folder and removed at once (so a
    read-only file system or missing permissions are found, for root too)."""
    from infscope.errors import InputError

    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise InputError(f"{option} {path} is a file; it must be a folder (or a new path)")
        if not directory and path.is_dir():
            raise InputError(f"{option} {path} is a folder; it must be a file path")
    folder = path if directory and path.is_dir() else path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{option} {path} cannot be created: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".infscope-write-check-", dir=folder)
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"{option} {path} cannot be written: {folder}: {reason}") from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
