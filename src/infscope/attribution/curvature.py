"""Curvature operators ``H`` for influence functions: what ``(H + λI)^-1`` is taken of.

* :class:`FeatureFisher` — ``H = Φᵀ Φ / n`` over the training features in a store: the empirical
  Fisher (Gauss-Newton with observed labels) in projected-gradient space. Works at any scale and
  with any projection; with ``kind="identity"`` it is the exact empirical Fisher.
* :class:`ModelHessian` — the Hessian of the mean training loss with respect to the tracked
  parameters, by ``torch.func`` (exact dense matrix, or Hessian-vector products). For small
  models; pairs with stores extracted with the identity projection, whose layout it shares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp

from infscope.data import ExampleSet
from infscope.errors import InputError, StoreMismatchError
from infscope.gradients.modules import TrackedModule
from infscope.store import FeatureStore
from infscope.tasks.base import Task, to_device


class Curvature(ABC):
    """A symmetric positive semi-definite operator on feature space."""

    dim: int

    @abstractmethod
    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        """``H @ vectors`` for ``vectors`` of shape ``[dim, m]`` (float64)."""

    @abstractmethod
    def dense(self) -> np.ndarray:
        """``H`` as a ``[dim, dim]`` float64 array (small ``dim`` only)."""

    def trace(self) -> float:
        """``trace(H)``; the mean eigenvalue ``trace / dim`` scales relative damping."""
        return float(np.trace(self.dense()))

    def sample_matvec(
        self, vectors: np.ndarray, rng: np.random.Generator, batch_size: int
    ) -> np.ndarray:
        """An unbiased minibatch estimate of ``H @ vectors`` (default: the exact product)."""
        return self.matvec(vectors)

    def check_store(self, store: FeatureStore) -> None:
        """Raise if features in ``store`` do not live in this operator's space."""
        if store.feature_dim != self.dim:
            raise StoreMismatchError(
                f"{store.root} has {store.feature_dim} features, the curvature has dimension {self.dim}"
            )


class FeatureFisher(Curvature):
    """``H = Φᵀ Φ / n`` from one checkpoint's training features.

    The features are held in memory (float32) when they fit ``max_memory_bytes``; otherwise every
    product streams the store block by block.
    """

    def __init__(
        self,
        store: FeatureStore,
        checkpoint: str,
        block_size: int = 4096,
        max_memory_bytes: int = 2**31,
    ) -> None:
        self.store, self.checkpoint, self.block_size = store, checkpoint, block_size
        self.dim, self.n = store.feature_dim, store.n_examples
        fits = self.n * self.dim * 4 <= max_memory_bytes
        self._features = store.features(checkpoint) if fits else None

    def _blocks(self):
        if self._features is not None:
            for start in range(0, self.n, self.block_size):
                yield self._features[start : start + self.block_size]
        else:
            for _, block in self.store.iter_blocks(self.checkpoint, self.block_size):
                yield block

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        out = np.zeros_like(vectors, dtype=np.float64)
        for block in self._blocks():
            block = block.astype(np.float64)
            out += block.T @ (block @ vectors)
        return out / self.n

    def dense(self) -> np.ndarray:
        out = np.zeros((self.dim, self.dim))
        for block in self._blocks():
            block = block.astype(np.float64)
            out += block.T @ block
        return out / self.n

    def trace(self) -> float:
        return float(sum((b.astype(np.float64) ** 2).sum() for b in self._blocks()) / self.n)

    def sample_matvec(
        self, vectors: np.ndarray, rng: np.random.Generator, batch_size: int
    ) -> np.ndarray:
        if self._features is None or batch_size >= self.n:
            return self.matvec(vectors)
        rows = self._features[rng.choice(self.n, size=batch_size, replace=False)].astype(np.float64)
        return rows.T @ (rows @ vectors) / batch_size


class ModelHessian(Curvature):
    """Hessian of the mean training loss over the tracked parameters, in the identity
    projection's layout (each module's gradient matrix, row-major, modules in order).

    Built from the model, task and training data; products use forward-over-reverse
    Hessian-vector products, ``dense()`` the full Hessian. Meant for small models (the dense
    Hessian of ``D`` parameters has ``D²`` entries).
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        data: ExampleSet,
        modules: Sequence[TrackedModule],
        batch_size: int = 256,
    ) -> None:
        self.model, self.task, self.data, self.modules = model, task, data, list(modules)
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.layout, offset = [], 0
        for m in self.modules:
            positions = torch.arange(offset, offset + m.num_params, dtype=torch.float64)
            for name, index in m.split(positions).items():
                self.layout.append((m, name, index.reshape(-1).long()))
            offset += m.num_params
        self.dim = sum(m.num_params for m in self.modules)
        flat = torch.zeros(self.dim, dtype=torch.float64)
        for module, name, index in self.layout:
            flat[index] = module.parameters()[name].detach().reshape(-1).double().cpu()
        self.theta = flat.to(self.device)
        self.names = {id(p): n for n, p in model.named_parameters()}

    @classmethod
    def from_extractor(cls, extractor, data: ExampleSet, batch_size: int = 256) -> ModelHessian:
        """The Hessian over the extractor's tracked modules."""
        return cls(extractor.model, extractor.task, data, extractor.modules, batch_size)

    def check_store(self, store: FeatureStore) -> None:
        if store.spec.projection.get("kind") != "identity":
            raise StoreMismatchError(
                f"{store.root} holds {store.spec.projection.get('kind')!r}-projected features; the "
                f"model Hessian needs unprojected gradients (ProjectionConfig(kind='identity'))"
            )
        names = tuple(m.name for m in self.modules)
        if tuple(store.spec.modules) != names:
            raise StoreMismatchError(
                f"{store.root} tracks modules {store.spec.modules}, the Hessian {names}"
            )

    def _loss(self, theta: torch.Tensor, batch) -> torch.Tensor:
        params = {}
        for module, name, index in self.layout:
            param = module.parameters()[name]
            params[self.names[id(param)]] = theta[index].reshape(param.shape).to(param.dtype)
        return self.task.train_loss(_Bound(self.model, params), batch).sum() / len(self.data)

    def _batches(self):
        for start in range(0, len(self.data), self.batch_size):
            examples = [
                self.data[i] for i in range(start, min(start + self.batch_size, len(self.data)))
            ]
            yield to_device(self.task.collate(examples), self.device)

    def _with_eval(self, fn):
        was_training = self.model.training
        self.model.eval()
        try:
            return fn()
        finally:
            self.model.train(was_training)

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(vectors, dtype=torch.float64, device=self.device)

        def run():
            out = torch.zeros_like(v)
            for batch in self._batches():
                gradient = grad(lambda t, b=batch: self._loss(t, b))
                for column in range(v.shape[1]):
                    out[:, column] += jvp(gradient, (self.theta,), (v[:, column],))[1]
            return out

        return self._with_eval(run).cpu().numpy()

    def dense(self) -> np.ndarray:
        if self.dim > 20_000:
            raise InputError(
                f"a dense Hessian of {self.dim} parameters is too large; use a matrix-free solver"
            )

        def run():
            out = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
            for batch in self._batches():
                out += hessian(lambda t, b=batch: self._loss(t, b))(self.theta)
            return out

        return self._with_eval(run).cpu().numpy()


class _Bound(nn.Module):
    """The model called with some parameters replaced (for ``torch.func``)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model, self.params = model, params

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)
