"""Tracked modules: which layers contribute gradient features, and how each forms them.

Every supported layer's per-example weight gradient is a sum over positions (tokens, pixels) of an
outer product ``g_t a_t^T`` of the gradient of the layer output ``g_t`` and the layer input ``a_t``.
A :class:`TrackedModule` writes the gradient of its trainable parameters as one matrix ``M`` of
shape ``[n_rows, n_cols]`` (for ``nn.Linear``: ``[W | b]``, the bias as an extra input column of
ones), so that the same code serves full gradients, dense and sparse projections, and the Kronecker
projection ``P_out M P_in^T`` that never forms ``M``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from infscope.errors import InputError


class TrackedModule:
    """A layer whose per-example parameter gradient infscope computes from captured activations.

    ``factors`` turns the captured layer input and output gradient into ``A`` ``[B, T, n_cols]``
    and ``G`` ``[B, T, n_rows]``; the per-example gradient matrix is ``sum_t G[:, t]^T A[:, t]``.
    """

    type_name = ""
    supports_kronecker = True

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        weight = module.weight
        self.has_bias = getattr(module, "bias", None) is not None and module.bias.requires_grad
        self.n_rows, self.n_cols = self._matrix_shape(weight)

    def _matrix_shape(self, weight: torch.Tensor) -> tuple[int, int]:
        return weight.shape[0], weight[0].numel() + int(self.has_bias)

    @property
    def num_params(self) -> int:
        """Size of the flattened per-example gradient."""
        return self.n_rows * self.n_cols

    def parameters(self) -> dict[str, nn.Parameter]:
        """Tracked parameters, by their name inside the module."""
        params = {"weight": self.module.weight}
        if self.has_bias:
            params["bias"] = self.module.bias
        return params

    def factors(
        self, inputs: tuple[torch.Tensor, ...], output_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, G)`` from the layer's forward inputs and the gradient of its output."""
        a = inputs[0].detach()
        a = a.reshape(a.shape[0], -1, a.shape[-1])
        if self.has_bias:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
        g = output_grad.reshape(output_grad.shape[0], -1, output_grad.shape[-1])
        return a, g

    def gradient_rows(
        self, a: torch.Tensor, g: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        """Rows ``[start, stop)`` of every example's gradient matrix: ``[B, stop-start, n_cols]``."""
        return torch.einsum("bto,bti->boi", g[..., start:stop], a)

    def project_inputs(self, a: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        """``A @ projection.T`` for an input-side projection ``[k_in, n_cols]``."""
        return a @ projection.T

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map flattened gradient matrices ``[..., n_rows * n_cols]`` back to parameter shapes."""
        matrix = flat.reshape(*flat.shape[:-1], self.n_rows, self.n_cols)
        weight = self.module.weight
        n_weight_cols = self.n_cols - int(self.has_bias)
        out = {"weight": matrix[..., :n_weight_cols].reshape(*flat.shape[:-1], *weight.shape)}
        if self.has_bias:
            out["bias"] = matrix[..., n_weight_cols]
        return out


class LinearModule(TrackedModule):
    """``nn.Linear``: ``y = x W^T + b``; ``M = [W | b]``."""

    type_name = "Linear"


class Conv1DModule(TrackedModule):
    """GPT-2's ``transformers`` ``Conv1D``: ``y = x W + b`` with ``W`` of shape ``[in, out]``."""

    type_name = "Conv1D"

    def _matrix_shape(self, weight: torch.Tensor) -> tuple[int, int]:
        return weight.shape[1], weight.shape[0] + int(self.has_bias)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        matrix = flat.reshape(*flat.shape[:-1], self.n_rows, self.n_cols)
        n_in = self.n_cols - int(self.has_bias)
        out = {"weight": matrix[..., :n_in].transpose(-1, -2)}
        if self.has_bias:
            out["bias"] = matrix[..., n_in]
        return out


class Conv2dModule(TrackedModule):
    """``nn.Conv2d`` (groups=1, zero padding): unfolded input patches times output gradients."""

    type_name = "Conv2d"

    def __init__(self, name: str, module: nn.Module) -> None:
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise InputError(
                f"module {name!r}: only Conv2d with groups=1, padding_mode='zeros' and numeric "
                f"padding is supported (got groups={module.groups}, padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r})"
            )
        super().__init__(name, module)

    def factors(
        self, inputs: tuple[torch.Tensor, ...], output_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        conv = self.module
        patches = F.unfold(
            inputs[0].detach(),
            kernel_size=conv.kernel_size,
            dilation=conv.dilation,
            padding=conv.padding,
            stride=conv.stride,
        ).transpose(1, 2)
        if self.has_bias:
            patches = torch.cat([patches, patches.new_ones(patches.shape[:-1] + (1,))], dim=-1)
        g = output_grad.flatten(2).transpose(1, 2)
        return patches, g


class EmbeddingModule(TrackedModule):
    """``nn.Embedding``: the input is one-hot token ids, so ``M = W^T`` (``[dim, vocab]``)."""

    type_name = "Embedding"

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__(name, module)
        self.has_bias = False
        self.n_rows, self.n_cols = module.embedding_dim, module.num_embeddings

    def factors(
        self, inputs: tuple[torch.Tensor, ...], output_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = inputs[0].reshape(inputs[0].shape[0], -1)
        g = output_grad.reshape(ids.shape[0], ids.shape[1], -1)
        if self.module.padding_idx is not None:
            g = g * (ids != self.module.padding_idx).unsqueeze(-1)
        return ids, g

    def gradient_rows(
        self, a: torch.Tensor, g: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        rows = g[..., start:stop].transpose(1, 2)
        index = a.unsqueeze(1).expand(-1, stop - start, -1)
        out = rows.new_zeros(a.shape[0], stop - start, self.n_cols)
        return out.scatter_add_(2, index, rows)

    def project_inputs(self, a: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        return projection.T[a]

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        matrix = flat.reshape(*flat.shape[:-1], self.n_rows, self.n_cols)
        return {"weight": matrix.transpose(-1, -2)}


class LayerNormModule(TrackedModule):
    """``nn.LayerNorm``: elementwise affine, so ``M = [dgamma; dbeta]`` (``[2, dim]``).

    Its gradient is not an outer product; the Kronecker projection projects it densely (it is tiny).
    """

    type_name = "LayerNorm"
    supports_kronecker = False

    def __init__(self, name: str, module: nn.Module) -> None:
        if module.weight is None:
            raise InputError(
                f"module {name!r}: LayerNorm without affine parameters has no gradient"
            )
        super().__init__(name, module)
        self.n_rows, self.n_cols = 1 + int(self.has_bias), module.weight.numel()

    def factors(
        self, inputs: tuple[torch.Tensor, ...], output_grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs[0].detach()
        dims = tuple(range(-len(self.module.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
        normalised = (x - mean) / torch.sqrt(var + self.module.eps)
        batch = x.shape[0]
        return normalised.reshape(batch, -1, self.n_cols), output_grad.reshape(
            batch, -1, self.n_cols
        )

    def gradient_rows(
        self, a: torch.Tensor, g: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        rows = [(g * a).sum(dim=1), g.sum(dim=1)][start:stop]
        return torch.stack(rows, dim=1)

    def project_inputs(self, a: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("LayerNorm gradients have no Kronecker structure")

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        matrix = flat.reshape(*flat.shape[:-1], self.n_rows, self.n_cols)
        shape = self.module.weight.shape
        out = {"weight": matrix[..., 0, :].reshape(*flat.shape[:-1], *shape)}
        if self.has_bias:
            out["bias"] = matrix[..., 1, :].reshape(*flat.shape[:-1], *shape)
        return out


def _module_class(module: nn.Module) -> type[TrackedModule] | None:
    if isinstance(module, nn.Linear):
        return LinearModule
    if isinstance(module, nn.Conv2d):
        return Conv2dModule
    if isinstance(module, nn.Embedding):
        return EmbeddingModule
    if isinstance(module, nn.LayerNorm):
        return LayerNormModule
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return Conv1DModule
    return None


#: Name given to a model that is itself a single supported layer.
ROOT_NAME = "model"
SUPPORTED_TYPES = ("Linear", "Conv1D", "Conv2d", "Embedding", "LayerNorm")
#: Types tracked when the user names none: the matrix-multiply layers that hold most parameters.
DEFAULT_TYPES = ("Linear", "Conv1D", "Conv2d")


def _trainable(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.requires_grad


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), [])
            if name not in owners[id(param)]:
                owners[id(param)].append(name)
    return owners


def select_modules(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    types: Iterable[str] | None = None,
) -> list[TrackedModule]:
    """Choose the layers whose parameters are tracked.

    Args:
        model: the model.
        include: glob patterns on module names (``"encoder.layer.5.*"``, ``"classifier"``); each
            must match at least one supported module. ``None``: every supported module.
        exclude: glob patterns of modules to leave out.
        types: layer type names to keep (``"Linear"``, ``"Conv1D"``, ``"Conv2d"``,
            ``"Embedding"``, ``"LayerNorm"``). ``None``: the matrix-multiply types.

    Only layers whose weight requires gradients are tracked, so a PEFT/LoRA model contributes its
    adapter weights (and trainable heads) only. A weight shared between layers (tied embeddings)
    cannot be attributed to one layer: such layers are skipped by default, and naming one is an
    error.
    """
    type_names = tuple(types) if types is not None else DEFAULT_TYPES
    unknown = [t for t in type_names if t not in SUPPORTED_TYPES]
    if unknown:
        raise InputError(f"unknown module types {unknown}; supported: {list(SUPPORTED_TYPES)}")
    candidates = {
        name or ROOT_NAME: module  # a model that is itself one layer (e.g. nn.Linear)
        for name, module in model.named_modules()
        if (cls := _module_class(module)) is not None and cls.type_name in type_names
    }
    explicit = include is not None
    chosen: list[str] = []
    if explicit:
        for pattern in include:
            matched = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
            if not matched:
                close = difflib.get_close_matches(pattern, list(candidates), n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise InputError(
                    f"module pattern {pattern!r} matches no {'/'.join(type_names)} module{hint}"
                )
            chosen.extend(name for name in matched if name not in chosen)
    else:
        chosen = list(candidates)
    chosen = [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]

    owners = _shared_weights(model)
    tracked: list[TrackedModule] = []
    for name in chosen:
        module = candidates[name]
        if not _trainable(module):
            if explicit:
                raise InputError(f"module {name!r} has a frozen weight (requires_grad=False)")
            continue
        sharers = [o or ROOT_NAME for o in owners[id(module.weight)] if (o or ROOT_NAME) != name]
        if sharers:
            if explicit:
                raise InputError(
                    f"module {name!r} shares its weight with {sharers}; a tied weight's gradient "
                    f"cannot be split by layer, leave it out"
                )
            continue
        tracked.append(_module_class(module)(name, module))
    if not tracked:
        raise InputError(
            "no trainable module selected: check `include`/`exclude`/`types` and that the "
            "model's weights require gradients"
        )
    return tracked
