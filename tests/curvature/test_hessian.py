"""ModelHessian.gradient / assign and per_example_losses against plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infscope.curvature.hessian import ModelHessian
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.gradients import select_modules
from infscope.gradients.losses import per_example_losses
from infscope.tasks import ClassificationTask


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    data = ExampleSet([(x[i], y[i]) for i in range(30)], tuple(map(str, range(30))))
    return model, x, y, data


def test_gradient_of_rows_matches_autograd():
    model, x, y, data = _setup()
    hessian = ModelHessian(model, ClassificationTask(), data, select_modules(model), batch_size=7)
    rows = [3, 8, 9, 20, 29]
    loss, gradient = hessian.gradient(rows=rows)
    expected = nn.functional.cross_entropy(model(x[rows]), y[rows])
    grads = torch.autograd.grad(expected, [model[0].weight, model[0].bias])
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    # layout: module 0's [W | b] matrix row-major first
    first = torch.cat([grads[0], grads[1][:, None]], dim=1).reshape(-1).numpy()
    np.testing.assert_allclose(gradient[: first.size], first, rtol=1e-10, atol=1e-14)
    with pytest.raises(InputError):
        hessian.gradient(rows=[])


def test_assign_writes_weights_and_moves_the_operator():
    model, x, y, data = _setup()
    hessian = ModelHessian(model, ClassificationTask(), data, select_modules(model))
    theta = hessian.theta.cpu().numpy() + 0.1
    at_new = hessian.gradient(theta=theta)[1]
    hessian.assign(theta)
    np.testing.assert_allclose(hessian.theta.cpu().numpy(), theta)
    np.testing.assert_allclose(hessian.gradient()[1], at_new, rtol=1e-12)
    # module 2's [W | b] (3 x 6) follows module 0's 5 x 5 entries; the bias is its last column
    torch.testing.assert_close(
        model[2].bias.detach(), torch.as_tensor(theta[25:].reshape(3, 6)[:, 5])
    )
    with pytest.raises(InputError, match="shape"):
        hessian.assign(theta[:-1])


def test_per_example_losses():
    model, x, y, data = _setup()
    losses = per_example_losses(model, ClassificationTask(), data, batch_size=8)
    expected = nn.functional.cross_entropy(model(x), y, reduction="none").detach().numpy()
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
