"""Fine-tuning on the rest and gradient ascent on the forget set; saving; the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from infscope.errors import InputError
from infscope.gradients.losses import per_example_losses
from infscope.unlearning import (
    GradientConfig,
    agreement,
    ascent_unlearn,
    finetune_unlearn,
    forget_split,
    loss_gap,
    newton_unlearn,
    parameter_distance,
)
from tests.unlearning.convex import TASK, WD, data, fit, flat

FORGET = [f"e{i}" for i in range(0, 240, 10)]


@pytest.fixture(scope="module")
def trained():
    examples = data()
    return examples, fit(examples)


def _mean_loss(model, examples, ids):
    split = forget_split(examples, ids)
    return per_example_losses(model, TASK, split.forget).mean()


def test_gradient_ascent_raises_the_forget_loss_and_leaves_the_model(trained):
    examples, model = trained
    before = flat(model).copy()
    result = ascent_unlearn(model, TASK, examples, FORGET, GradientConfig(steps=5, lr=0.5))
    assert _mean_loss(result.model, examples, FORGET) > _mean_loss(model, examples, FORGET)
    np.testing.assert_array_equal(flat(model), before)
    assert result.method == "ascent" and result.info["step_norm"] > 0


def test_finetuning_descends_on_the_rest_only(trained):
    examples, model = trained
    rest = [i for i in examples.ids if i not in FORGET]
    config = GradientConfig(steps=30, lr=0.5, batch_size=1000, weight_decay=WD)
    result = finetune_unlearn(model, TASK, examples, FORGET, config)
    retrained = fit(examples, [int(i[1:]) for i in rest])
    # full-batch descent on the rest objective moves the optimum of the whole towards its own
    distance = parameter_distance(result.state_dict(), retrained.state_dict(), model.state_dict())
    assert 0 < distance < 1
    # the same seed draws the same minibatches: identical results
    small = GradientConfig(steps=4, lr=0.1, batch_size=16, seed=3)
    a, b = (finetune_unlearn(model, TASK, examples, FORGET, small) for _ in range(2))
    np.testing.assert_array_equal(flat(a.model), flat(b.model))


def test_gradient_config_is_checked():
    with pytest.raises(InputError):
        GradientConfig(lr=0)
    with pytest.raises(InputError):
        GradientConfig(batch_size=0)


def test_save_writes_safetensors_with_the_record(trained, tmp_path):
    examples, model = trained
    result = newton_unlearn(model, TASK, examples, FORGET[:3])
    path = result.save(tmp_path / "out" / "model.safetensors")
    loaded = load_file(str(path))
    assert set(loaded) == {"weight", "bias"}
    torch.testing.assert_close(loaded["weight"], result.model.weight.detach())
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads(handle.metadata()["infscope"])
    assert record["method"] == "newton" and record["info"]["n_forget"] == 3


def test_metrics():
    a = {"w": torch.tensor([1.0, 1.0])}
    r = {"w": torch.tensor([0.0, 0.0])}
    o = {"w": torch.tensor([2.0, 2.0])}
    assert parameter_distance(a, r, o) == pytest.approx(0.5)
    assert parameter_distance(r, r, o) == 0
    with pytest.raises(InputError, match="equal"):
        parameter_distance(a, r, r)
    assert agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    assert loss_gap(np.array([1.0, 3.0]), np.array([0.5])) == pytest.approx(1.5)
    with pytest.raises(InputError):
        agreement(np.array([1]), np.array([1, 2]))


def test_split_keeps_positions(trained):
    examples, _ = trained
    split = forget_split(examples, ["e5", "e2"])
    assert split.forget.ids == ("e5", "e2")
    assert split.forget_positions.tolist() == [5, 2]
    assert len(split.rest) == 238 and 2 not in split.rest_positions
