"""The K-FAC factors file: one safetensors file, float64 arrays named ``<module index>.<array>``
and the JSON metadata under the ``"infscope"`` key. Written atomically; read back only after
every array's name, shape, dtype and finiteness is checked against the metadata (never pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from infscope.curvature.kfac_blocks import FactorBlock, blocks_from_layout, require_layout
from infscope.errors import InputError
from infscope.io import write_atomic

__all__ = ["FORMAT", "VERSION", "factors_metadata", "file_format", "read_factors", "write_factors"]

FORMAT = "infscope.kfac_factors"
VERSION = 1


def canonical(value: Any) -> Any:
    """``value`` as it reads back from JSON."""
    return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))


def factors_metadata(blocks: list[FactorBlock], header: dict[str, Any]) -> dict[str, Any]:
    """The file's metadata: format, per-module shapes and token counts, the factors' provenance
    (``header``: module names, projection, model, checkpoint, fingerprint, examples and
    where the statistics came from) and whether EK-FAC's eigenvalues are in."""
    kronecker = [b for b in blocks if b.kronecker]
    return {
        "format": FORMAT,
        "version": VERSION,
        "modules": [
            {
                "name": b.name,
                "shape": [b.rows, b.cols],
                "kronecker": b.kronecker,
                "tokens": b.tokens,
                "diagonal": b.diagonal,
            }
            for b in blocks
        ],
        **header,
        "corrected": all(b.corrected is not None for b in kronecker),
    }


def write_factors(path: str | Path, blocks: list[FactorBlock], header: dict[str, Any]) -> Path:
    """Write the factors' arrays and metadata to ``path``, atomically."""
    from safetensors.numpy import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{index}.{name}": np.ascontiguousarray(array, dtype=np.float64)
        for index, block in enumerate(blocks)
        for name, array in block.arrays().items()
    }
    meta = json.dumps(canonical(factors_metadata(blocks, header)), sort_keys=True)
    write_atomic(path, save(tensors, metadata={"infscope": meta}))
    return path


def file_format(path: str | Path) -> str | None:
    """The ``format`` an infscope safetensors file declares (``None`` if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {}).get("infscope") or "{}")
    except Exception:  # unreadable: the loader gives its own error
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def read_factors(path: str | Path) -> tuple[list[FactorBlock], dict[str, Any]]:
    """The blocks (arrays filled in) and metadata of a file written by :func:`write_factors`;
    :class:`InputError` if it is not one, or is inconsistent."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no K-FAC factors file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            raw = (handle.metadata() or {}).get("infscope")
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path} is not an infscope K-FAC factors file")
    if meta.get("version") != VERSION:
        raise InputError(
            f"{path}: unsupported K-FAC factors version {meta.get('version')!r} "
            f"(this infscope reads {VERSION})"
        )
    try:
        blocks = blocks_from_layout(require_layout(meta["projection"]))
        _fill(blocks, meta, tensors)
        if [b.name for b in blocks] != list(meta["module_names"]):
            raise InputError("module names do not match the projection's block layout")
        return blocks, meta
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: inconsistent K-FAC factors file: {exc}") from None


def _fill(blocks: list[FactorBlock], meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Check the arrays against the metadata and set them on the blocks."""
    described = [
        {"name": b.name, "shape": [b.rows, b.cols], "kronecker": b.kronecker} for b in blocks
    ]
    stated = [{k: m[k] for k in ("name", "shape", "kronecker")} for m in meta["modules"]]
    if stated != described:
        raise InputError("module list does not match the projection's block layout")
    corrected = bool(meta["corrected"])
    expected = {}
    for index, (block, entry) in enumerate(zip(blocks, meta["modules"])):
        block.tokens = int(entry["tokens"])
        diagonal = bool(entry.get("diagonal", False))
        for name, shape in block.expected_shapes(corrected, diagonal).items():
            expected[f"{index}.{name}"] = (block, name, shape)
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise InputError(f"arrays missing {missing[:5]}, unexpected {unknown[:5]}")
    for key, (block, name, shape) in expected.items():
        array = tensors[key]
        if array.shape != shape or array.dtype != np.float64:
            raise InputError(
                f"array {key!r} has shape {array.shape} ({array.dtype}), expected {shape}"
            )
        if not np.isfinite(array).all():
            raise InputError(f"array {key!r} holds NaN or inf")
        if name == "trace":
            block.trace = float(array[0])
        else:
            setattr(block, name, array)
