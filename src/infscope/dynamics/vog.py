"""Variance of gradients (VoG; Agarwal et al., 2022): how much an example's input gradient of its
label's logit moves across checkpoints — high for hard, atypical or mislabeled examples. From
precomputed input gradients (:func:`vog`) or from checkpoints and inputs (:func:`input_gradients`,
:func:`vog_from_checkpoints`). A :class:`~infscope.attribution.SelfInfluence` like every dynamics
score (:mod:`infscope.dynamics.scores`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from infscope.attribution.scores import SelfInfluence
from infscope.dynamics.arrays import as_ids
from infscope.dynamics.scores import make_score
from infscope.errors import InputError
from infscope.tasks.base import to_device
from infscope.tasks.huggingface import model_inputs

__all__ = ["input_gradients", "vog", "vog_from_checkpoints"]


# -- variance of gradients (Agarwal et al., 2022) --------------------------------------------------
def _vog_values(gradients: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``gradients`` ``[K, n, *shape]`` -> per example, the mean over input dimensions (those
    where ``mask`` is nonzero) of the variance across the ``K`` checkpoints."""
    variance = gradients.var(axis=0)  # population variance over checkpoints: [n, *shape]
    n = variance.shape[0]
    if mask is None:
        return variance.reshape(n, -1).mean(axis=1)
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape[0] != n or mask.ndim > variance.ndim or variance.shape[: mask.ndim] != mask.shape:
        raise InputError(
            f"mask {mask.shape} must match the leading dimensions of the gradients {variance.shape}"
        )
    weights = mask.reshape(mask.shape + (1,) * (variance.ndim - mask.ndim))
    weights = np.broadcast_to(weights, variance.shape).reshape(n, -1)
    total = (variance.reshape(n, -1) * weights).sum(axis=1)
    count = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1e-300), np.nan)


def _vogmake_score(
    raw: np.ndarray, labels: np.ndarray, ids: list[str], k: int, normalize: str | None, extra: dict
) -> SelfInfluence:
    return make_score(
        raw,
        ids,
        labels,
        "vog",
        "hard / atypical (its input gradient changes a lot across checkpoints)",
        True,
        normalize,
        n_checkpoints=k,
        **extra,
    )


def _labels_array(labels: Any, n: int) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"labels must have shape ({n},), got {labels.shape}")
    return labels.astype(np.int64)


def _default_ids(ids: Any, n: int) -> list[str]:
    out = [str(i) for i in range(n)] if ids is None else as_ids(getattr(ids, "ids", ids))
    if len(out) != n:
        raise InputError(f"{len(out)} ids for {n} examples")
    return out


def vog(
    input_gradients: Any,
    labels: Any,
    ids: Any = None,
    mask: Any = None,
    normalize: str | None = "zscore",
) -> SelfInfluence:
    """Variance of gradients (VoG) from precomputed input gradients ``[K, n, *input_shape]`` (a
    stacked array/tensor, or a sequence of ``K`` arrays ``[n, *input_shape]``): for each example,
    the gradient of the **label's logit** (pre-softmax) with respect to the input at each of ``K``
    checkpoints; VoG is the population variance across checkpoints of each input dimension,
    averaged over the dimensions (only where ``mask`` ``[n, *leading_shape]`` is nonzero, e.g. the
    attention mask for text gradients ``[K, n, T, d]``), then — as in Agarwal et al. — normalised
    within each class (``normalize="zscore"`` by default; ``None`` gives the raw values).

    The paper writes ``sqrt(1/K) * sum_t (S_t - mu)^2`` per dimension; its reference code computes
    exactly that, which is ``sqrt(K)`` times the variance used here — the same ranking, and the
    same values once z-scored within a class. (That code then takes the absolute value of the
    z-score; we keep its sign, so low VoG stays low.) **High = hard / atypical, often mislabeled
    or memorised**. For text models the input is the embedding output (see :func:`input_gradients`).
    """
    if isinstance(input_gradients, torch.Tensor):
        grads = input_gradients.detach().cpu().double().numpy()
    elif isinstance(input_gradients, np.ndarray):
        grads = input_gradients.astype(np.float64, copy=False)
    else:
        grads = np.stack(
            [
                g.detach().cpu().double().numpy()
                if isinstance(g, torch.Tensor)
                else np.asarray(g, np.float64)
                for g in input_gradients
            ]
        )
    if grads.ndim < 2 or grads.shape[0] < 2:
        raise InputError(
            f"input gradients must have shape [checkpoints >= 2, n, ...], got {grads.shape}"
        )
    n = grads.shape[1]
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    raw = _vog_values(grads, mask)
    return _vogmake_score(
        raw, _labels_array(labels, n), _default_ids(ids, n), grads.shape[0], normalize, {}
    )


