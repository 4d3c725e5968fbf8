"""How an index holds vectors: padded to a width the product quantisers split evenly, and for
the ``l2`` metric lifted so that L2 neighbours are the largest inner products."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Augmentation"]


@dataclass(frozen=True)
class Augmentation:
    """Vectors as the index holds them: padded with zeros to ``width`` columns, and — when
    ``lifted`` — training rows ``[x, √(R² − ‖x‖²), 0…]`` against queries ``[q, 0, 0…]``, so that
    ``‖q̃ − x̃‖² = ‖q‖² + R² − 2 q·x`` (maximum inner product as L2 nearest neighbours)."""

    dim: int
    width: int
    radius: float
    lifted: bool

    def train(self, x: np.ndarray) -> np.ndarray:
        if self.width == self.dim:
            return x
        out = np.zeros((len(x), self.width), dtype=np.float32)
        out[:, : self.dim] = x
        if self.lifted:
            squared = self.radius**2 - np.einsum("ij,ij->i", x, x, dtype=np.float64)
            out[:, self.dim] = np.sqrt(np.maximum(squared, 0.0))
        return out

    def query(self, q: np.ndarray) -> np.ndarray:
        if self.width == self.dim:
            return np.ascontiguousarray(q, np.float32)
        out = np.zeros((len(q), self.width), dtype=np.float32)
        out[:, : self.dim] = q
        return out

    def inner_products(self, q: np.ndarray, found: np.ndarray) -> np.ndarray:
        """The index's own scores as inner products (distances converted)."""
        if not self.lifted:
            return found
        norms = np.einsum("ij,ij->i", q, q)[:, None]
        return (norms + self.radius**2 - found) / 2
