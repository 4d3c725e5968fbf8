"""Estimators by name, for the CLI and config files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

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
    factors: str | Path | list[str | Path] | None = None,
    block_size: int = 4096,
    fisher: str | Path | None = None,
    query_rank: int | None = None,
) -> Estimator:
    """An unfitted estimator. ``damping=None`` takes each method's default; ``checkpoint`` is a
    checkpoint id (``"all"`` averages influence over checkpoints); ``factors`` is a saved K-FAC
    factors file or the eigenbasis (or per-checkpoint eigenbases) an ``eigen`` store was
    projected with (``ekfac``/``kfac``);
    ``fisher`` a sampled-label store whose statistics give the curvature (true Fisher:
    ``ekfac``/``kfac``, and ``influence``'s Fisher); ``query_rank`` scores with low-rank
    preconditioned queries (``ekfac``/``kfac``)."""
    if query_rank is not None and method not in ("ekfac", "kfac"):
        raise InputError(f"{method} takes no query rank (ekfac and kfac do)")
    fisher_store = None
    if fisher is not None:
        from infscope.store import FeatureStore

        if method not in ("ekfac", "kfac", "influence"):
            raise InputError(f"{method} takes no Fisher store (ekfac, kfac and influence do)")
        fisher_store = FeatureStore.open(fisher)
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
        curvature = None
        if fisher_store is not None:
            from infscope.curvature.fisher import FeatureFisher

            last = fisher_store.checkpoints[-1].id
            which = last if checkpoint in (None, "all") else fisher_store.checkpoint(checkpoint).id
            curvature = FeatureFisher(fisher_store, which, block_size)
        return InfluenceFunction(
            solver,
            curvature=curvature,
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
        from infscope.attribution.kfac import EKFAC
        from infscope.curvature.kfac import load_factors

        if isinstance(factors, (list, tuple)):
            factors = factors[0] if len(factors) == 1 else [load_factors(f) for f in factors]
        if not factors:
            raise InputError(
                f"{method} needs fitted factors: a .safetensors file from KFACFactors.save, or "
                f"the eigenbasis of an eigen-projected store"
            )
        return EKFAC(
            factors if isinstance(factors, list) else load_factors(factors),
            fisher=fisher_store,
            damping_mode=damping_mode,
            correct_eigenvalues=method == "ekfac",
            normalize=normalize,
            block_size=block_size,
            query_rank=query_rank,
            **damped,
        )
    raise InputError(f"unknown method {method!r}; choose from {METHODS}")


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator by name and options (:func:`build_estimator`'s arguments), recorded as
    JSON beside what it produced (an index, a run's configuration) so it can be rebuilt."""

    method: str = "tracin"
    normalize: str = "none"
    checkpoint: str | None = None
    damping: float | None = None
    damping_mode: str = "relative"
    solver: str = "auto"
    l2_regularization: float | None = None
    factors: tuple[str, ...] = ()
    block_size: int = 4096
    fisher: str | None = None
    query_rank: int | None = None

    def build(self) -> Estimator:
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "method"}
        options["factors"] = list(self.factors) or None
        return build_estimator(self.method, **options)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "factors": list(self.factors)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EstimatorSpec:
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise InputError(f"not an estimator spec: unknown keys {sorted(set(data) - known)}")
        return cls(**{**data, "factors": tuple(data.get("factors") or ())})
