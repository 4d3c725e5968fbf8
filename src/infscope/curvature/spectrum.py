"""Damping and projection budget read off a curvature spectrum.

Both rules count the **effective dimension** of a damped curvature, ``d(λ) = Σ_i μ_i / (μ_i +
λ)`` over its eigenvalues ``μ_i``: a direction well above the damping counts one, one far below
it counts ``μ_i / λ``. It is the expected self-influence of a training gradient,
``E[gᵀ (F + λI)⁻¹ g] = tr(F (F + λI)⁻¹)`` for the (empirical) Fisher ``F = E[g gᵀ]``, so it
measures how many directions an influence score actually resolves.

* **Damping** (:func:`spectrum_damping`): the ``λ`` at which the damped curvature resolves a
  share of its directions, ``d(λ) = share × D`` (``D`` the directions with a positive
  eigenvalue). At share ½, the spectrum's own midpoint, a flat spectrum of equal eigenvalues
  ``u`` gets ``λ = u`` (relative damping 1 in the mean-eigenvalue unit); a decaying one gets a
  much smaller ``λ``. How many directions an estimator should resolve depends on what its
  spectrum holds, so each estimator declares its share (``default_damping_share``), chosen on
  dev tasks and reported on held-out ones (``docs/benchmarks/accuracy.md``):
  :data:`EIGEN_DAMPING_SHARE` (0.9) for EK-FAC on the eigen projection — the budget already
  dropped the directions negligible against the damping, and on the dev language models the
  LDS rose from the midpoint to 0.9 (lm-banking, +0.03) or stayed within 0.006 (gpt2-trec);
  :data:`DAMPING_SHARE` (½) of ``min(n, D)`` for EK-FAC and K-FAC on full-space factors;
  :data:`FISHER_DAMPING_SHARE` (0.08) for the Fisher influence, TRAK and DataInf, whose steep
  spectra hold a few large directions and a long tail that a small damping would amplify;
  :data:`HESSIAN_DAMPING_SHARE` (0.4) for the model Hessian. On the eigen projection a
  **concentrated** spectrum — median eigenvalue below :data:`CONCENTRATED_MEDIAN` of the mean
  (:func:`median_over_mean`): a few outlying directions over a bulk hundreds of times smaller,
  as a LoRA fine-tune with two possible completions gives — resolves
  :data:`CONCENTRATED_DAMPING_SHARE` instead, which damps the bulk towards a gradient product
  (resolving 90% weighs every bulk direction like an outlier: dev LDS 0.71, not 0.96). The
  rule needs the eigenvalues only, which every estimator has after its fit (or from one Krylov
  run), so it costs at most one extra fit.
* **Budget** (:func:`~infscope.curvature.budget.choose_budget`): ``n`` training examples
  determine at most ``n`` directions; at the damping where the full space's K-FAC spectrum
  resolves :data:`BUDGET_DAMPING_SHARE` ``× n`` of them — the same share the eigen projection's
  scorer resolves of its own directions — the eigen projection keeps the rows and columns that
  add the most effective dimension per feature until the kept directions hold
  :data:`BUDGET_SHARE` of the whole space's — the directions whose eigenvalue is negligible
  against that damping add little and are cut, however many there are. The kept share is
  reported, and a low one warned about. The ``n`` cap keeps the rule finite: without it the
  full space (``D`` ≈ 2.6·10⁵ on gpt2-trec) resolves half its directions only at a damping
  5·10⁻⁴ of the mean eigenvalue, where its effective dimension is 1.3·10⁵ (so the budget would
  need at least 98% of that), and 90% of them at no positive damping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError

#: share of its positive-eigenvalue directions the damped curvature resolves, ``d(λ) = share D``
#: (``share × min(n, D)`` for K-FAC factors of the full space, which ``n`` examples determine at
#: most ``n`` of): ``damping="auto"`` of EK-FAC and K-FAC on their own factors. Dev tasks
#: digits-logreg, digits-mlp: LDS 0.843 / 0.590 against 0.842 / 0.591 tuned (without the ``n``
#: cap 0.843 / 0.569: the MLP's 2,378 Kronecker directions outnumber its 1,000 examples)
DAMPING_SHARE = 0.5
#: ``damping="auto"`` of the influence function on the (empirical or true) Fisher of the
#: features, of TRAK's kernel and of DataInf: their spectra decay steeply (participation ratio
#: 9–16 of 500–1,000 directions on the digits tasks), and the LDS peaks where they resolve
#: 6–13% of their directions. Dev tasks digits-logreg, digits-mlp: the Fisher 0.794 / 0.593
#: against 0.799 / 0.604 tuned, TRAK 0.752 / 0.501 against 0.786 / 0.524 (at the midpoint, 0.5:
#: the Fisher 0.325 / 0.167, TRAK 0.638 / 0.221)
FISHER_DAMPING_SHARE = 0.08
#: ``damping="auto"`` of the influence function on the model Hessian (its positive part). Dev
#: tasks digits-logreg, digits-mlp: 0.908 / 0.577 against 0.960 / 0.625 tuned — the smallest
#: worst-case loss of any share (logistic regression peaks at 0.2, the MLP is flat from 0.7 up);
#: its constant default, 0.3 relative, is closer to the tuned value on both
HESSIAN_DAMPING_SHARE = 0.4
#: ``damping="auto"`` of EK-FAC on the eigen projection (a basis given as its factors): there
#: the budget has already cut the directions negligible against the damping, so the scorer
#: resolves nearly all it keeps. Dev tasks (gpt2-trec, lm-banking), every budget rule: 0.9 beat
#: 0.5 by 0.028–0.031 LDS on lm-banking and was within 0.006 of it on gpt2-trec
EIGEN_DAMPING_SHARE = 0.9
#: a spectrum whose median eigenvalue is below this share of its mean is **concentrated**: a few
#: outlying directions carry its trace over a bulk hundreds of times smaller. Resolving 90% of
#: such a spectrum's directions puts the damping far below the bulk, which the scores then weigh
#: like the outliers. Dev rows (final model and trajectory pooled): the LoRA fine-tuning with two
#: completions (lm-lora-sst2) 0.0023, better at 1%; the digits MLP 0.0115–0.0124, better at 90%
#: (0.52 against 0.42); every other dev LM 0.083–0.25 and digits-logreg 0.074, better at 90%.
#: The threshold is the geometric midpoint of 0.0023 and 0.0115 (it was 0.014, the midpoint with
#: 0.083, before the digits tasks were profiled)
CONCENTRATED_MEDIAN = 0.0051
#: ``damping="auto"`` of EK-FAC on the eigen projection when the spectrum is concentrated (and no
#: share was given): resolve about as many directions as the outliers (1%, ≈ the participation
#: ratio) — towards a gradient product in the bulk. Dev task lm-lora-sst2: LDS 0.963 / 0.965
#: (final / trajectory) against 0.708 / 0.704 at :data:`EIGEN_DAMPING_SHARE`; shares 0.08 / 0.03
#: gave 0.903 / 0.946 (final), the damping grid's end (λ = 100) 0.966
CONCENTRATED_DAMPING_SHARE = 0.01
#: the budget is judged at the damping where the full space resolves this share of ``min(n, D)``:
#: the share the eigen projection's scorer resolves (one rule for both; judging at 0.25 kept
#: fewer features — lm-banking 11,125 against 15,885 at a 98% budget, LDS 0.706 against 0.718)
BUDGET_DAMPING_SHARE = EIGEN_DAMPING_SHARE
#: share of the full space's effective dimension the chosen projection budget keeps. Dev tasks,
#: damping share 0.9 (coupled): 0.95 / 0.98 / 0.99 / 0.995 → worst shortfall from the task's
#: best LDS 0.050 / 0.029 / 0.028 / 0.032 (lm-banking gains with k up to 65,536, gpt2-trec
#: loses past ~21,000); 0.98 is the cheapest coupled rule within 0.005 of the grid's best worst
#: case (0.026)
BUDGET_SHARE = 0.98
#: below this kept share, a warning says the budget discards curvature that matters
LOW_KEPT_SHARE = 0.8

__all__ = [
    "BUDGET_DAMPING_SHARE",
    "BUDGET_SHARE",
    "CONCENTRATED_DAMPING_SHARE",
    "CONCENTRATED_MEDIAN",
    "DAMPING_SHARE",
    "EIGEN_DAMPING_SHARE",
    "FISHER_DAMPING_SHARE",
    "HESSIAN_DAMPING_SHARE",
    "LOW_KEPT_SHARE",
    "DampingChoice",
    "SpectrumBlock",
    "damping_rule_line",
    "effective_dimension",
    "median_over_mean",
    "spectrum_damping",
]


@dataclass(frozen=True)
class SpectrumBlock:
    """Eigenvalues of one damped curvature block (``counts[i]`` directions of value
    ``values[i]``; ``None``: one each) and the unit its relative damping multiplies: the block
    is damped by ``relative × unit``."""

    values: np.ndarray
    unit: float
    counts: np.ndarray | None = None

    def effective_dimension(self, damping: float) -> float:
        values = np.clip(np.asarray(self.values, dtype=np.float64).ravel(), 0.0, None)
        weights = values / (values + damping) if damping > 0 else (values > 0).astype(float)
        if self.counts is not None:
            weights = weights * np.asarray(self.counts, dtype=np.float64).ravel()
        return float(weights.sum())

    @property
    def directions(self) -> float:
        """Directions with a positive eigenvalue."""
        positive = np.asarray(self.values).ravel() > 0
        if self.counts is None:
            return float(positive.sum())
        return float(np.asarray(self.counts, dtype=np.float64).ravel()[positive].sum())


@dataclass(frozen=True)
class DampingChoice:
    """The relative damping the spectrum rule chose and what it was aiming at."""

    relative: float
    target: float  # the effective dimension aimed at
    effective_dimension: float  # reached at ``relative``
    directions: float  # positive-eigenvalue directions
    n_examples: int | None  # the cap on the target, when given
    share: float
    #: the spectrum's median eigenvalue over its mean, where the rule looked at it
    median_over_mean: float | None = None
    #: the share was switched to the concentrated one (:data:`CONCENTRATED_MEDIAN`)
    concentrated: bool = False

    def to_dict(self) -> dict[str, float | int | str | bool | None]:
        return {
            "rule": "spectrum",
            "relative": self.relative,
            "share": self.share,
            "target_effective_dimension": self.target,
            "effective_dimension": self.effective_dimension,
            "directions": self.directions,
            "n_examples": self.n_examples,
            "median_over_mean": self.median_over_mean,
            "concentrated": self.concentrated,
        }


def effective_dimension(blocks: Sequence[SpectrumBlock], relative: float) -> float:
    """``Σ_blocks Σ_i μ_i / (μ_i + relative × unit)``."""
    return sum(block.effective_dimension(relative * block.unit) for block in blocks)


def _usable(blocks: Sequence[SpectrumBlock]) -> list[SpectrumBlock]:
    """The blocks with a positive finite unit, checked finite."""
    blocks = [b for b in blocks if b.unit > 0 and math.isfinite(b.unit)]
    for block in blocks:
        if not np.isfinite(np.asarray(block.values)).all():
            raise InputError("the curvature spectrum holds NaN or inf: its inputs are not finite")
    return blocks


def median_over_mean(blocks: Sequence[SpectrumBlock]) -> float:
    """The median over the mean of the positive eigenvalues of ``blocks``, each in its block's
    damping unit (the scale ``damping="auto"`` works in), counts weighted: near ½–1 for a flat
    spectrum, far below :data:`CONCENTRATED_MEDIAN` when a few directions carry the trace."""
    values, weights = [], []
    for block in _usable(blocks):
        block_values = np.asarray(block.values, dtype=np.float64).ravel() / block.unit
        counts = (
            np.ones_like(block_values)
            if block.counts is None
            else np.asarray(block.counts, dtype=np.float64).ravel()
        )
        positive = block_values > 0
        values.append(block_values[positive])
        weights.append(counts[positive])
    values, weights = np.concatenate(values or [[]]), np.concatenate(weights or [[]])
    if values.size == 0:
        raise InputError("the curvature has no positive eigenvalue: it has no median")
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    median = values[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    return float(median / (values @ weights / weights.sum()))


def spectrum_damping(
    blocks: Sequence[SpectrumBlock],
    share: float,
    n_examples: int | None = None,
    concentrated_share: float | None = None,
) -> DampingChoice:
    """The relative damping at which ``blocks`` resolve ``share × D`` of their ``D``
    positive-eigenvalue directions, or ``share × min(n_examples, D)`` when ``n_examples`` is
    given (see the module docstring); bisection on a log scale to 1e-4 relative accuracy.
    ``concentrated_share``: the share used instead when the spectrum is concentrated (its
    :func:`median_over_mean` below :data:`CONCENTRATED_MEDIAN`)."""
    if not 0 < share < 1:
        raise InputError(f"the damping share must lie in (0, 1), got {share}")
    if concentrated_share is not None and not 0 < concentrated_share < 1:
        raise InputError(f"the concentrated share must lie in (0, 1), got {concentrated_share}")
    if n_examples is not None and n_examples < 1:
        raise InputError(f"the damping rule needs a positive number of examples, got {n_examples}")
    blocks = _usable(blocks)
    directions = sum(b.directions for b in blocks)
    if directions == 0:
        raise InputError(
            "the curvature has no positive eigenvalue (all gradients vanish): the damping "
            "cannot be read off its spectrum; pass a number"
        )
    ratio, concentrated = None, False
    if concentrated_share is not None:
        ratio = median_over_mean(blocks)
        concentrated = ratio < CONCENTRATED_MEDIAN
        share = concentrated_share if concentrated else share
    target = share * (directions if n_examples is None else min(float(n_examples), directions))
    low, high = math.log(1e-12), math.log(1e12)
    while high - low > 1e-4:
        middle = (low + high) / 2
        if effective_dimension(blocks, math.exp(middle)) > target:
            low = middle
        else:
            high = middle
    relative = math.exp((low + high) / 2)
    reached = effective_dimension(blocks, relative)
    return DampingChoice(
        relative, target, reached, directions, n_examples, share, ratio, concentrated
    )


def damping_rule_line(rule: dict) -> str:
    """``damping auto: relative λ = 43, resolving 1% of 2,038 directions (concentrated spectrum:
    median eigenvalue 0.0023 of the mean)`` — a :meth:`DampingChoice.to_dict` record as one
    line for the command line (with an ``n`` cap: of the directions ``n`` examples determine)."""
    directions, cap = rule["directions"], rule.get("n_examples")
    counted = (
        f"{directions:,.0f} directions"
        if cap is None or cap >= directions
        else f"the {cap:,} directions {cap:,} examples determine (of {directions:,.0f})"
    )
    line = (
        f"damping auto: relative λ = {rule['relative']:.3g}, resolving {rule['share']:.0%} of "
        f"{counted}"
    )
    ratio = rule.get("median_over_mean")
    if ratio is None:
        return line
    kind = "concentrated spectrum" if rule.get("concentrated") else "spectrum"
    return f"{line} ({kind}: median eigenvalue {ratio:.2g} of the mean)"
