"""EK-FAC and K-FAC influence: scores with the per-module, Kronecker-factored inverse curvature of
:class:`~infscope.curvature.kfac.KFACFactors` (fit by a model pass, or read from an ``eigen``
store's basis), ``<(F_m + λ_m I)^-1 φ(q), φ(z)>`` summed over modules.

**Damping per module.** ``damping_mode="relative"`` uses ``λ_m = damping × trace_m / dim_m`` for a
Kronecker module — the mean of its K-FAC/EK-FAC eigenvalues in the store, kronfluence's heuristic
``damping × mean(Λ_m)`` (on an eigen store, the mean of the eigenvalues kept) — and ``trace_m /
min(n, dim_m)`` for a dense block, the mean non-zero eigenvalue of its exact ``n``-example Fisher
(:mod:`infscope.attribution.damped`). The Kronecker eigenvalues are not limited to rank ``n``, so
their mean is the scale their damping is relative to. Measured on the LM benchmarks: with ``trace
/ min(n, dim)`` the best EK-FAC damping sat 10³× below the default; relative to the full layer's
mean eigenvalue instead of the kept ones', the default on MiniLM lost 0.05–0.13 LDS to its tuned
value. ``"absolute"`` uses ``damping`` everywhere. The values are recorded in ``describe()``.

Reading factors is not a model pass: the estimator reads stores (the corrected eigenvalues of
factors fit without a store, and the factors of an eigen store, come from one streamed read).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from infscope.attribution.base import NORMALIZATIONS, CheckpointChoice
from infscope.attribution.damped import DampedEstimator
from infscope.attribution.low_rank import LowRankQueries
from infscope.curvature.eigenbasis import KroneckerBasis, as_bases
from infscope.curvature.kfac import KFACFactors
from infscope.curvature.kfac_blocks import FactorBlock
from infscope.curvature.spectrum import (
    CONCENTRATED_DAMPING_SHARE,
    EIGEN_DAMPING_SHARE,
    SpectrumBlock,
)
from infscope.deprecation import legacy_arguments
from infscope.errors import InputError, StoreMismatchError
from infscope.store import FeatureStore

__all__ = ["EKFAC"]


@dataclass
class _Preconditioner:
    block: FactorBlock
    inverse: np.ndarray  # 1 / (Λ + λ): [rows, cols] (Kronecker) or [dim] (dense)
    damping: float


class EKFAC(DampedEstimator):
    """Influence with the EK-FAC (or K-FAC) inverse curvature: ``<(F_m + λ_m I)^-1 φ(q), φ(z)>``
    summed over modules, ``F_m = (Q_S ⊗ Q_A) diag(Λ_m) (Q_S ⊗ Q_A)ᵀ`` per Kronecker module and the
    exact block Fisher for the others; averaged over checkpoints when given several.

    Args:
        factors: :class:`KFACFactors` fit at the training store's checkpoint, or the
            :class:`~infscope.curvature.eigenbasis.KroneckerBasis` (or the per-checkpoint
            sequence of them) an ``eigen``-projected training store was extracted with (the
            factors of each checkpoint are then built from it on :meth:`fit`, see
            :meth:`KFACFactors.from_basis`). They are not changed: missing corrected
            eigenvalues are computed on :meth:`fit` into a copy.
        normalize: ``"none"``, ``"unit"`` or ``"relatif"`` (divide by ``sqrt`` of the training
            example's self-influence).
        checkpoints: with bases, ``"all"`` (every checkpoint of the training store, equally
            weighted: influence averaged over a training trajectory, each checkpoint with its own
            EK-FAC eigenvalues), ``"last"``, ids, or ``None``: the checkpoints the bases were fit
            at (one per checkpoint given as a sequence — the trajectory average), else the last.
            :class:`KFACFactors` belong to one checkpoint (leave it ``None``).
        damping: ``λ_m`` relative to the mean eigenvalue of each Kronecker module,
            ``trace_m / dim_m`` (kronfluence's unit; default 0.1), and to ``trace_m / min(n,
            dim_m)`` of a dense block; or absolute (below).
        damping_mode: ``"relative"`` (per module) or ``"absolute"`` (one ``λ`` everywhere).
        damping_share: with ``damping="auto"``, the share of its directions the damped
            curvature resolves (default: :data:`~infscope.curvature.spectrum.EIGEN_DAMPING_SHARE`
            with a basis — the eigen projection —, or
            :data:`~infscope.curvature.spectrum.CONCENTRATED_DAMPING_SHARE` there when the
            spectrum is concentrated; else
            :data:`~infscope.curvature.spectrum.DAMPING_SHARE` of at most ``n`` directions).
        correct_eigenvalues: EK-FAC (``True``, name ``"ekfac"``) or K-FAC with trace-matched
            ``λ_S ⊗ λ_A`` (``False``, name ``"kfac"``).
        fisher: a store of the training examples' sampled-label gradients (``featurize(...,
            gradient="fisher")``, same projection and checkpoints) from which the curvature
            statistics (traces, corrected eigenvalues, dense blocks) are taken: the true Fisher.
            ``None``: the training store's own (empirical Fisher).
        query_rank: score with each Kronecker module's preconditioned query matrix cut to its
            best rank-``query_rank`` approximation (:mod:`infscope.attribution.low_rank`): all
            queries held at once as factors, the training store read once per checkpoint, the
            kept share of the queries' squared norm recorded as ``query_energy``. ``None``
            (default): exact, one preconditioned query block at a time.
    """

    normalizations = (*NORMALIZATIONS, "relatif")
    default_damping = 0.1

    @legacy_arguments(
        "damping",
        "damping_mode",
        "correct_eigenvalues",
        "normalize",
        "block_size",
        "fisher",
        "checkpoints",
        "query_rank",
    )
    def __init__(
        self,
        factors: KFACFactors | KroneckerBasis | Sequence[KroneckerBasis],
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        damping: float | None = None,
        damping_mode: str = "relative",
        damping_share: float | None = None,
        correct_eigenvalues: bool = True,
        fisher: FeatureStore | None = None,
        query_rank: int | None = None,
        block_size: int = 4096,
    ) -> None:
        self.correct = bool(correct_eigenvalues)
        self.name = "ekfac" if self.correct else "kfac"
        eigen = not isinstance(factors, KFACFactors)  # a basis: the eigen projection
        super().__init__(
            normalize=normalize,
            checkpoints=checkpoints,
            damping=damping,
            damping_mode=damping_mode,
            damping_share=damping_share,
            block_size=block_size,
        )
        if eigen:  # the eigen projection's own shares (its budget cut the negligible directions)
            if not self.share_given:
                self.damping_share = EIGEN_DAMPING_SHARE
            self.concentrated_damping_share = CONCENTRATED_DAMPING_SHARE
        if query_rank is not None and (
            isinstance(query_rank, bool) or not isinstance(query_rank, int) or query_rank < 1
        ):
            raise InputError(f"query_rank must be a positive int or None, got {query_rank!r}")
        self.query_rank = query_rank
        if isinstance(factors, (list, tuple)):
            factors = as_bases(factors)
            if len(factors) == 1:
                factors = factors[0]
        elif not isinstance(factors, (KFACFactors, KroneckerBasis)):
            raise InputError(
                f"factors must be KFACFactors or KroneckerBasis(es), got {type(factors).__name__}"
            )
        if fisher is not None and not isinstance(fisher, FeatureStore):
            raise InputError(f"fisher must be a FeatureStore, got {type(fisher).__name__}")
        if checkpoints is not None and isinstance(factors, KFACFactors):
            raise InputError(
                "KFACFactors belong to one checkpoint; to average over checkpoints, project the "
                "stores with an eigenbasis fit over them and pass the basis"
            )
        self.factors = factors
        self.fisher = fisher
        #: the factors used for each checkpoint scored (in order), after fit
        self.factors_by_checkpoint: dict[str, KFACFactors] = {}
        self._preconditioners: dict[str, list[_Preconditioner]] = {}

    @property
    def fitted_factors(self) -> KFACFactors | None:
        """The fitted factors of the last checkpoint scored (the only one by default)."""
        if not self.factors_by_checkpoint:
            return None
        return list(self.factors_by_checkpoint.values())[-1]

    def checkpoint_ids(self, train: FeatureStore) -> list[str]:
        if self.factors_by_checkpoint:
            return list(self.factors_by_checkpoint)
        return super().checkpoint_ids(train)

    def _default_checkpoint_ids(self, train: FeatureStore) -> list[str]:
        """The checkpoints the factors belong to: the factors' own, every checkpoint one of the
        per-checkpoint bases was fit at (the trajectory average), or the last checkpoint whose
        weights a basis was fit at (the store's last when none is recorded)."""
        factors = self.factors
        if isinstance(factors, KFACFactors):
            return [factors.resolve_checkpoint(train)]
        if isinstance(factors, list):  # one basis per checkpoint: every checkpoint they cover
            known = {b.fingerprint for b in factors}
            return [c.id for c in train.checkpoints if c.fingerprint in known]
        matches = [c.id for c in train.checkpoints if c.fingerprint in factors.fingerprints]
        return [matches[-1] if matches else train.checkpoints[-1].id]

    def _fit(self, train: FeatureStore) -> None:
        self.factors_by_checkpoint = {}
        statistics = self.fisher or train
        if self.fisher is not None and self.fisher.spec.gradient != "fisher":
            raise StoreMismatchError(
                f"{self.fisher.root} holds {self.fisher.spec.gradient!r} gradients; the true "
                f"Fisher needs sampled-label ones (extract them with gradient='fisher')"
            )
        rows = self.rows_per_block(train.feature_dim)
        fitted = {}
        for checkpoint in super().checkpoint_ids(train):
            factors = self.factors
            if isinstance(factors, (KroneckerBasis, list)):
                factors = KFACFactors.from_basis(factors, statistics, checkpoint, block_size=rows)
            elif self.fisher is not None or (self.correct and not factors.corrected):
                factors.check_store(statistics)
                factors = factors.copy().correct_eigenvalues(statistics, None, rows)
            factors.check_store(train)
            fitted[factors.resolve_checkpoint(train, checkpoint)] = factors
        self.factors_by_checkpoint = fitted
        super()._fit(train)
        self.n_train = train.n_examples

    def _eigenvalues(self, block: FactorBlock) -> np.ndarray:
        if not block.kronecker:
            return block.dense_values
        return block.corrected if self.correct else block.kfac_values()

    def _apply_damping(self) -> None:
        self._preconditioners = {}
        for checkpoint, factors in self.factors_by_checkpoint.items():
            preconditioners = []
            for block in factors.blocks:
                values = self._eigenvalues(block)
                if self.damping_mode == "relative":
                    damping = self.damping * block.damping_unit(self.n_train)
                else:
                    damping = self.damping
                with np.errstate(divide="ignore"):
                    inverse = np.where(values + damping > 0, 1.0 / (values + damping), 0.0)
                # relative damping of a module whose training gradients all vanish: its training
                # features are zero, so its preconditioned query block contributes nothing anyway
                preconditioners.append(_Preconditioner(block, inverse, damping))
            self._preconditioners[checkpoint] = preconditioners

    def _resolvable_directions(self, train: FeatureStore) -> int | None:
        """Full-space factors (no basis) hold more Kronecker directions than ``n`` examples
        determine (2,378 against 1,000 on the digits MLP): ``damping="auto"`` counts ``n``."""
        return train.n_examples if isinstance(self.factors, KFACFactors) else None

    def _spectra(self) -> list[list[SpectrumBlock]]:
        """Each module's (EK-)FAC eigenvalues in the store, damped relative to their mean."""
        return [
            [
                SpectrumBlock(self._eigenvalues(block), block.damping_unit(self.n_train))
                for block in factors.blocks
            ]
            for factors in self.factors_by_checkpoint.values()
        ]

    def check_query(self, query: FeatureStore) -> None:
        super().check_query(query)
        for checkpoint, factors in self.factors_by_checkpoint.items():
            info = query.checkpoint(checkpoint)
            fingerprints = (info.fingerprint, factors.fingerprint)
            if None not in fingerprints and fingerprints[0] != fingerprints[1]:
                raise StoreMismatchError(
                    f"checkpoint {checkpoint!r} of query store {query.root} was extracted from "
                    f"different weights than the K-FAC factors were fit on"
                )

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        if checkpoint not in self._preconditioners:
            raise InputError("EKFAC is not fitted: call fit(train_store) first")
        out = np.zeros(block.shape)  # columns after the blocks (zero padding) stay zero
        for pre in self._preconditioners[checkpoint]:
            b = pre.block
            step = max(1, 2**20 // b.dim)  # float64 temporaries of ~8 MiB, whatever the width
            for first in range(0, len(block), step):
                part = np.asarray(block[first : first + step, b.slice], dtype=np.float64)
                m = len(part)
                if b.diagonal:
                    restored = part * pre.inverse.reshape(-1)
                elif b.kronecker:
                    rotated = b.s_vectors.T @ part.reshape(m, b.rows, b.cols) @ b.a_vectors
                    rotated *= pre.inverse
                    restored = (b.s_vectors @ rotated @ b.a_vectors.T).reshape(m, b.dim)
                else:
                    restored = ((part @ b.dense_vectors) * pre.inverse) @ b.dense_vectors.T
                out[first : first + m, b.slice] = restored
        return out

    def _score_blocks(self, query: FeatureStore) -> Iterator[tuple[int, int, np.ndarray]]:
        if self.query_rank is None:
            yield from super()._score_blocks(query)
            return
        rows = self.rows_per_block(self.train.feature_dim)
        weights = self.checkpoint_weights(self.train)
        factored, kept, total = [], 0.0, 0.0
        for checkpoint, _ in weights:
            layout = [p.block.layout for p in self._preconditioners[checkpoint]]
            chunks = (
                self._precondition(checkpoint, self._prepare(block))
                for _, block in query.iter_blocks(checkpoint, rows)
            )
            queries = LowRankQueries.compress(
                chunks, layout, query.n_examples, self.query_rank, self.device
            )
            kept += sum(m.kept for m in queries.modules)
            total += sum(m.total for m in queries.modules)
            factored.append(queries)
        self.notes["query_energy"] = kept / total if total > 0 else 1.0
        scales = [self._train_scales(checkpoint) for checkpoint, _ in weights]
        trains = zip(*(self.train.iter_blocks(c, rows) for c, _ in weights))
        desc = f"scoring[{self.name}, rank {self.query_rank}]"
        for parts in tqdm(trains, desc=desc, disable=None):
            start, summed = parts[0][0], 0.0
            for (_, weight), queries, (_, block), scale in zip(weights, factored, parts, scales):
                product = queries.products(self._prepare(block))
                if scale is not None:
                    product *= scale[start : start + len(block)]
                summed = summed + weight * product
            yield 0, start, summed

    def describe(self) -> dict[str, Any]:
        factors = self.fitted_factors or self.factors
        last = list(self._preconditioners.values())[-1] if self._preconditioners else []
        return {
            **super().describe(),
            "corrected_eigenvalues": self.correct,
            "query_rank": self.query_rank,
            "fisher": "true (sampled labels)" if self.fisher is not None else "empirical",
            "module_damping": {p.block.name: p.damping for p in last},
            "factors": {
                "checkpoint": getattr(factors, "checkpoint", None),
                "fingerprint": factors.fingerprint,
                "n_examples": factors.n_examples,
                "statistics": getattr(factors, "statistics", None),
            },
        }