def _slice(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] for k, v in inputs.items()}
    return inputs[start:stop]


def _n_inputs(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        sizes = {len(v) for v in inputs.values()}
        if len(sizes) != 1:
            raise InputError("every input tensor must have the same number of rows")
        return sizes.pop()
    return len(inputs)


def _logits_of(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None:
        logits = output
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise InputError(
            "the model must return logits [batch, classes] (or an output with .logits)"
        )
    return logits


def _batch_input_gradients(
    model: nn.Module, batch: Any, labels: torch.Tensor, input_module: str | None
) -> torch.Tensor:
    """Gradient of each example's label logit w.r.t. its input (or ``input_module``'s output)."""
    parameter = next(model.parameters(), None)
    if parameter is not None:
        batch = to_device(batch, parameter.device)
    captured: list[torch.Tensor] = []
    handle = None
    if input_module is not None:

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_(True)  # a leaf: no parameter gradients
            captured.append(leaf)
            return leaf

        handle = model.get_submodule(input_module).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            if input_module is None:
                if isinstance(batch, Mapping) or not torch.is_floating_point(batch):
                    raise InputError(
                        "without input_module the inputs must be a float tensor; for text models "
                        "name the embedding module (e.g. input_module='bert.embeddings')"
                    )
                leaf = batch.detach().clone().requires_grad_(True)
                captured.append(leaf)
                output = model(leaf)
            elif isinstance(batch, Mapping):
                output = model(**model_inputs(batch)) if "input_ids" in batch else model(**batch)
            else:
                output = model(batch)
            if len(captured) != 1:
                raise InputError(
                    f"the input module {input_module!r} ran {len(captured)} times in one forward "
                    "pass; name a module that runs exactly once"
                )
            logits = _logits_of(output)
            label_logits = logits.gather(1, labels.to(logits.device).view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(label_logits, captured[0])
    finally:
        if handle is not None:
            handle.remove()
    return gradient.detach()


def input_gradients(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    input_module: str | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Per-example gradient of the label's logit (pre-softmax) with respect to the input:
    ``inputs`` a float tensor ``[n, ...]``, or — with ``input_module`` naming a module such as
    ``"bert.embeddings"`` — with respect to that module's output (for text models: the embedding
    output ``[n, T, d]``; ``inputs`` may then be a dict of HF tensors). Computed in eval mode (no
    dropout, so examples in a batch are independent), in batches; returns ``[n, *shape]`` on CPU.
    """
    n = _n_inputs(inputs)
    labels_t = torch.as_tensor(_labels_array(labels, n))
    was_training = model.training
    model.eval()
    try:
        parts = [
            _batch_input_gradients(
                model, _slice(inputs, s, s + batch_size), labels_t[s : s + batch_size], input_module
            ).cpu()
            for s in range(0, n, batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def vog_from_checkpoints(
    models: Iterable[nn.Module],
    inputs: Any,
    labels: Any,
    ids: Any = None,
    input_module: str | None = None,
    mask: Any = None,
    batch_size: int = 32,
    normalize: str | None = "zscore",
) -> SelfInfluence:
    """VoG (see :func:`vog`) from ``K >= 2`` models (the checkpoints, all in memory), one batch of
    examples at a time across all checkpoints, so memory stays ``O(batch x K x input size)`` rather
    than holding every gradient. ``mask`` ``[n, *leading_shape]`` (e.g. the attention mask for text)
    selects the input dimensions averaged over."""
    models = list(models)
    if len(models) < 2:
        raise InputError(f"VoG needs at least 2 checkpoints, got {len(models)}")
    n = _n_inputs(inputs)
    labels_np = _labels_array(labels, n)
    labels_t = torch.as_tensor(labels_np)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    raw = np.empty(n)
    try:
        for s in range(0, n, batch_size):
            batch = _slice(inputs, s, s + batch_size)
            grads = np.stack(
                [
                    _batch_input_gradients(m, batch, labels_t[s : s + batch_size], input_module)
                    .cpu()
                    .double()
                    .numpy()
                    for m in models
                ]
            )
            raw[s : s + batch_size] = _vog_values(
                grads, None if mask is None else np.asarray(mask)[s : s + batch_size]
            )
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return _vogmake_score(
        raw,
        labels_np,
        _default_ids(ids, n),
        len(models),
        normalize,
        {"input_module": input_module},
    )


