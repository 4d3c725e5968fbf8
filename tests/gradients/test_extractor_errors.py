"""The extractor refuses inputs that would give silently wrong gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infscope.errors import InputError, NonFiniteError
from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
from infscope.tasks import ClassificationTask

IDENTITY = ProjectionConfig(kind="identity", dim=None)


def _batch():
    torch.manual_seed(0)
    return torch.randn(4, 5), torch.randint(0, 3, (4,))


def test_in_place_modified_output_is_an_error():
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))
    with pytest.raises(InputError, match="modified in place"):
        GradientExtractor(model, ClassificationTask(), IDENTITY).features(_batch())


def test_unused_module_is_an_error():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(InputError, match="was not called"):
        GradientExtractor(Skips(), ClassificationTask(), IDENTITY).features(_batch())


def test_nan_loss_names_the_examples():
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = _batch()
    x[2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="1 example") as info:
        GradientExtractor(model, ClassificationTask(), IDENTITY).features((x, y))
    assert info.value.positions == [2]


def test_labels_out_of_range_and_frozen_or_tied_modules():
    model = nn.Sequential(nn.Linear(5, 3))
    x, _ = _batch()
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        GradientExtractor(model, ClassificationTask(), IDENTITY).features(
            (x, torch.tensor([0, 1, 2, 3]))
        )
    frozen = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    frozen[0].weight.requires_grad_(False)
    with pytest.raises(InputError, match="frozen"):
        GradientExtractor(frozen, ClassificationTask(), IDENTITY, ModuleSelection(include=("0",)))
    assert [m.name for m in GradientExtractor(frozen, ClassificationTask(), IDENTITY).modules] == [
        "1"
    ]
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    with pytest.raises(InputError, match="shares its weight"):
        GradientExtractor(tied, ClassificationTask(), IDENTITY, ModuleSelection(include=("1",)))
    nothing = nn.Sequential(nn.Linear(5, 3)).requires_grad_(False)
    with pytest.raises(InputError, match="no trainable module"):
        GradientExtractor(nothing, ClassificationTask(), IDENTITY)
