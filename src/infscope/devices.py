"""Device names checked once, at the boundary: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``."""

from __future__ import annotations

import torch

from infscope.errors import InputError


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine; :class:`InputError`
    for a malformed name or an accelerator torch cannot see."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"not a torch device: {device!r} ({err})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {resolved} asked for, but torch sees no CUDA device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(
                f"device {resolved} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {resolved} asked for, but torch sees no MPS device")
    return resolved
