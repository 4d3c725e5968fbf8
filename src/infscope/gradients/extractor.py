"""Per-example gradient features in one batched forward and backward pass.

Forward hooks capture each tracked layer's input and output; one ``torch.autograd.grad`` of the
*summed* per-example losses with respect to those outputs gives every example's output gradients
(an example's loss depends only on its own activations, in eval mode). Parameter gradients are
never computed — autograd skips the weight-gradient products — so extraction costs about a
training step, and the projector turns the captured factors into features.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from infscope.devices import resolve_device
from infscope.errors import InputError, NonFiniteError
from infscope.gradients.modules import TrackedModule, select_modules
from infscope.gradients.projection import ProjectionConfig, Projector, build_projector
from infscope.tasks.base import Batch, Task, to_device

#: ``loss``: the training loss (training examples); ``measurement``: the task's measurement
#: (queries); ``fisher``: the training loss at targets sampled from the model (true Fisher).
GRADIENT_KINDS = ("loss", "measurement", "fisher")


@dataclass(frozen=True)
class ModuleSelection:
    """Which layers to track: glob ``include``/``exclude`` patterns and layer ``types``."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    types: tuple[str, ...] | None = None

    def select(self, model: nn.Module) -> list[TrackedModule]:
        return select_modules(model, self.include, self.exclude, self.types)


@dataclass(frozen=True)
class CapturedBatch:
    """What one forward/backward pass of a batch yields: per tracked module the captured layer
    inputs ``A`` ``[B, T, n_cols]`` and output gradients ``G`` ``[B, T, n_rows]`` (the projector
    turns them into features; curvature statistics are gathered from them), the per-example
    values of the differentiated function ``[B]`` (the loss, or the measurement), and the
    labels the model predicted ``[B]`` (classification tasks; ``None`` otherwise)."""

    factors: list[tuple[torch.Tensor, torch.Tensor]]
    values: torch.Tensor
    predictions: torch.Tensor | None
    gradient: str = "loss"


