"""Estimators with a damping ``λ``, and the one meaning ``damping`` has for all of them.

``damping_mode="relative"`` (the default) sets ``λ = damping × trace(H) / min(n, dim)`` for the
curvature block that ``λ`` damps (the whole Fisher, one EK-FAC module, one DataInf layer): the
mean non-zero eigenvalue of an ``n``-example Fisher, so ``damping = 1`` puts ``λ`` in the middle of
the spectrum whether the features are a 650-dimensional logistic regression or a 10⁵-dimensional
layer with ``n = 1000``. ``"absolute"`` uses ``damping`` as ``λ`` itself.

``damping="auto"`` reads the relative damping off the fitted curvature's spectrum
(:func:`~infscope.curvature.spectrum.spectrum_damping`: the ``λ`` at which the damped curvature
resolves a share of its directions, ``damping_share``, by default the estimator's
:attr:`DampedEstimator.default_damping_share`, chosen per estimator on dev tasks: see
:mod:`infscope.curvature.spectrum`). Every estimator exposes
its spectrum after the fit (:meth:`DampedEstimator._spectra`), so the rule costs at most one
extra fit; the choice is recorded as ``describe()["damping_rule"]``.

Fitting does all λ-independent work (eigendecompositions, Krylov spaces, factor statistics);
:meth:`DampedEstimator.with_damping` returns a fitted copy at another damping that reuses it, which
is how :func:`~infscope.evaluation.damping.select_damping` scans a grid with one fit (each grid
value still preconditions and scores the held-out queries again; CG re-solves).
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from typing import Any

import numpy as np

from infscope.attribution.base import CheckpointChoice, CheckpointSum
from infscope.curvature import spectrum
from infscope.curvature.spectrum import SpectrumBlock
from infscope.errors import InputError

DAMPING_MODES = ("relative", "absolute")
#: ``damping=AUTO_DAMPING`` chooses the damping from the fitted spectrum
AUTO_DAMPING = "auto"


def check_damping(damping: Any, damping_mode: str) -> float:
    """``damping`` as a float, or :class:`InputError` for a non-positive/non-finite value or an
    unknown mode."""
    if damping_mode not in DAMPING_MODES:
        raise InputError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)):
        raise InputError(f"damping must be a number, got {damping!r}")
    if not (math.isfinite(damping) and damping > 0):
        raise InputError(f"damping must be a positive finite number, got {damping}")
    return float(damping)


class DampedEstimator(CheckpointSum):
    """A :class:`CheckpointSum` whose preconditioner depends on a damping ``λ``.

    Subclasses set :attr:`default_damping` (measured per method, see ``docs/concepts.md``), do
    their λ-independent work in ``_fit`` and derive everything that depends on ``λ`` in
    :meth:`_apply_damping`, which ``fit`` and :meth:`with_damping` both call.
    """

    #: ``damping`` used when none is given (relative mode)
    default_damping: float = 1.0
    #: ``damping="auto"``: share of its directions the damped curvature resolves, when none is given
    default_damping_share: float = spectrum.DAMPING_SHARE
    #: ``damping="auto"`` with no share given: the share used instead on a concentrated spectrum
    #: (:data:`~infscope.curvature.spectrum.CONCENTRATED_MEDIAN`); ``None``: no switch
    concentrated_damping_share: float | None = None

    def __init__(
        self,
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        damping: float | None = None,
        damping_mode: str = "relative",
        damping_share: float | None = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(normalize=normalize, checkpoints=checkpoints, block_size=block_size)
        #: the damping is read off the fitted spectrum (``damping="auto"``)
        self.auto_damping = damping == AUTO_DAMPING
        if self.auto_damping and damping_mode != "relative":
            raise InputError("damping='auto' chooses a relative damping: use damping_mode='relative'")
        if damping_share is not None and not self.auto_damping:
            raise InputError("damping_share applies to damping='auto' only")
        #: ``damping="auto"``: the share of its directions the damped curvature resolves
        self.damping_share = (
            self.default_damping_share if damping_share is None else _check_share(damping_share)
        )
        #: a share was given: ``damping="auto"`` keeps it on every spectrum
        self.share_given = damping_share is not None
        if damping is None or self.auto_damping:
            if damping_mode == "absolute":
                raise InputError("damping_mode='absolute' needs an explicit damping value")
            damping = self.default_damping
        self.damping = check_damping(damping, damping_mode)
        self.damping_mode = damping_mode

    def fit(self, train):  # type: ignore[override]
        super().fit(train)
        if self.auto_damping:
            self._read_damping_off_the_spectrum()
        self._apply_damping()
        return self

    def _read_damping_off_the_spectrum(self) -> None:
        """``damping="auto"``: the relative damping at which the fitted curvature resolves
        ``damping_share`` of its (resolvable) directions — or, with no share given, the
        estimator's ``concentrated_damping_share`` on a concentrated spectrum — recorded in the
        notes."""
        blocks = [block for blocks in self._spectra() for block in blocks]
        choice = spectrum.spectrum_damping(
            blocks,
            self.damping_share,
            self._resolvable_directions(self.train),
            None if self.share_given else self.concentrated_damping_share,
        )
        self.damping = choice.relative
        self.notes["damping_rule"] = choice.to_dict()

    def _resolvable_directions(self, train) -> int | None:
        """A cap on the directions ``damping="auto"`` counts (``None``: every positive one):
        an estimator whose spectrum has more directions than its training examples determine
        says so."""
        return None

    def _spectra(self) -> list[list[SpectrumBlock]]:
        """Per checkpoint, the fitted curvature's eigenvalues per damped block, each with the
        unit its relative damping multiplies (what ``damping="auto"`` reads)."""
        raise InputError(f"{type(self).__name__} has no spectrum to choose its damping from")

    @abstractmethod
    def _apply_damping(self) -> None:
        """Set the λ-dependent state from the fitted λ-independent state and ``self.damping``."""

    def _train_scales(self, checkpoint: str) -> np.ndarray | None:
        """RelatIF (``normalize="relatif"``): ``1 / sqrt(<(H+λI)^-1 φ(z), φ(z)>)``."""
        if self.normalize != "relatif":
            return None
        own = self._self_products(checkpoint)
        return 1.0 / np.sqrt(np.maximum(own, np.finfo(np.float64).tiny))

    def with_damping(
        self, damping: float | str, damping_share: float | None = None
    ) -> DampedEstimator:
        """A fitted copy at another (same-mode) damping, sharing this one's λ-independent work;
        ``"auto"`` reads it off the fitted spectrum at ``damping_share`` (default: this one's),
        as a fit with ``damping="auto"`` would."""
        self._require_fit()
        if damping_share is not None and damping != AUTO_DAMPING:
            raise InputError("damping_share applies to damping='auto' only")
        other = copy.copy(self)
        other.notes = {k: v for k, v in self.notes.items() if k != "damping_rule"}
        other.auto_damping = damping == AUTO_DAMPING
        if other.auto_damping:
            if self.damping_mode != "relative":
                raise InputError("damping='auto' chooses a relative damping: this one is absolute")
            if damping_share is not None:
                other.damping_share = _check_share(damping_share)
                other.share_given = True
            other._read_damping_off_the_spectrum()
        else:
            other.damping = check_damping(damping, self.damping_mode)
        other._apply_damping()
        return other

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "damping": self.damping, "damping_mode": self.damping_mode}


def _check_share(share: float) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise InputError(f"damping_share must lie in (0, 1), got {share!r}")
    return float(share)
