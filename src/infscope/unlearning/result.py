"""What an unlearning method returns: a new model (the caller's is never changed) and a record.

The weights are saved as safetensors (no pickle) with the record as JSON metadata, atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infscope.io import write_atomic

FORMAT = "infscope.unlearned"


@dataclass
class Unlearned:
    """The unlearned ``model`` (a copy of the input model with updated tracked parameters), the
    ``method`` that made it and ``info`` (settings, solver counts, step norms, seconds)."""

    model: nn.Module
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight of the unlearned model, detached, on the CPU (a new dict)."""
        return {
            k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()
        }

    def save(self, path: str | Path) -> Path:
        """Write the weights to ``path`` (``.safetensors``), the record as metadata, atomically.
        Tied weights are written once per name (safetensors stores no aliases)."""
        from safetensors.torch import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"format": FORMAT, "method": self.method, "info": self.info})
        write_atomic(path, save(self.state_dict(), metadata={"infscope": record}))
        return path
