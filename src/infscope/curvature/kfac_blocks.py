"""One module's K-FAC factors: its slice of the feature vector, the eigendecompositions of its
Kronecker factors (or of its dense block), its trace and EK-FAC's corrected eigenvalues.

Shared by the factors (:mod:`infscope.curvature.kfac`), their file format
(:mod:`infscope.curvature.kfac_file`) and the EK-FAC estimator that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from infscope.curvature.covariance import UNSUPPORTED
from infscope.errors import InputError
from infscope.store.layout import BlockLayout, ModuleBlock

__all__ = ["FactorBlock", "blocks_from_layout", "eigh_psd", "require_layout"]


def eigh_psd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0: round-off of a PSD matrix) and eigenvectors, ascending."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return np.clip(values, 0.0, None), vectors


@dataclass
class FactorBlock:
    """One module's slice of the feature vector (:class:`~infscope.store.layout.ModuleBlock`)
    and its factors."""

    layout: ModuleBlock
    tokens: int = 0  # positions that entered A and S (Kronecker blocks)
    trace: float = 0.0  # mean_i ||M_i||^2: trace of the exact empirical-Fisher block
    s_values: np.ndarray | None = None  # [rows] eigenvalues of S_p
    s_vectors: np.ndarray | None = None  # [rows, rows]; None: the features are in the eigenbasis
    a_values: np.ndarray | None = None  # [cols]
    a_vectors: np.ndarray | None = None  # [cols, cols]
    corrected: np.ndarray | None = None  # [rows, cols] EK-FAC eigenvalues
    dense_values: np.ndarray | None = None  # [dim] eigenvalues of the dense block (non-Kronecker)
    dense_vectors: np.ndarray | None = None  # [dim, dim]

    @property
    def name(self) -> str:
        return self.layout.module

    @property
    def rows(self) -> int:
        return self.layout.rows

    @property
    def cols(self) -> int:
        return self.layout.cols

    @property
    def kronecker(self) -> bool:
        return self.layout.kronecker

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def diagonal(self) -> bool:
        """A Kronecker block whose features are already in its eigenbasis (``eigen`` stores):
        its eigenvectors are the identity and are not stored."""
        return self.kronecker and self.s_values is not None and self.s_vectors is None

    @property
    def shape(self) -> tuple[int, int]:
        return self.layout.shape

    @property
    def slice(self) -> slice:
        return self.layout.columns

    def damping_unit(self, n: int) -> float:
        """What relative damping multiplies. A Kronecker block: the mean of its K-FAC/EK-FAC
        eigenvalues, ``trace / dim`` (kronfluence's unit; on an eigen store, the mean of the
        eigenvalues kept). A dense block, the exact Fisher of ``n`` examples: its mean non-zero
        eigenvalue, ``trace / min(n, dim)``."""
        if not self.kronecker:
            return self.trace / min(n, self.dim)
        return self.trace / self.dim

    def kfac_values(self) -> np.ndarray:
        """``λ_S ⊗ λ_A`` as ``[rows, cols]``, rescaled so that it sums to ``trace``."""
        values = np.outer(self.s_values, self.a_values)
        total = values.sum()
        return values * (self.trace / total) if total > 0 else np.zeros_like(values)

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("s_values", "s_vectors", "a_values", "a_vectors", "corrected")
        if self.diagonal:
            names = ("s_values", "a_values", "corrected")
        if not self.kronecker:
            names = ("dense_values", "dense_vectors")
        out = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        out["trace"] = np.array([self.trace], dtype=np.float64)
        return out

    def expected_shapes(self, corrected: bool, diagonal: bool) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"trace": (1,)}
        if self.kronecker:
            shapes.update(s_values=(self.rows,), a_values=(self.cols,))
            if not diagonal:
                shapes.update(s_vectors=(self.rows, self.rows), a_vectors=(self.cols, self.cols))
            if corrected:
                shapes["corrected"] = (self.rows, self.cols)
        else:
            shapes.update(dense_values=(self.dim,), dense_vectors=(self.dim, self.dim))
        return shapes


def require_layout(projection: dict[str, Any]) -> BlockLayout:
    """The per-module layout a projection records, or :class:`InputError` for projections that
    mix modules (K-FAC needs per-module blocks)."""
    blocks = projection.get("blocks")
    if not blocks:
        raise InputError(
            f"{UNSUPPORTED} (this projection is {projection.get('kind', 'unknown')!r})"
        )
    return BlockLayout.parse(blocks)


def blocks_from_layout(layout: BlockLayout) -> list[FactorBlock]:
    """Empty factor blocks, one per module of ``layout``."""
    return [FactorBlock(block) for block in layout]
