"""Group influence: the change in a test loss when a set ``S`` of training examples is removed.

The model was trained on ``n`` examples to minimise ``J(θ) = mean_i ℓ_i(θ) + (wd/2)‖θ‖²``.
Retraining without ``S`` minimises ``J_rest``, the same objective over the ``n_r = n − |S|``
remaining examples. At an optimum of ``J`` its gradient there is
``∇J_rest(θ) = −r_S / n_r`` with ``r_S = Σ_{i∈S} ∇ℓ_i(θ) + |S| wd θ`` (the ``wd θ`` term: the
regulariser weighs more against fewer examples). Three estimates of the parameter change ``Δθ``;
all but ``"newton"`` turn it into a change of every test loss by the first-order term
``∇ℓ_test · Δθ``:

* ``"sum"`` — the sum of the individual first-order influences (Koh & Liang 2017): removing one
  example moves ``θ`` by ``(1/n) A⁻¹ (∇ℓ_i + wd θ)`` with ``A = H + λI`` the damped Hessian of
  ``J`` over all ``n`` examples, so the group's sum is ``Δθ = (1/n) A⁻¹ r_S`` — additive in ``S``
  (one solve for all test points, one gradient pass per group);
* ``"newton_linear"`` — the first-order *group* influence with the Hessian of the remaining data
  (the Newton step whose accuracy Koh et al. 2019, "On the accuracy of influence functions for
  measuring group effects", study): ``Δθ = (1/n_r)(H_rest + λI)⁻¹ r_S``, the ``"influence"`` form
  of :func:`~infscope.unlearning.newton_unlearn` (reused, not rewritten: one conjugate-gradient
  solve per group over Hessian-vector products of the remaining data);
* ``"newton"`` — the same step, with the test losses *evaluated* at ``θ + Δθ`` instead of
  linearised (one forward pass over the test set per group): for large coherent groups the step
  itself is accurate but the test loss is far from linear along it;
* ``"second_order"`` — Basu et al. 2020, "On second-order group influence functions": expand
  ``(H_rest + λI)⁻¹`` around ``A⁻¹`` to the second order in the group fraction ``p = |S|/n``.
  With ``H_rest − H = (p/(1−p))(H − H_S)`` and ``(A + E)⁻¹ ≈ A⁻¹ − A⁻¹ E A⁻¹`` (``H_S``: the mean Hessian over ``S``),
  ``Δθ = A⁻¹ r + (p/(1−p)) A⁻¹ (H_S − H) A⁻¹ r`` with ``r = r_S / n_r``: the ``1/(1−p)`` rescaling
  of the first-order term plus the correction for the group's own curvature, the structure of
  Basu et al.'s ``I⁽¹⁾ + I'``. Their derivation perturbs the weights of an unnormalised sum loss
  and keeps the test loss to first order; here the objective is the mean loss plus weight decay
  (as trained), which adds the ``wd θ`` term to ``r_S``, and the same test-loss first-order term
  is kept. Costs one full-data solve per group and Hessian-vector products on ``S``.

The sign convention is the retraining one: a prediction is ``loss(retrained without S) −
loss(original)``, so a positive value means the group *helped* that test point. Every solve is
matrix-free (:class:`~infscope.curvature.solvers.CGSolver` over
:class:`~infscope.curvature.hessian.ModelHessian` products); the model passed in is never
changed (Hessians evaluate a deep copy; the Newton step works on its own copy).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from infscope.curvature.hessian import ModelHessian
from infscope.curvature.solvers import CGSolver
from infscope.data import ExampleSet
from infscope.deprecation import legacy_arguments
from infscope.errors import InputError
from infscope.gradients import select_modules
from infscope.gradients.losses import per_example_losses
from infscope.tasks import Task
from infscope.unlearning import NewtonConfig, forget_split, newton_unlearn
from infscope.unlearning.newton import check_ridge

METHODS = ("sum", "newton_linear", "newton", "second_order")


@dataclass(frozen=True)
class GroupConfig:
    """Settings of the group-influence estimates.

    Args:
        weight_decay: the L2 coefficient ``wd`` of training (in ``r_S`` and in ``λ``).
        ridge: added to ``wd`` in ``λ`` (absolute, as :class:`~infscope.unlearning.NewtonConfig`'s);
            ``wd + ridge`` must be positive. On a convex, L2-regularised model ``ridge=0`` gives
            the undamped estimates. (Formerly ``damping``, still accepted for one release.)
        max_iter, tol: conjugate-gradient cap and relative residual of every solve.
        batch_size: examples per forward pass of the gradients and Hessian products.
    """

    weight_decay: float = 0.0
    ridge: float = 1e-3
    max_iter: int = 200
    tol: float = 1e-8
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_ridge(self.weight_decay, self.ridge)
        if self.batch_size < 1 or self.max_iter < 1:
            raise InputError("batch_size and max_iter must be positive")


GroupConfig.__init__ = legacy_arguments(damping="ridge")(GroupConfig.__init__)  # type: ignore[method-assign]


@dataclass
class GroupInfluence:
    """``predictions[method]``: float64 ``[n_groups, n_test]``, the predicted change of each test
    loss when each group is removed (``loss(without S) − loss(original)``); ``test_loss``: the
    test losses of the original model; ``info``: sizes, settings, solver counts, seconds."""

    predictions: dict[str, np.ndarray]
    test_loss: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def query_losses(
    model: nn.Module, task: Task, test: ExampleSet, batch_size: int = 256
) -> np.ndarray:
    """The training loss of ``task`` on each test example (float64 ``[n_test]``, eval mode, no
    gradients) — the quantity whose change the estimates predict; also what to measure on a
    retrained model."""
    return per_example_losses(model, task, test, batch_size)


def _test_gradients(model, task, test, modules, batch_size):
    work = copy.deepcopy(model)
    hessian = ModelHessian(work, task, test, select_modules(work, include=modules), batch_size)
    pairs = [hessian.gradient([j]) for j in range(len(test))]
    return np.array([p[0] for p in pairs]), np.stack([p[1] for p in pairs], axis=1)


def group_influence(
    model: nn.Module,
    task: Task,
    train: ExampleSet,
    test: ExampleSet,
    groups: Sequence[Sequence[str]],
    config: GroupConfig = GroupConfig(),
    methods: Sequence[str] = METHODS,
    modules: Sequence[str] | None = None,
) -> GroupInfluence:
    """Predict, for each group of training ids in ``groups``, the change of every test loss when
    the group is removed from the training data of ``model`` (trained on ``train`` to an optimum
    of the objective in the module docstring), over the parameters of ``modules`` (include
    patterns; default every Linear/Conv layer), by each of ``methods``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown group-influence methods {unknown}; choose from {METHODS}")
    if len(test) == 0:
        raise InputError("group influence needs at least one test example")
    splits = [forget_split(train, list(g)) for g in groups]  # validates every group first
    if not splits:
        raise InputError("no groups given")
    start = time.perf_counter()
    wd, damping = config.weight_decay, config.weight_decay + config.ridge
    loss0, g_test = _test_gradients(model, task, test, modules, config.batch_size)
    work = copy.deepcopy(model)
    tracked = select_modules(work, include=modules)
    full = ModelHessian(work, task, train, tracked, batch_size=config.batch_size)
    theta = full.theta.cpu().numpy()
    n = len(train)
    solver = CGSolver(max_iter=config.max_iter, tol=config.tol)
    prepared_full = solver.prepare(full) if {"sum", "second_order"} & set(methods) else None
    solved_test = None
    if "sum" in methods:
        solved_test = prepared_full.solve(g_test, damping)  # A⁻¹ ∇ℓ_test, all test points
    out = {m: np.zeros((len(splits), len(test))) for m in methods}
    newton_cg = {"max_iterations": 0, "unconverged_columns": 0, "negative_curvature_columns": 0}
    newton = NewtonConfig(
        weight_decay=wd,
        ridge=config.ridge,
        form="influence",
        max_iter=config.max_iter,
        tol=config.tol,
        batch_size=config.batch_size,
    )
    for k, (ids, split) in enumerate(zip(groups, splits, strict=True)):
        size, n_rest = len(split.forget), len(split.rest)
        _, mean_grad = full.gradient(split.forget_positions)
        r_s = size * (mean_grad + wd * theta)  # Σ_S ∇ℓ_i + |S| wd θ
        if "sum" in methods:
            out["sum"][k] = (r_s / n) @ solved_test
        if {"newton", "newton_linear"} & set(methods):
            result = newton_unlearn(model, task, train, list(ids), newton, modules)
            delta = _theta(result.model, task, train, modules) - theta
            if "newton_linear" in methods:
                out["newton_linear"][k] = delta @ g_test
            if "newton" in methods:
                out["newton"][k] = query_losses(result.model, task, test, config.batch_size) - loss0
            step = result.info["steps"][0]
            newton_cg["max_iterations"] = max(newton_cg["max_iterations"], step["cg_iterations"])
            newton_cg["unconverged_columns"] += step["cg_unconverged"]
            newton_cg["negative_curvature_columns"] += step["cg_negative_curvature"]
        if "second_order" in methods:
            r = r_s / n_rest
            first = prepared_full.solve(r[:, None], damping)
            p = size / n
            group_h = ModelHessian(work, task, split.forget, tracked, config.batch_size)
            diff = group_h.matvec(first) - full.matvec(first)  # (H_S − H) A⁻¹ r
            second = prepared_full.solve(diff, damping)
            delta = first[:, 0] + (p / (1 - p)) * second[:, 0]
            out["second_order"][k] = delta @ g_test
    info = {
        "n_train": n,
        "n_test": len(test),
        "group_sizes": [len(s.forget) for s in splits],
        "n_params": int(theta.size),
        "modules": [m.name for m in tracked],
        "methods": list(methods),
        "config": {
            "weight_decay": wd,
            "ridge": config.ridge,
            "max_iter": config.max_iter,
            "tol": config.tol,
        },
        "newton_cg": newton_cg,
        "seconds": time.perf_counter() - start,
    }
    if prepared_full is not None:
        info["cg_full"] = prepared_full.describe()
    return GroupInfluence(out, loss0, info)


def _theta(model: nn.Module, task: Task, train: ExampleSet, modules) -> np.ndarray:
    tracked = select_modules(model, include=modules)
    return ModelHessian(model, task, train, tracked).theta.cpu().numpy()
