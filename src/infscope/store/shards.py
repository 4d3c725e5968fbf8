"""Shard files: one atomic ``.npy`` of ``shard_size`` rows per checkpoint, its sha256 written
first, and optional per-example sidecars (``.losses``, ``.predictions``) with their own
checksums — how a shard is written, and how one is checked when read."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError, NonFiniteError, StoreCorruptError, StoreIncompleteError
from infscope.io import HashingWriter, fsync_dir, sha256_file, tmp_path, write_atomic

LOSSES_SUFFIX = ".losses"
PREDICTIONS_SUFFIX = ".predictions"
CHECKSUM_SUFFIX = ".sha256"
#: per-example sidecar files of a shard -> what they hold (for messages)
SIDECARS = {LOSSES_SUFFIX: "per-example losses", PREDICTIONS_SUFFIX: "predicted labels"}
_SHARD_RE = re.compile(r"^shard-(\d{10})-(\d{10})\.npy$")
#: shard file -> (inode, size, mtime) when this process last found it intact
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def _shard_name(start: int, stop: int) -> str:
    return f"shard-{start:010d}-{stop:010d}.npy"


def _file_state(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def checked_states(paths: Sequence[Path]) -> dict[str, list[int]]:
    """``(inode, size, mtime)`` of each of ``paths`` that this process found intact and that is
    unchanged since: a record another process can trust (:func:`trust_checked`)."""
    states = {}
    for path in map(str, paths):
        state = _VERIFIED.get(path)
        if state is not None and _file_state(Path(path)) == state:
            states[path] = list(state)
    return states


def trust_checked(states: dict[str, Sequence[int]]) -> int:
    """Take the shards of a :func:`checked_states` record as checked in this process — those
    whose file is unchanged (same inode, size and mtime) — so that reading a few rows does not
    re-hash whole shards; a changed file is checked again when read. Returns how many."""
    trusted = 0
    for path, recorded in states.items():
        try:
            state = _file_state(Path(path))
        except OSError:
            continue
        if list(state) == [int(v) for v in recorded]:
            _VERIFIED[path] = state
            trusted += 1
    return trusted


def bad_rows(arr: np.ndarray) -> np.ndarray:
    """Positions (in ``arr``) of rows holding a NaN or inf, in order."""
    return np.flatnonzero(~np.isfinite(arr).all(axis=1))


def write_shard_files(final: Path, out: np.ndarray, sidecars: list[tuple[str, np.ndarray]]) -> None:
    """Write the sidecars (each with its checksum), then the shard's checksum, then the shard
    itself (fsynced, renamed into place): a shard that exists is complete and has its checksum."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for suffix, values in sidecars:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, values, version=(1, 0), allow_pickle=False)
        payload = buffer.getvalue()
        write_atomic(final.with_suffix(suffix), payload)
        digest = hashlib.sha256(payload).hexdigest()
        write_atomic(final.with_suffix(suffix + CHECKSUM_SUFFIX), (digest + "\n").encode())
    tmp = tmp_path(final)
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            np.lib.format.write_array(writer, out, version=(1, 0), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        write_atomic(final.with_suffix(CHECKSUM_SUFFIX), (writer.sha.hexdigest() + "\n").encode())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def shard_rows(
    features: Any, span: tuple[int, int], feature_dim: int, dtype: str, ids: Sequence[str]
) -> np.ndarray:
    """The features of rows ``span = (start, stop)`` as the shard stores them (little-endian
    ``dtype``); :class:`InputError` for a wrong shape, a non-finite value (naming the examples by
    ``ids``, the span's) or values that overflow ``dtype``."""
    start, stop = span
    arr = _as_numpy(features)
    expected = (stop - start, feature_dim)
    if arr.shape != expected:
        raise InputError(
            f"shard [{start}, {stop}) needs features of shape {expected}, got {arr.shape}"
        )
    bad = bad_rows(arr)
    if bad.size:
        raise NonFiniteError(
            f"features for shard [{start}, {stop}) contain non-finite values (NaN or inf) in "
            f"{bad.size} of {len(arr)} rows; nothing was written",
            positions=bad.tolist(),
            ids=[ids[int(i)] for i in bad],
        )
    target = np.dtype(dtype).newbyteorder("<")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=target)
    bad = bad_rows(out) if out is not arr else bad
    if bad.size:
        raise InputError(
            f"features for shard [{start}, {stop}) overflow {dtype} in {bad.size} "
            f"of {len(arr)} rows (first example id {ids[int(bad[0])]!r}, "
            f"largest |value| {float(np.max(np.abs(arr))):.6g}); nothing was written. "
            "Use dtype='float32' or rescale the projection."
        )
    return out


def sidecar_arrays(
    losses: Any | None, predictions: Any | None, span: tuple[int, int]
) -> list[tuple[str, np.ndarray]]:
    """``(suffix, array)`` of the per-example sidecars given for rows ``span``, checked."""
    start, stop = span
    sidecars = []
    if losses is not None:
        values = np.asarray(_as_numpy(losses), dtype="<f8")
        if values.shape != (stop - start,) or not np.isfinite(values).all():
            raise InputError(
                f"losses for shard [{start}, {stop}) must be {stop - start} finite values, "
                f"got shape {values.shape}"
            )
        sidecars.append((LOSSES_SUFFIX, values))
    if predictions is not None:
        labels = _as_numpy(predictions)
        if labels.shape != (stop - start,) or labels.dtype.kind not in "iu":
            raise InputError(
                f"predictions for shard [{start}, {stop}) must be {stop - start} integer "
                f"labels, got {labels.dtype} of shape {labels.shape}"
            )
        sidecars.append((PREDICTIONS_SUFFIX, labels.astype("<i8")))
    return sidecars


