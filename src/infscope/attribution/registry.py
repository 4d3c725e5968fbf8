"""Estimators by name, for the CLI and config files."""

from __future__ import annotations

from pathlib import Path

from infscope.attribution.base import Estimator
from infscope.attribution.datainf import DataInf
from infscope.attribution.gradient_similarity import GradientSimilarity, TracIn
from infscope.attribution.influence import TRAK, InfluenceFunction
from infscope.attribution.representer import RepresenterPoints
from infscope.errors import InputError

METHODS = (
    "dot",
    "cosine",
    "tracin",
    "influence",
    "trak",
    "datainf",
    "representer",
    "ekfac",
    "kfac",
)


def build_estimator(
    method: str,
    *,
    normalize: str = "none",
    checkpoint: str | None = None,
    damping: float | None = None,
    damping_mode: str = "relative",
    solver: str = "auto",
    l2_regularization: float | None = None,
    factors: str | Path | None = None,
    block_size: int = 4096,
) -> Estimator:
    """An unfitted estimator. ``damping=None`` takes each method's default; ``checkpoint`` is a
    checkpoint id (``"all"`` averages influence over checkpoints); ``factors`` is a saved K-FAC
    factors file (``ekfac``/``kfac``)."""
    damped = {} if damping is None else {"damping": damping}
    if method in ("dot", "cosine"):
        unit = "unit" if method == "cosine" else normalize
        return GradientSimilarity(normalize=unit, checkpoint=checkpoint, block_size=block_size)
    if method == "tracin":
        return TracIn(
            normalize=normalize,
            checkpoints=None if checkpoint in (None, "all") else [checkpoint],
            block_size=block_size,
        )
    if method == "influence":
        return InfluenceFunction(
            solver,
            damping_mode=damping_mode,
            normalize=normalize,
            checkpoints=checkpoint or "last",
            block_size=block_size,
            **damped,
        )
    if method == "trak":
        return TRAK(
            damping_mode=damping_mode,
            solver=solver,
            checkpoints=checkpoint or "all",
            block_size=block_size,
            **damped,
        )
    if method == "datainf":
        return DataInf(
            damping_mode=damping_mode, checkpoint=checkpoint, block_size=block_size, **damped
        )
    if method == "representer":
        if l2_regularization is None:
            raise InputError("representer points need the final layer's l2_regularization")
        return RepresenterPoints(l2_regularization, checkpoint=checkpoint, block_size=block_size)
    if method in ("ekfac", "kfac"):
        from infscope.attribution.kfac import EKFAC, KFACFactors

        if factors is None:
            raise InputError(
                f"{method} needs fitted factors (a .safetensors file from KFACFactors.save)"
            )
        return EKFAC(
            KFACFactors.load(factors),
            damping_mode=damping_mode,
            correct_eigenvalues=method == "ekfac",
            normalize=normalize,
            block_size=block_size,
            **damped,
        )
    raise InputError(f"unknown method {method!r}; choose from {METHODS}")
