"""Low-rank preconditioned queries: many queries scored in one pass over the training store.

A module's preconditioned query gradient is a ``rows × cols`` matrix. Kept whole, a block of
queries over wide features holds only a few rows (estimator blocks are bounded in bytes), so
scoring ``q`` queries reads the training store ``q / rows_per_block`` times. Replacing each
module's matrix by its best rank-``r`` approximation ``U_r diag(s_r) V_rᵀ`` (truncated SVD, as
the EK-FAC study of LLM generalisation does for "query batching", Grosse et al. 2023, rank 32)
stores ``r (rows + cols)`` numbers per query and module instead of ``rows × cols``, so thousands
of queries fit at once and the training store is read once per checkpoint. The price: the
scores of the discarded singular directions (the share of each query's squared norm that is
kept is reported as ``energy``), and ``r`` times the multiply-adds of a dense product —
worthwhile where reading the store, not arithmetic, is the cost (wide or full-rank stores, GPU).

Modules whose matrices have at most ``r`` rows or columns (and non-Kronecker modules) stay dense:
the approximation would be exact there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from infscope.errors import InputError
from infscope.store.layout import ModuleBlock

__all__ = ["LowRankQueries"]

#: bytes of float64 intermediate a product may hold (query chunks are sized to it)
PRODUCT_BYTES = 2**25


@dataclass
class _Module:
    layout: ModuleBlock
    left: torch.Tensor | None = None  # [q, rows, r]: U_r diag(s_r)
    right: torch.Tensor | None = None  # [q, r, cols]: V_rᵀ
    dense: torch.Tensor | None = None  # [q, rows * cols] when kept whole
    kept: float = 0.0  # squared Frobenius norm kept, summed over queries
    total: float = 0.0  # squared Frobenius norm, summed over queries

    @property
    def low_rank(self) -> bool:
        return self.left is not None


class LowRankQueries:
    """Every query's preconditioned features, module by module: rank-``r`` factors where that
    compresses, dense elsewhere (see the module docstring). Build with :meth:`compress`."""

    def __init__(
        self, modules: list[_Module], n_queries: int, rank: int, device: torch.device
    ) -> None:
        self.modules = modules
        self.n_queries = n_queries
        self.rank = rank
        self.device = device

    @classmethod
    def compress(
        cls,
        chunks: Iterable[np.ndarray],
        layout: Iterable[ModuleBlock],
        n_queries: int,
        rank: int,
        device: torch.device | None = None,
    ) -> LowRankQueries:
        """Factor the preconditioned query rows given as ``chunks`` (``[m, dim]`` each, in query
        order, ``n_queries`` in all) module by module, on ``device`` (the CPU by default)."""
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise InputError(f"query rank must be a positive int, got {rank!r}")
        device = device or torch.device("cpu")
        options = {"dtype": torch.float64, "device": device}
        modules = []
        for entry in layout:
            module = _Module(entry)
            if entry.kronecker and min(entry.rows, entry.cols) > rank:
                module.left = torch.zeros(n_queries, entry.rows, rank, **options)
                module.right = torch.zeros(n_queries, rank, entry.cols, **options)
            else:
                module.dense = torch.zeros(n_queries, entry.rows * entry.cols, **options)
            modules.append(module)
        start = 0
        for chunk in chunks:
            stop = start + len(chunk)
            if stop > n_queries:
                raise InputError(f"more than the {n_queries} queries announced")
            for module in modules:
                part = torch.from_numpy(
                    np.ascontiguousarray(chunk[:, module.layout.columns], dtype=np.float64)
                ).to(device)
                module.total += float((part * part).sum())
                if not module.low_rank:
                    module.dense[start:stop] = part
                    module.kept += float((part * part).sum())
                    continue
                matrices = part.reshape(len(part), module.layout.rows, module.layout.cols)
                u, s, vh = torch.linalg.svd(matrices, full_matrices=False)
                s = s[:, :rank]
                module.left[start:stop] = u[:, :, :rank] * s[:, None, :]
                module.right[start:stop] = vh[:, :rank, :]
                module.kept += float((s * s).sum())
            start = stop
        if start != n_queries:
            raise InputError(f"{start} query rows given, {n_queries} announced")
        return cls(modules, n_queries, rank, device)

    @property
    def energy(self) -> float:
        """Share of the queries' squared norm that the factors keep (1 = exact)."""
        total = sum(m.total for m in self.modules)
        return sum(m.kept for m in self.modules) / total if total > 0 else 1.0

    @property
    def nbytes(self) -> int:
        """Bytes the factors and dense parts hold."""
        tensors = [getattr(m, n) for m in self.modules for n in ("left", "right", "dense")]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def products(self, train: np.ndarray) -> np.ndarray:
        """``[n_queries, b]`` scores of the training rows ``train`` (``[b, dim]``, prepared)."""
        block = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float64)).to(self.device)
        out = torch.zeros(self.n_queries, len(block), dtype=torch.float64, device=self.device)
        for module in self.modules:
            part = block[:, module.layout.columns]
            out += module.dense @ part.T if not module.low_rank else self._factored(module, part)
        return out.cpu().numpy()

    def _factored(self, module: _Module, part: torch.Tensor) -> torch.Tensor:
        """``Σ_j s_j u_jᵀ G v_j`` for every query and training matrix ``G``, contracting the
        longer side first so the intermediate ``[b, side, q_chunk, r]`` is the shorter one, in
        query chunks of at most :data:`PRODUCT_BYTES`."""
        b, rows, cols, rank = len(part), module.layout.rows, module.layout.cols, self.rank
        matrices = part.reshape(b, rows, cols)
        side = min(rows, cols)
        step = max(1, PRODUCT_BYTES // (8 * b * side * rank))
        pieces = []
        for first in range(0, self.n_queries, step):
            left = module.left[first : first + step]  # [c, rows, r]
            right = module.right[first : first + step]  # [c, r, cols]
            chunk = len(left)
            if rows <= cols:  # G V: [b, rows, c, r], then with U s over rows and r
                inner = matrices.reshape(b * rows, cols) @ right.reshape(chunk * rank, cols).T
                inner = inner.reshape(b, rows, chunk, rank)
                pieces.append(torch.einsum("bicr,cir->cb", inner, left))
            else:  # sᵀUᵀ G: [b, cols, c, r], then with V over cols and r
                flat = matrices.transpose(1, 2).reshape(b * cols, rows)
                inner = flat @ left.transpose(1, 2).reshape(chunk * rank, rows).T
                inner = inner.reshape(b, cols, chunk, rank)
                pieces.append(torch.einsum("bjcr,crj->cb", inner, right))
        return torch.cat(pieces)
