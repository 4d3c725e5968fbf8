"""Where each tracked module sits in a stored feature vector.

A projection that keeps modules apart (identity, Kronecker, and the eigen projection with one
basis) writes each module's projected gradient matrix ``rows × cols``, row-major, after the
previous module's. The store records that layout in its projection description (``"blocks"``:
``{"module", "shape": [rows, cols], "kronecker"}`` per module, the format stores have always
had); :meth:`BlockLayout.parse` is the one reader of it, and estimators and curvature code take
the typed :class:`BlockLayout` from :attr:`StoreSpec.layout
<infscope.store.spec.StoreSpec.layout>`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from infscope.errors import InputError

__all__ = ["BlockLayout", "ModuleBlock"]


@dataclass(frozen=True)
class ModuleBlock:
    """One module's slice of the feature vector: its gradient matrix of ``rows × cols``
    (projected), starting at column ``start``. ``kronecker``: the module's gradient is a sum of
    outer products, so its curvature block factors as ``S ⊗ A``; otherwise (LayerNorm) the block
    is dense."""

    module: str
    rows: int
    cols: int
    kronecker: bool
    start: int = 0

    @property
    def dim(self) -> int:
        return self.rows * self.cols

    @property
    def stop(self) -> int:
        return self.start + self.dim

    @property
    def columns(self) -> slice:
        """The block's columns in the feature vector."""
        return slice(self.start, self.stop)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "shape": [self.rows, self.cols], "kronecker": self.kronecker}


@dataclass(frozen=True)
class BlockLayout:
    """The modules' blocks, in feature order (each starts where the previous one stops)."""

    blocks: tuple[ModuleBlock, ...]

    @classmethod
    def of(cls, entries: Sequence[tuple[str, int, int, bool]]) -> BlockLayout:
        """Blocks laid out one after the other from ``(module, rows, cols, kronecker)``."""
        blocks, start = [], 0
        for module, rows, cols, kronecker in entries:
            blocks.append(ModuleBlock(str(module), int(rows), int(cols), bool(kronecker), start))
            start += int(rows) * int(cols)
        return cls(tuple(blocks))

    @classmethod
    def parse(cls, entries: Any) -> BlockLayout:
        """The layout recorded in a store's projection description (``"blocks"``);
        :class:`InputError` naming the entry when it is malformed."""
        if not isinstance(entries, (list, tuple)) or not entries:
            raise InputError(f"a block layout must be a non-empty list, got {entries!r}")
        parsed = []
        for index, entry in enumerate(entries):
            try:
                rows, cols = (int(x) for x in entry["shape"])
                module, kronecker = entry["module"], entry["kronecker"]
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f"block {index} of the layout is not {{'module', 'shape': [rows, cols], "
                    f"'kronecker'}}: {entry!r}"
                ) from None
            if not isinstance(module, str) or not isinstance(kronecker, bool) or min(rows, cols) < 1:
                raise InputError(f"block {index} of the layout is invalid: {entry!r}")
            parsed.append((module, rows, cols, kronecker))
        return cls.of(parsed)

    def to_json(self) -> list[dict[str, Any]]:
        """The layout as a store records it."""
        return [block.to_json() for block in self.blocks]

    @property
    def width(self) -> int:
        """Columns the blocks cover."""
        return self.blocks[-1].stop if self.blocks else 0

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(block.module for block in self.blocks)

    def __iter__(self) -> Iterator[ModuleBlock]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)