@dataclass
class _Capture:
    inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over parameter names, shapes and values: identifies a checkpoint's weights."""
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        flat = tensor.reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class GradientExtractor:
    """Projected per-example gradients of a model's tracked layers.

    Args:
        model: the model (put in eval mode while extracting, so dropout is off).
        task: what is differentiated (:class:`~infscope.tasks.Task`).
        projection: how gradients are compressed (default: Kronecker, ``k = 4096``).
        modules: which layers are tracked (default: every trainable Linear/Conv1D/Conv2d; for a
            PEFT model its adapters).
        device: where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        projection: ProjectionConfig | None = None,
        modules: ModuleSelection | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.device = resolve_device(device) if device is not None else _model_device(model)
        self.projection = projection or ProjectionConfig()
        self.selection = modules or ModuleSelection()
        self.modules = self.selection.select(model)
        self.projector: Projector = build_projector(self.projection, self.modules)

    @property
    def feature_dim(self) -> int:
        return self.projector.feature_dim

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    def bind_weights(self) -> str:
        """Fingerprint the model's current weights and tell the projector (whose matrices may
        depend on the checkpoint: per-checkpoint eigenbases). Returns the fingerprint."""
        fingerprint = model_fingerprint(self.model)
        self.projector.bind_weights(fingerprint)
        return fingerprint

    def capture(
        self, batch: Batch, gradient: str = "loss", generator: torch.Generator | None = None
    ) -> CapturedBatch:
        """One forward and backward pass over ``batch``: the captured ``(A, G)`` per tracked
        module, the per-example values of the differentiated function and the labels the model
        predicted (``gradient="fisher"`` draws the targets with ``generator``, a seeded CPU
        generator)."""
        if gradient not in GRADIENT_KINDS:
            raise InputError(f"gradient must be one of {GRADIENT_KINDS}, got {gradient!r}")
        if gradient == "fisher" and generator is None:
            raise InputError("gradient='fisher' samples targets: give a seeded torch.Generator")
        captures = [_Capture() for _ in self.modules]
        batch_size = _batch_size(batch)
        handles = [
            module.module.register_forward_hook(_capture_hook(capture, batch_size))
            for module, capture in zip(self.modules, captures)
        ]
        outputs_seen: list[Any] = []
        if type(self.task).predicted_labels is not Task.predicted_labels:
            handles.append(
                self.model.register_forward_hook(lambda m, i, out: outputs_seen.append(out))
            )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                batch = to_device(batch, self.device)
                if gradient == "fisher":
                    losses = self.task.sampled_loss(self.model, batch, generator)
                elif gradient == "loss":
                    losses = self.task.train_loss(self.model, batch)
                else:
                    losses = self.task.measurement(self.model, batch)
                _check_losses(losses)
                outputs = [out for capture in captures for out in capture.outputs]
                for module, capture in zip(self.modules, captures):
                    if any(o._version != v for o, v in zip(capture.outputs, capture.versions)):
                        raise InputError(
                            f"the output of module {module.name!r} was modified in place "
                            f"(e.g. ReLU(inplace=True)); its gradient would be wrong — use "
                            f"inplace=False"
                        )
                grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)
        factors = []
        position = 0
        for module, capture in zip(self.modules, captures):
            calls = []
            for inputs, output in zip(capture.inputs, capture.outputs):
                grad = grads[position]
                position += 1
                calls.append(
                    module.factors(inputs, torch.zeros_like(output) if grad is None else grad)
                )
            if not calls:
                raise InputError(f"module {module.name!r} was not called in the forward pass")
            a = torch.cat([c[0] for c in calls], dim=1)
            g = torch.cat([c[1] for c in calls], dim=1)
            factors.append((a, g))
        predictions = None
        if outputs_seen:
            predicted = self.task.predicted_labels(outputs_seen[0])
            if predicted is not None and tuple(predicted.shape) == tuple(losses.shape):
                predictions = predicted.detach()
        return CapturedBatch(factors, losses.detach(), predictions, gradient)

    def factors(
        self, batch: Batch, gradient: str = "loss", generator: torch.Generator | None = None
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Deprecated: :meth:`capture` (which also returns the predictions)."""
        warnings.warn(
            "GradientExtractor.factors() is deprecated; use capture(), which returns the "
            "factors, values and predictions of the batch",
            DeprecationWarning,
            stacklevel=2,
        )
        captured = self.capture(batch, gradient, generator)
        return captured.factors, captured.values

    def features(
        self, batch: Batch, gradient: str = "loss", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Projected per-example gradients ``[B, feature_dim]`` of one batch.

        ``gradient="loss"`` differentiates the training loss (training examples);
        ``"measurement"`` the task's measurement (queries); ``"fisher"`` the training loss at
        targets drawn from the model with ``generator`` (true-Fisher curvature statistics).
        """
        return self.extract(batch, gradient, generator)[0]

    def extract(
        self, batch: Batch, gradient: str = "loss", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, feature_dim]`` and the per-example values ``[B]`` of the differentiated
        function (the loss, or the measurement)."""
        captured = self.capture(batch, gradient, generator)
        with torch.no_grad():
            return self.projector.project(captured.factors), captured.values

    def describe(self) -> dict[str, Any]:
        """Everything that determines the features, for store metadata."""
        return {
            "modules": list(self.module_names),
            "projection": self.projector.describe(),
            "task": self.task.describe(),
        }


def _capture_hook(capture: _Capture, batch_size: int | None):
    """Forward hook recording a tracked layer's inputs and output.

    A layer applied once for the whole batch (position embeddings get ``position_ids`` of shape
    ``[1, T]``) has an output that broadcasts over examples; it is expanded to the batch so that
    each example's own output gradient is kept apart.
    """

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            raise InputError(
                f"{type(module).__name__} output does not require grad; is the forward pass "
                f"running under torch.no_grad() or are its weights frozen?"
            )
        tensors = tuple(x for x in inputs if isinstance(x, torch.Tensor))
        if batch_size is not None and output.shape[0] != batch_size:
            if output.shape[0] != 1:
                raise InputError(
                    f"{type(module).__name__} output has leading dimension {output.shape[0]} but "
                    f"the batch has {batch_size} examples; per-example gradients need the batch "
                    f"first"
                )
            output = output.expand(batch_size, *output.shape[1:])
            tensors = tuple(x.expand(batch_size, *x.shape[1:]) for x in tensors)
        capture.inputs.append(tensors)
        capture.outputs.append(output)
        capture.versions.append(output._version)
        return output

    return hook


def _batch_size(batch: Batch) -> int | None:
    """Leading dimension of the first tensor in a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (list, tuple)) or isinstance(batch, dict):
        for value in values:
            size = _batch_size(value)
            if size is not None:
                return size
    return None


def _check_losses(losses: torch.Tensor) -> None:
    if not isinstance(losses, torch.Tensor) or losses.ndim != 1:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise InputError(f"the task must return one loss per example (shape [batch]), got {shape}")
    bad = (~torch.isfinite(losses.detach())).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(
            f"non-finite loss for {len(bad)} example(s) of the batch", positions=bad
        )


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
