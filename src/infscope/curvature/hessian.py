"""The Hessian of the mean training loss over the tracked parameters, matrix-free.

Products ``H V`` use forward-over-reverse differentiation (``torch.func.jvp`` of ``grad``)
vectorised over all columns of ``V`` with ``torch.func.vmap``, so a solver's block of query
vectors costs one pass over the training data, not one pass per query. Nothing of size
``dim²`` is formed unless :meth:`~infscope.curvature.linalg.Curvature.dense` is asked for (the exact
solver on small models). Pairs with stores extracted with the identity projection, whose layout it
shares: each module's gradient matrix, row-major, modules in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from infscope.curvature.linalg import Curvature, krylov_eigenpairs
from infscope.curvature.spectrum import HESSIAN_DAMPING_SHARE
from infscope.data import ExampleSet
from infscope.errors import InputError, StoreMismatchError
from infscope.gradients.modules import TrackedModule
from infscope.tasks.base import Task, to_device

#: Below this dimension the trace is exact (one product per coordinate); above, Hutchinson.
EXACT_TRACE_DIM = 256


class ModelHessian(Curvature):
    """``H = ∇²_θ (1/n Σ_i L_i(θ))`` over the tracked parameters of ``model``.

    Its default relative damping is 0.3 (on top of the shift of an indefinite Hessian): the best
    values on the benchmark's digits tasks were 0.1–0.3, within 0.005 LDS of it.

    Args:
        model, task, data: what the training loss is (``task.train_loss``) and over which
            examples it is averaged.
        modules: the tracked modules (their order fixes the layout).
        batch_size: training examples per forward pass.
        vector_batch: columns of ``V`` pushed through one vectorised product (memory grows with
            ``batch_size x vector_batch``).
        trace_probes: Rademacher probes of the Hutchinson trace estimate (``dim`` above
            :data:`EXACT_TRACE_DIM`); seeded by ``seed``.
        lanczos_steps: Krylov steps that estimate the most negative eigenvalue (relative
            damping shifts an indefinite Hessian by it).
    """

    default_damping = 0.3
    default_damping_share = HESSIAN_DAMPING_SHARE

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        data: ExampleSet,
        modules: Sequence[TrackedModule],
        batch_size: int = 256,
        vector_batch: int = 64,
        trace_probes: int = 64,
        lanczos_steps: int = 30,
        seed: int = 0,
    ) -> None:
        if min(batch_size, vector_batch, trace_probes) < 1:
            raise InputError("batch_size, vector_batch and trace_probes must be positive")
        if len(data) == 0:
            raise InputError("the Hessian needs at least one training example")
        self.model, self.task, self.data, self.modules = model, task, data, list(modules)
        self.batch_size, self.vector_batch = batch_size, vector_batch
        self.trace_probes, self.lanczos_steps, self.seed = trace_probes, lanczos_steps, seed
        self.device = next(model.parameters()).device
        self.layout, offset = [], 0
        for m in self.modules:
            positions = torch.arange(offset, offset + m.num_params, dtype=torch.float64)
            for name, index in m.split(positions).items():
                self.layout.append((m, name, index.reshape(-1).long()))
            offset += m.num_params
        self.dim = offset
        self.n_examples = len(data)
        flat = torch.zeros(self.dim, dtype=torch.float64)
        for module, name, index in self.layout:
            flat[index] = module.parameters()[name].detach().reshape(-1).double().cpu()
        self.theta = flat.to(self.device)
        self.names = {id(p): n for n, p in model.named_parameters()}
        self._trace: float | None = None
        self._smallest: float | None = None

    @classmethod
    def from_extractor(cls, extractor, data: ExampleSet, **options) -> ModelHessian:
        """The Hessian over the extractor's tracked modules, at the model's current weights."""
        return cls(extractor.model, extractor.task, data, extractor.modules, **options)

    def check_store(self, store) -> None:
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
        super().check_store(store)

    def _loss(self, theta: torch.Tensor, batch) -> torch.Tensor:
        params = {}
        for module, name, index in self.layout:
            param = module.parameters()[name]
            params[self.names[id(param)]] = theta[index].reshape(param.shape).to(param.dtype)
        losses = self.task.train_loss(_Bound(self.model, params), batch)
        return losses.sum().to(torch.float64) / self.n_examples

    def _batches(self):
        for start in range(0, self.n_examples, self.batch_size):
            stop = min(start + self.batch_size, self.n_examples)
            examples = [self.data[i] for i in range(start, stop)]
            yield to_device(self.task.collate(examples), self.device)

    def matvec(self, vectors: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(vectors), dtype=torch.float64, device=self.device)
        out = torch.zeros_like(v)
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in self._batches():
                gradient = grad(lambda t, b=batch: self._loss(t, b))

                def hvp(tangent, gradient=gradient):
                    return jvp(gradient, (self.theta,), (tangent,))[1]

                for start in range(0, v.shape[1], self.vector_batch):
                    columns = v[:, start : start + self.vector_batch]
                    # detached: untracked parameters requiring grad leave a graph behind
                    product = vmap(hvp, in_dims=1, out_dims=1)(columns).detach()
                    out[:, start : start + columns.shape[1]] += product
        finally:
            self.model.train(was_training)
        return out.cpu().numpy()

    def gradient(
        self, rows: Sequence[int] | None = None, theta: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """The mean training loss over ``rows`` of the data (default: all of it) and its gradient
        in this operator's layout, at ``theta`` (default: the current weights); float64, one
        forward and backward pass. What a Newton step or a gradient step on a data subset needs."""
        index = list(range(self.n_examples)) if rows is None else [int(r) for r in rows]
        if not index:
            raise InputError("the gradient needs at least one example")
        at = self.theta if theta is None else torch.as_tensor(theta, dtype=torch.float64)
        at = at.to(self.device)
        loss, total = 0.0, torch.zeros_like(at)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(index), self.batch_size):
                examples = [self.data[i] for i in index[start : start + self.batch_size]]
                batch = to_device(self.task.collate(examples), self.device)
                part, value = grad_and_value(lambda t, b=batch: self._loss(t, b))(at)
                total += part.detach()
                loss += float(value.detach())
        finally:
            self.model.train(was_training)
        scale = self.n_examples / len(index)  # ``_loss`` divides by n_examples
        return loss * scale, (total * scale).cpu().numpy()

    def assign(self, theta: np.ndarray) -> None:
        """Write ``theta`` (this layout) into the model's tracked parameters, in place, and
        evaluate the operator there from now on (products, trace and gradients)."""
        flat = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
        if flat.shape != (self.dim,):
            raise InputError(f"theta has shape {tuple(flat.shape)}, the layout ({self.dim},)")
        with torch.no_grad():
            for module, name, index in self.layout:
                param = module.parameters()[name]
                param.copy_(flat[index].reshape(param.shape).to(param.device, param.dtype))
        self.theta = flat.to(self.device)
        self._trace, self._smallest = None, None

    def trace(self) -> float:
        """Exact for ``dim ≤ 256``; otherwise Hutchinson's estimate ``mean_j zⱼᵀ H zⱼ`` over
        ``trace_probes`` seeded Rademacher vectors (relative error ≈ ``sqrt(2 / probes)`` times
        ``‖H‖_F / trace``, enough to set a damping scale)."""
        if self._trace is None:
            if self.dim <= EXACT_TRACE_DIM:
                self._trace = float(np.trace(self.dense()))
            else:
                rng = np.random.default_rng(self.seed)
                probes = rng.choice([-1.0, 1.0], size=(self.dim, self.trace_probes))
                self._trace = float((probes * self.matvec(probes)).sum() / self.trace_probes)
        return self._trace

    def smallest_eigenvalue(self) -> float:
        """The most negative eigenvalue (≤ 0), from ``lanczos_steps`` Lanczos steps (seeded),
        enlarged by 10 %: Ritz values lie inside the spectrum, so the estimate errs towards 0."""
        if self._smallest is None:
            values, _ = krylov_eigenpairs(self, self.lanczos_steps, self.seed)
            self._smallest = 1.1 * min(float(values[-1]), 0.0)
        return self._smallest

    def describe(self) -> dict:
        estimate = "exact" if self.dim <= EXACT_TRACE_DIM else f"hutchinson-{self.trace_probes}"
        return {"curvature": "ModelHessian", "trace": estimate}


class _Bound(nn.Module):
    """The model called with some parameters replaced (for ``torch.func``)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model, self.params = model, params

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)