#: memory-mapped shards a store keeps open (each map holds a file descriptor): up to 4,096 (a
#: 10⁷-row store in 8,192-row shards has 1,221), at most a quarter of the limit, at least 256
def _mapped_shards() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 256
    return max(256, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))


MAPPED_SHARDS = _mapped_shards()


def open_shard(path: Path, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """The shard memory-mapped, its header's dtype and shape checked (not yet its checksum)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise StoreIncompleteError(
            f"shard {path} is missing; resume extraction to write it"
        ) from None
    except (ValueError, OSError, EOFError, TypeError, KeyError, SyntaxError) as exc:
        raise StoreCorruptError(
            f"{path}: unreadable shard ({exc}); delete it and resume to rewrite it"
        ) from None
    want = np.dtype(dtype).newbyteorder("<")
    if not isinstance(arr, np.ndarray) or arr.dtype != want:
        got = getattr(arr, "dtype", type(arr).__name__)
        raise StoreCorruptError(f"{path}: dtype {got}, expected {want} ({dtype})")
    if arr.shape != shape:
        raise StoreCorruptError(f"{path}: shape {arr.shape}, expected {shape}")
    return arr


def check_shard(path: Path, arr: np.ndarray, ids: Sequence[str]) -> None:
    """:class:`StoreCorruptError` unless the shard's sha256 equals its sidecar's and every
    value is finite (a non-finite row names its example; ``ids``: the shard's rows' ids)."""
    sidecar = path.with_suffix(CHECKSUM_SUFFIX)
    try:
        recorded = sidecar.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreCorruptError(
            f"{path}: checksum file {sidecar.name} unreadable ({exc}); delete the shard and "
            "resume to rewrite it"
        ) from None
    actual = sha256_file(path)
    if recorded != actual:
        raise StoreCorruptError(
            f"{path}: sha256 mismatch (recorded {recorded[:16]}..., actual {actual[:16]}...): "
            "the file changed after it was written; delete the shard and resume to rewrite it"
        )
    step = max(1, (1 << 22) // max(arr.shape[1] if arr.ndim == 2 else 1, 1))
    for first in range(0, len(arr), step):
        bad = bad_rows(arr[first : first + step])
        if bad.size:
            shown = [ids[first + int(i)] for i in bad[:5]]
            raise StoreCorruptError(
                f"{path}: non-finite features (NaN or inf) for example id(s) "
                f"{', '.join(map(repr, shown))}{' ...' if bad.size > 5 else ''}; re-extract "
                "them (delete the shard and resume)"
            )


def _as_numpy(features: Any) -> np.ndarray:
    """numpy view of a numpy array or (any-device) torch tensor, without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(features, torch.Tensor):
        t = features.detach()
        if t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()  # e.g. bfloat16, which numpy cannot represent
        return t.cpu().numpy()
    arr = np.asarray(features)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"features must be a real numeric array, got dtype {arr.dtype}")
    return arr


def _checked_sidecar(path: Path, payload: bytes, rows: int, what: str) -> np.ndarray:
    """The array in a shard's ``.losses`` / ``.predictions`` file, after checking its sha256
    against ``<file>.sha256`` (stores written before sidecar checksums have none: not checked),
    its shape and, for losses, that every value is finite. :class:`StoreCorruptError` otherwise."""
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    try:
        recorded: str | None = sidecar.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        recorded = None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreCorruptError(
            f"{path}: checksum file {sidecar.name} unreadable ({exc})"
        ) from None
    if recorded is not None and recorded != hashlib.sha256(payload).hexdigest():
        raise StoreCorruptError(
            f"{path}: sha256 mismatch with {sidecar.name}: the {what} changed after they were "
            "written; delete the shard and resume extraction to rewrite it"
        )
    try:
        values = np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StoreCorruptError(f"{path}: unreadable {what} ({exc})") from None
    if values.shape != (rows,):
        raise StoreCorruptError(f"{path}: shape {values.shape}, expected {(rows,)}")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise StoreCorruptError(f"{path}: non-finite {what}; re-extract the shard")
    return values


def shard_file_problems(
    folder: Path, expected: dict[int, int], load: Callable[[int], Any]
) -> list[str]:
    """What is wrong with each shard file in a checkpoint's ``folder``: a name outside the
    store's shard ranges (``expected``: start -> stop), a shard ``load(start)`` (which checks it)
    refuses, or a sidecar that does not check out. Missing shards are not problems here."""
    problems: list[str] = []
    if not folder.is_dir():
        return problems
    for path in sorted(folder.glob("shard-*.npy")):
        m = _SHARD_RE.match(path.name)
        if not m or expected.get(int(m.group(1))) != int(m.group(2)):
            problems.append(f"{path}: unexpected shard file for this store's shard ranges")
            continue
        try:
            load(int(m.group(1)))
        except StoreCorruptError as exc:
            problems.append(str(exc))
        rows = int(m.group(2)) - int(m.group(1))
        for suffix, what in SIDECARS.items():
            extra = path.with_suffix(suffix)
            if not extra.exists():
                continue
            try:
                _checked_sidecar(extra, extra.read_bytes(), rows, what)
            except (StoreCorruptError, OSError) as exc:
                problems.append(str(exc))
    return problems
