"""load_weights: a safetensors state dict into a model built elsewhere, all of it or nothing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from infscope.errors import InputError
from infscope.weights import load_weights


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_weights_of_the_same_architecture_load_exactly(tmp_path):
    source, target = _model(1), _model(2)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    load_weights(target, tmp_path / "w.safetensors")
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)


def test_a_file_of_another_model_is_an_error_and_loads_nothing(tmp_path):
    target = _model(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    wider = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    save_file(wider.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(InputError, match=r"does not fit the model \(shape: 0.bias, 0.weight"):
        load_weights(target, tmp_path / "w.safetensors")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(InputError, match="no such weights file"):
        load_weights(target, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_weights(target, tmp_path / "bad.safetensors")
