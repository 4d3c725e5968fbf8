"""Influence-based unlearning: one (or a few) Newton steps on the remaining data's objective.

The model was trained on ``n`` examples to minimise ``J(θ) = mean_i ℓ_i(θ) + (wd/2)‖θ‖²``
(``wd``: the weight decay of training). Retraining without the forget set ``F`` minimises
``J_rest`` — the same objective over the ``n_r = n − |F|`` remaining examples. One Newton step on
``J_rest`` from the trained weights gives the influence (Newton) update of Koh & Liang (2017) and
of certified / influence-based removal (Guo et al. 2020; the IAU paper's starting point):

``θ' = θ − (H_rest + λ I)⁻¹ ∇J_rest(θ)``, ``H_rest = ∇² mean_{rest} ℓ``, ``λ = wd + ridge``.

``ridge`` is an absolute shift of the Hessian on top of the weight decay — not the relative
``damping`` of the attribution estimators (:mod:`infscope.attribution.damped`), hence its own name.

Two forms of the right-hand side (``form``):

* ``"newton"`` (default) evaluates ``∇J_rest(θ)`` by a pass over the remaining data: exact
  Newton, and right even when ``θ`` is not exactly a minimum of ``J``;
* ``"influence"`` assumes ``∇J(θ) = 0`` and uses the forget set only:
  ``−∇J_rest(θ) = (1/n_r) (Σ_{i∈F} ∇ℓ_i(θ) + |F| wd θ)``, so with ``wd = 0`` the step is
  ``θ' = θ + (1/n_r) H_rest⁻¹ Σ_{i∈F} ∇ℓ_i`` — the papers' ``(1/n) H⁻¹ Σ ∇ℓ`` with the Hessian
  normalised by the examples that remain. Sign: the step *adds* the forget gradients, i.e. it
  moves uphill on the forget set's loss.

The solve is matrix-free: conjugate gradient (:class:`~infscope.curvature.solvers.CGSolver`)
over Hessian-vector products of the remaining data's loss (:class:`~infscope.curvature.hessian.
ModelHessian`, ``torch.func`` forward-over-reverse), stopping at negative curvature on a
non-convex model. ``newton_steps > 1`` iterates (each later step uses the ``"newton"`` form at the
new weights, with the Hessian there). ``correction`` then runs a few SGD steps on the remaining
data — the gradient correction of IAU (Liu et al. 2025, "Efficient Machine Unlearning via
Influence Approximation"), here applied after an exact-Hessian step rather than after IAU's
first-order incremental step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from infscope.curvature.solvers import CGSolver
from infscope.data import ExampleSet
from infscope.deprecation import legacy_arguments, warn_deprecated
from infscope.errors import InfscopeWarning, InputError
from infscope.tasks import Task
from infscope.unlearning.gradient_steps import GradientConfig, sgd_steps
from infscope.unlearning.progress import CountedCurvature
from infscope.unlearning.result import Unlearned
from infscope.unlearning.workspace import Workspace

FORMS = ("newton", "influence")


@dataclass(frozen=True)
class NewtonConfig:
    """Settings of the Newton (influence) unlearning step.

    Args:
        weight_decay: the L2 coefficient ``wd`` of training (in ``J`` and in ``λ``).
        ridge: added to ``wd`` in ``λ`` (absolute); ``λ`` must be positive. On a convex,
            L2-regularised model ``ridge=0`` makes the step exact up to the Newton error.
            (Formerly ``damping``, still accepted for one release.)
        form: ``"newton"`` or ``"influence"`` (see the module docstring).
        newton_steps: Newton steps (the Hessian is re-evaluated at each new point).
        max_iter, tol: conjugate-gradient cap and relative residual per step.
        batch_size: examples per forward pass of the gradient and Hessian products.
        correction: SGD steps on the remaining data after the Newton step(s), or ``None``.
    """

    weight_decay: float = 0.0
    ridge: float = 1e-3
    form: str = "newton"
    newton_steps: int = 1
    max_iter: int = 100
    tol: float = 1e-6
    batch_size: int = 256
    correction: GradientConfig | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InputError(f"unknown Newton form {self.form!r}; choose from {FORMS}")
        check_ridge(self.weight_decay, self.ridge)
        if self.newton_steps < 1 or self.batch_size < 1:
            raise InputError("newton_steps and batch_size must be positive")

    @property
    def damping(self) -> float:
        """Deprecated: :attr:`ridge`."""
        warn_deprecated("NewtonConfig.damping is deprecated; use ridge", 2)
        return self.ridge


NewtonConfig.__init__ = legacy_arguments(damping="ridge")(NewtonConfig.__init__)  # type: ignore[method-assign]


def check_ridge(weight_decay: float, ridge: float) -> None:
    """:class:`InputError` unless both are ``>= 0`` with a positive sum (``λ = wd + ridge``)."""
    if weight_decay < 0 or ridge < 0 or not weight_decay + ridge > 0:
        raise InputError(
            "weight_decay and ridge must be >= 0 with a positive sum (the Hessian of a model "
            "can be singular): set the training weight decay or a small ridge"
        )


def newton_unlearn(
    model: nn.Module,
    task: Task,
    data: ExampleSet,
    forget_ids: Sequence[str],
    config: NewtonConfig = NewtonConfig(),
    modules: Sequence[str] | None = None,
    progress: bool = False,
) -> Unlearned:
    """Remove the forget set's effect from ``model`` (trained on ``data``) by the Newton step of
    the module docstring, over the parameters of ``modules`` (include patterns; default every
    Linear/Conv layer). ``model`` is not changed: the result holds an updated copy. ``progress``
    shows a bar per conjugate-gradient solve (a tick per Hessian-vector product)."""
    start = time.perf_counter()
    work = Workspace.create(model, task, data, forget_ids, modules, config.batch_size)
    wd, damping = config.weight_decay, config.weight_decay + config.ridge
    solver = CGSolver(max_iter=config.max_iter, tol=config.tol)
    n_forget, n_rest = len(work.split.forget), len(work.split.rest)
    original = work.theta()
    steps = []
    for step in range(config.newton_steps):
        rest = work.objective("rest")
        theta = rest.theta.cpu().numpy()
        if step == 0 and config.form == "influence":
            forget_loss, forget_gradient = work.objective("forget").gradient()
            rhs = (n_forget / n_rest) * (forget_gradient + wd * theta)
            record = {"forget_loss": forget_loss}
        else:
            rest_loss, rest_gradient = rest.gradient()
            rhs = -(rest_gradient + wd * theta)
            record = {"rest_loss": rest_loss}
        label = f"newton step {step + 1}/{config.newton_steps}: CG"
        with tqdm(total=config.max_iter, desc=label, unit="Hv", disable=not progress) as bar:
            prepared = solver.prepare(CountedCurvature(rest, bar))
            delta = prepared.solve(rhs[:, None], damping)[:, 0]
        rest.assign(theta + delta)
        described = prepared.describe()
        record.update(
            step_norm=float(np.linalg.norm(delta)),
            cg_iterations=int(described["iterations"]),
            cg_unconverged=int(described["unconverged_columns"]),
            cg_negative_curvature=int(described["negative_curvature_columns"]),
        )
        steps.append(record)
    if any(s["cg_negative_curvature"] for s in steps):
        warnings.warn(
            f"H_rest + λI (λ = {damping:.3g}) has directions of negative curvature: conjugate "
            "gradient stopped there, and the step can overshoot along nearly flat directions; "
            "raise the ridge (measured on an MLP: undamped, the step ended hundreds of times "
            "farther from the rest's optimum than the original; ridge 1e-3 did not)",
            InfscopeWarning,
            stacklevel=2,
        )
    corrected = None
    if config.correction is not None and config.correction.steps > 0:
        corrected = sgd_steps(work.objective("rest"), config.correction, progress=progress)
    settings = asdict(config)
    info = {
        **work.describe(),
        "config": settings,
        "steps": steps,
        "correction_last_batch_loss": corrected,
        "step_norm": float(np.linalg.norm(work.theta() - original)),
        "seconds": time.perf_counter() - start,
    }
    return Unlearned(work.model, "newton", info)
