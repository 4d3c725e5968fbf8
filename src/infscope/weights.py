"""Model weights in ``.safetensors`` files (no pickle), loaded into a model built elsewhere.

``infscope unlearn`` writes the unlearned model's whole state dict this way; ``features --weights``
and ``unlearn --weights`` read such a file into the model that ``--model`` builds, so the same
architecture is explained or unlearned with other weights.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from infscope.errors import InputError


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``.safetensors`` state dict into ``model``, in place. Every weight of the model
    must be in the file with its shape, and nothing else: a file of another model is an
    :class:`~infscope.errors.InputError` naming the weights that differ, never a partial load."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such weights file: {path}")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise InputError(f"{path} is not a readable safetensors file: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if names
        )
        raise InputError(f"{path} does not fit the model ({detail})")
    model.load_state_dict(state)
