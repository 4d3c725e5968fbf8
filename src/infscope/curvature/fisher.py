"""The empirical Fisher of stored training features, ``H = Φᵀ Φ / n``: the default curvature of
influence functions and TRAK.

With ``kind="identity"`` features it is the exact empirical Fisher (Gauss-Newton with observed
labels) over the tracked parameters; with a projection it is the Fisher in projected space. It is
a Gram operator, so besides products with ``H`` it offers products with ``Φ`` and ``Φᵀ`` and the
``n x n`` kernel ``Φ Φᵀ / n``, which the exact solver inverts instead of ``H`` when ``n < dim``.
Model curvatures that need forward and backward passes (the Hessian of the training loss) live in
:mod:`infscope.curvature.hessian`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from infscope.curvature.linalg import Curvature, gram_accumulate, unit_rows
from infscope.errors import StoreMismatchError
from infscope.store import FeatureStore


class FeatureFisher(Curvature):
    """``H = Φᵀ Φ / n`` over one checkpoint's training features.

    Args:
        store: the training feature store.
        checkpoint: which checkpoint's features.
        block_size: rows per block when streaming.
        normalize: build ``H`` from unit-norm rows (for estimators that normalise features, so
            that the curvature and the vectors it acts on live in the same space).
        max_memory_bytes: features up to this size (float32) are held in memory; larger stores
            stream block by block on every product.
    """

    def __init__(
        self,
        store: FeatureStore,
        checkpoint: str,
        block_size: int = 4096,
        normalize: bool = False,
        max_memory_bytes: int = 2**31,
    ) -> None:
        self.store, self.checkpoint, self.block_size = store, checkpoint, block_size
        self.normalize = normalize
        self.dim, self.n_examples = store.feature_dim, store.n_examples
        fits = self.n_examples * self.dim * 4 <= max_memory_bytes
        self._features = self._prepare(store.features(checkpoint)) if fits else None
        self._trace: float | None = None

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        return unit_rows(block) if self.normalize else block

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` float32 blocks of ``Φ`` (normalised if asked)."""
        if self._features is not None:
            for start in range(0, self.n_examples, self.block_size):
                yield start, self._features[start : start + self.block_size]
        else:
            for start, block in self.store.iter_blocks(self.checkpoint, self.block_size):
                yield start, self._prepare(block)

    def times(self, vectors: np.ndarray, exact: bool = False) -> np.ndarray:
        """``Φ @ vectors`` for ``vectors [dim, m]``: ``[n, m]`` float64 (float32 products summed
        in float64 unless ``exact``; see :func:`~infscope.curvature.linalg.gram_accumulate`)."""
        out = np.empty((self.n_examples, vectors.shape[1]))
        right = np.ascontiguousarray(vectors.T)
        for start, block in self.blocks():
            out[start : start + len(block)] = gram_accumulate(block, right, exact)
        return out

    def transpose_times(self, rows: np.ndarray, exact: bool = False) -> np.ndarray:
        """``Φᵀ @ rows`` for ``rows [n, m]``: ``[dim, m]`` float64 (per-block products in
        float32 unless ``exact``, summed over blocks in float64)."""
        dtype = np.float64 if exact else np.float32
        out = np.zeros((self.dim, rows.shape[1]))
        for start, block in self.blocks():
            part = rows[start : start + len(block)].astype(dtype)
            out += block.T.astype(dtype, copy=False) @ part
        return out

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        return self.transpose_times(self.times(vectors)) / self.n_examples

    def gram(self) -> np.ndarray:
        """The ``[n, n]`` kernel ``Φ Φᵀ / n``, in float64 (what the exact solver inverts)."""
        out = np.empty((self.n_examples, self.n_examples))
        for i, rows_i in self.blocks():
            for j, rows_j in self.blocks():
                if j < i:
                    continue
                part = gram_accumulate(rows_i, rows_j, exact=True)
                out[i : i + len(rows_i), j : j + len(rows_j)] = part
                out[j : j + len(rows_j), i : i + len(rows_i)] = part.T
        return out / self.n_examples

    def dense(self, max_dim: int = 20_000) -> np.ndarray:
        """``H`` in float64, accumulated over row chunks (bounded float64 copies)."""
        if self.dim > max_dim:
            return super().dense(max_dim)  # raises the size error
        out = np.zeros((self.dim, self.dim))
        step = max(1, 2**24 // self.dim)
        for _, block in self.blocks():
            for first in range(0, len(block), step):
                rows = block[first : first + step].astype(np.float64)
                out += rows.T @ rows
        return out / self.n_examples

    def trace(self) -> float:
        if self._trace is None:
            total = sum(
                float(np.einsum("ij,ij->", b, b, dtype=np.float64)) for _, b in self.blocks()
            )
            self._trace = total / self.n_examples
        return self._trace

    def sample_matvec(
        self, vectors: np.ndarray, rng: np.random.Generator, batch_size: int
    ) -> np.ndarray:
        if self._features is None or batch_size >= self.n_examples:
            return self.matvec(vectors)
        picked = rng.choice(self.n_examples, size=batch_size, replace=False)
        rows = self._features[picked].astype(np.float64)
        return rows.T @ (rows @ vectors) / batch_size

    def check_store(self, store) -> None:
        """The scored store must be projected like this curvature's (a sampled-label store of
        the same training set gives the true Fisher)."""
        super().check_store(store)
        for name in ("projection", "modules", "model"):
            if getattr(store.spec, name) != getattr(self.store.spec, name):
                raise StoreMismatchError(
                    f"{store.root} and the curvature's store {self.store.root} differ in {name}: "
                    f"extract both with the same settings"
                )

    def describe(self) -> dict:
        return {
            "curvature": "FeatureFisher",
            "normalize": self.normalize,
            "gradient": self.store.spec.gradient,
        }
