"""K-FAC factors: a per-module, Kronecker-factored curvature of the training loss, in the space of
the stored features.

K-FAC (Martens & Grosse 2015) approximates each tracked module's block of the Fisher by a Kronecker
product ``S ⊗ A`` of the output-gradient covariance ``S = E[g gᵀ]`` and the input-activation
covariance ``A = E[a aᵀ]`` (expectations over the positions/tokens of the training data) and drops
the blocks between modules. EK-FAC (George et al. 2018; Grosse et al. 2023, as in kronfluence)
keeps the Kronecker eigenbases ``Q_S``, ``Q_A`` and replaces the eigenvalues by the second moments
of the per-example gradients in that basis: ``Λ*[r, c] = mean_i ((Q_Sᵀ M_i Q_A)[r, c])²``.

Everything lives in the space of the stored features. For a Kronecker-projected store a module's
feature block is ``P_out M_i P_inᵀ``, so the factors are fit on projected activations ``P_in a``
and projected output gradients ``P_out g`` (``A_p = P_in A P_inᵀ``, ``S_p = P_out S P_outᵀ``);
for an identity-projected store ``P = I`` and this is exact, unprojected K-FAC/EK-FAC. A random
``P`` makes this ``(P F Pᵀ + λ)⁻¹``, not the projection of the full-space inverse, and keeps few
of a wide layer's directions; the **eigen** projection (:mod:`infscope.curvature.eigenbasis`)
instead projects onto the leading eigenvectors of the full-space factors, so its features are
already in the Kronecker eigenbasis: the factors are diagonal (:meth:`KFACFactors.from_basis`, no
model pass), EK-FAC there is the full-space EK-FAC restricted to the kept directions (at the same
absolute damping), and at full rank it is unprojected EK-FAC (equal to kronfluence's at the same
damping, which a test checks).
Dense and sparse JL stores mix modules and have no per-module blocks: they are refused. Modules
without Kronecker structure (LayerNorm) get their exact dense block of the Fisher (it is small).

Conventions (documented differences from kronfluence):

* **Fisher.** ``g`` is the gradient of each example's *training loss* (observed labels: the
  empirical Fisher) unless the statistics come from a ``gradient="fisher"`` store of labels
  sampled from the model (``EKFAC(..., fisher=store)``: the true Fisher, kronfluence's default).
* **Positions whose output gradient is exactly zero are left out of ``A`` and ``S``** (padding,
  positions the loss never sees — e.g. every token but [CLS] in a BERT classifier's last block):
  they contribute nothing to any per-example gradient ``M_i = Σ_t g_t a_tᵀ``. This subsumes
  kronfluence's attention-mask handling without needing to know the batch layout.
* **K-FAC eigenvalues are rescaled to the trace.** ``λ_S ⊗ λ_A`` from token averages has the wrong
  scale for sequence models (the per-example gradient *sums* ``T`` positions; the Kronecker product
  of averages ignores that and the correlations between positions). They are multiplied by one
  scalar per module so that they sum to ``trace_m = mean_i ‖M_i‖²``, the trace of the module's
  exact empirical-Fisher block. EK-FAC's corrected eigenvalues already sum to ``trace_m``.

Workflow (the estimator is :class:`~infscope.attribution.kfac.EKFAC`)::

    factors = KFACFactors.fit(extractor, train_data, store=train_store)   # one pass + one read
    factors.save("factors.safetensors")
    scores = EKFAC(factors).fit(train_store).score(query_store)

    # curvature-aware projection (what language models want):
    basis = fit_kronecker_basis(extractor, train_data)       # full-space factors, one pass
    config = ProjectionConfig("eigen", dim=4096, basis=basis) # extract train and query stores
    scores = EKFAC(basis).fit(train_store).score(query_store)
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from infscope.curvature.covariance import UNSUPPORTED, KroneckerCovariances, accumulate
from infscope.curvature.eigenbasis import FORMAT as BASIS_FORMAT
from infscope.curvature.eigenbasis import KroneckerBasis, as_bases
from infscope.curvature.kfac_blocks import FactorBlock, blocks_from_layout, eigh_psd, require_layout
from infscope.curvature.kfac_file import (
    canonical,
    factors_metadata,
    file_format,
    read_factors,
    write_factors,
)
from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError, StoreIncompleteError, StoreMismatchError
from infscope.gradients.basis import describe_bases
from infscope.gradients.extractor import GradientExtractor, model_fingerprint
from infscope.gradients.featurize import model_signature
from infscope.gradients.projection import IdentityProjector, KroneckerProjector
from infscope.store import BlockLayout, FeatureStore

__all__ = ["KFACFactors", "load_factors"]


class KFACFactors:
    """Per-module Kronecker factors (eigendecomposed), traces and optional EK-FAC eigenvalues,
    fit at one checkpoint in the feature space of one projection.

    Build with :meth:`fit`; add EK-FAC's corrected eigenvalues with :meth:`correct_eigenvalues`
    (done by :meth:`fit` when given the training store, and by :class:`EKFAC` on ``fit`` when
    missing); persist with :meth:`save` / :meth:`load` (one safetensors file, no pickle).
    """

    def __init__(
        self,
        blocks: list[FactorBlock],
        projection: dict[str, Any],
        modules: tuple[str, ...],
        model: str,
        checkpoint: str,
        fingerprint: str | None,
        n_examples: int,
        statistics: dict[str, Any],
        width: int | None = None,
    ) -> None:
        # Internal: use fit(), from_basis() or load().
        self.width = width  # the features' length when zero padding follows the blocks
        self.blocks = blocks
        self.projection = projection
        self.modules = tuple(modules)
        self.model = model
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.n_examples = n_examples
        self.statistics = statistics  # where trace / dense blocks / corrected eigenvalues came from

    # ---- properties ------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        return self.width or sum(b.dim for b in self.blocks)

    @property
    def corrected(self) -> bool:
        """Whether EK-FAC's corrected eigenvalues are present."""
        kronecker = [b for b in self.blocks if b.kronecker]
        return all(b.corrected is not None for b in kronecker)

    def eigenvalues(self, module: str, corrected: bool = True) -> np.ndarray:
        """A module's eigenvalues ``[rows, cols]`` (Kronecker) or ``[dim]`` (dense block)."""
        block = self._block(module)
        if not block.kronecker:
            return block.dense_values
        if corrected:
            if block.corrected is None:
                raise InputError(
                    "these factors have no corrected (EK-FAC) eigenvalues: call "
                    "correct_eigenvalues(train_store) first"
                )
            return block.corrected
        return block.kfac_values()

    def eigenvectors(self, module: str) -> tuple[np.ndarray, ...]:
        """``(Q_S, Q_A)`` of a Kronecker module, ``(U,)`` of a dense block (identities for the
        blocks of an eigen-projected store, whose features are already in the eigenbasis)."""
        block = self._block(module)
        if block.diagonal:
            return np.eye(block.rows), np.eye(block.cols)
        if block.kronecker:
            return block.s_vectors, block.a_vectors
        return (block.dense_vectors,)

    def copy(self) -> KFACFactors:
        """A copy whose per-module statistics can be replaced without touching these factors
        (the eigenvector arrays are shared: nothing changes them in place)."""
        out = copy.copy(self)
        out.blocks = [copy.copy(block) for block in self.blocks]
        out.statistics = dict(self.statistics)
        return out

    def _block(self, module: str) -> FactorBlock:
        for block in self.blocks:
            if block.name == module:
                return block
        raise InputError(f"no module {module!r} in these factors (they have {list(self.modules)})")

    # ---- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        extractor: GradientExtractor,
        data: ExampleSet,
        store: FeatureStore | None = None,
        checkpoint: str | None = None,
        batch_size: int = 32,
        progress: bool = True,
        max_factor_dim: int = 8192,
    ) -> KFACFactors:
        """Fit the factors at the extractor's current weights with one pass over ``data``.

        When the training store is extracted at the same time, use
        :func:`~infscope.curvature.covariance.featurize_with_covariances` instead and build the
        factors with :meth:`from_covariances`: one forward/backward pass serves both.

        Args:
            extractor: model, task, tracked modules and a Kronecker or identity projection (the
                same settings as the training store).
            data: training examples (their training-loss gradients are used).
            store: the training feature store at these weights. When given, traces, dense blocks
                and EK-FAC's corrected eigenvalues are read from it (one streamed pass) and it is
                checked to match (projection, modules, model, checkpoint fingerprint).
                Without it, traces and dense blocks come from the data pass, and only K-FAC is
                available until :meth:`correct_eigenvalues` is called.
            checkpoint: the store's checkpoint these weights belong to; default: the one whose
                fingerprint equals the model's (or ``"final"`` without a store).
            batch_size: examples per forward/backward pass.
            max_factor_dim: refuse a factor (or dense block) larger than this per side.
        """
        if not isinstance(extractor.projector, (KroneckerProjector, IdentityProjector)):
            raise InputError(f"{UNSUPPORTED} (the extractor uses {extractor.projection.kind!r})")
        _check_factor_sizes(extractor, max_factor_dim)
        if store is not None:  # every check before the expensive pass
            probe = cls._empty(extractor, checkpoint, len(data))
            probe.check_store(store)
            _require_training_store(store, probe._store_checkpoint(store, checkpoint))
        covariances = accumulate(extractor, data, batch_size, progress, features=store is None)
        return cls.from_covariances(covariances, store, checkpoint, progress, max_factor_dim)

    @classmethod
    def from_covariances(
        cls,
        covariances: KroneckerCovariances,
        store: FeatureStore | None = None,
        checkpoint: str | None = None,
        progress: bool = False,
        max_factor_dim: int = 8192,
    ) -> KFACFactors:
        """Factors from collected covariances (e.g. gathered by ``featurize_with_covariances``
        while it wrote ``store``). With ``store``: traces, dense blocks and EK-FAC's corrected
        eigenvalues are read from it; without: from the covariances' feature statistics."""
        extractor = covariances.extractor
        _check_factor_sizes(extractor, max_factor_dim)
        factors = cls._empty(extractor, checkpoint, covariances.n_examples)
        factors.fingerprint = covariances.fingerprint
        if store is not None:
            factors.check_store(store)
            if covariances.n_examples != store.n_examples:
                raise StoreMismatchError(
                    f"the covariances saw {covariances.n_examples} examples, {store.root} holds "
                    f"{store.n_examples}: collect them over the whole training set"
                )
            factors.checkpoint = factors._store_checkpoint(store, checkpoint)
            _require_training_store(store, factors.checkpoint)
        elif not covariances.features:
            raise InputError(
                "without a store the covariances must hold feature statistics (features=True)"
            )
        for index, block in enumerate(factors.blocks):
            if block.kronecker:
                block.tokens = covariances.tokens[index]
                block.a_values, block.a_vectors = eigh_psd(covariances.covariance(index, "inputs"))
                block.s_values, block.s_vectors = eigh_psd(covariances.covariance(index, "outputs"))
        if store is not None:
            factors._store_statistics(store, factors.checkpoint, progress=progress)
        else:
            n = covariances.n_examples
            for index, block in enumerate(factors.blocks):
                block.trace = float(covariances.traces[index] / n)
                if not block.kronecker:
                    block.dense_values, block.dense_vectors = eigh_psd(covariances.dense[index] / n)
            factors.statistics = {"source": "data", "n_examples": n}
        return factors

    @classmethod
    def from_basis(
        cls,
        basis: KroneckerBasis | Sequence[KroneckerBasis],
        store: FeatureStore,
        checkpoint: str | None = None,
        block_size: int = 4096,
        progress: bool = False,
    ) -> KFACFactors:
        """Factors of a store extracted with ``ProjectionConfig(kind="eigen", basis=basis)``.

        Its features are already in each module's K-FAC eigenbasis, so the factors are diagonal
        and no model pass is needed: K-FAC's eigenvalues are the basis's ``λ_S ⊗ λ_A`` (cut to the
        store's ranks), and EK-FAC's corrected ones, the traces and the dense blocks are read from
        ``store`` in one streamed pass — the training store, or a ``gradient="fisher"`` store of
        the same examples for the true Fisher. With one basis per checkpoint (the sequence the
        store was projected with), the checkpoint's own basis is used.
        """
        bases = as_bases(basis)
        projection = store.spec.projection
        if (
            projection.get("kind") != "eigen"
            or projection.get("basis") != describe_bases(bases, projection.get("dim"))["basis"]
        ):
            raise StoreMismatchError(
                f"{store.root} was not projected with this eigenbasis (its projection is "
                f"{projection.get('kind')!r}, basis {str(projection.get('basis'))[:12]}...); "
                f"extract it with ProjectionConfig(kind='eigen', basis=...) of this basis"
            )
        truncated, index = bases[0], 0
        if len(bases) > 1:  # the checkpoint's own basis
            info = store.checkpoint(checkpoint or store.checkpoints[-1].id)
            matching = [i for i, b in enumerate(bases) if b.fingerprint == info.fingerprint]
            if not matching:
                raise StoreMismatchError(
                    f"checkpoint {info.id!r} of {store.root} holds weights none of the eigenbases "
                    f"was fit at"
                )
            index, checkpoint = matching[0], info.id
            truncated = bases[index]
        if projection.get("dim") == "auto":  # the layout the spectrum chose, as recorded
            recorded = (
                [(b.rows, b.cols) for b in require_layout(projection).blocks]
                if len(bases) == 1
                else [tuple(r) for r in projection["ranks"][index]]
            )
            truncated = truncated.truncate_to(recorded)
        else:
            truncated = truncated.truncate(projection.get("dim"))
        # the checkpoint's own layout (zero padding after it, with one basis per checkpoint)
        layout = BlockLayout.of(
            [(m.name, m.out_rank, m.in_rank, m.kronecker) for m in truncated.modules]
        )
        blocks = blocks_from_layout(layout)
        if len(bases) == 1 and layout != require_layout(projection):
            raise StoreMismatchError(f"{store.root}'s block layout differs from the eigenbasis's")
        for block, module in zip(blocks, truncated.modules):
            if block.kronecker:
                block.s_values, block.a_values = module.s_values, module.a_values
                block.tokens = module.tokens
        factors = cls(
            blocks,
            projection,
            tuple(store.spec.modules),
            store.spec.model,
            checkpoint or "final",
            truncated.fingerprint,
            store.n_examples,
            {},
            width=store.feature_dim,
        )
        if truncated.fingerprint is None:  # a basis averaged over checkpoints: one of them
            info = store.checkpoint(checkpoint or store.checkpoints[-1].id)
            if info.fingerprint is not None and info.fingerprint not in truncated.fingerprints:
                raise StoreMismatchError(
                    f"checkpoint {info.id!r} of {store.root} holds weights the eigenbasis was not "
                    f"fit on; fit it over the checkpoints the stores hold"
                )
            factors.fingerprint, checkpoint = info.fingerprint, info.id
        factors.checkpoint = factors._store_checkpoint(store, checkpoint)
        factors._store_statistics(store, factors.checkpoint, block_size, progress)
        return factors

    @classmethod
    def _empty(cls, extractor: GradientExtractor, checkpoint: str | None, n: int) -> KFACFactors:
        projection = canonical(extractor.projector.describe())
        return cls(
            blocks_from_layout(require_layout(projection)),
            projection,
            extractor.module_names,
            model_signature(extractor),
            checkpoint or "final",
            model_fingerprint(extractor.model),
            n,
            {},
        )

    def _store_checkpoint(self, store: FeatureStore, checkpoint: str | None) -> str:
        """The store checkpoint these factors belong to: ``checkpoint``, else the one holding
        these very weights (by fingerprint), else the factors' own id."""
        if checkpoint is None:
            matches = [c.id for c in store.checkpoints if c.fingerprint == self.fingerprint]
            self.checkpoint = matches[-1] if matches else self.checkpoint
        return self.resolve_checkpoint(store, checkpoint)

    def correct_eigenvalues(
        self,
        store: FeatureStore,
        checkpoint: str | None = None,
        block_size: int = 4096,
        progress: bool = False,
    ) -> KFACFactors:
        """EK-FAC: ``Λ*_m = mean_i (Q_Sᵀ M_i Q_A)²`` from the store's training features (streamed),
        together with each module's trace and the dense blocks. Returns ``self``."""
        self.check_store(store)
        cid = self.resolve_checkpoint(store, checkpoint)
        self._store_statistics(store, cid, block_size, progress)
        return self

    def _store_statistics(
        self, store: FeatureStore, checkpoint: str, block_size: int = 4096, progress: bool = False
    ) -> None:
        _require_training_store(store, checkpoint)
        corrected = {
            i: np.zeros((b.rows, b.cols)) for i, b in enumerate(self.blocks) if b.kronecker
        }
        dense = {i: np.zeros((b.dim, b.dim)) for i, b in enumerate(self.blocks) if not b.kronecker}
        traces = np.zeros(len(self.blocks))
        n = store.n_examples
        # float64 work per module on at most ~2**20 values at a time: memory stays bounded by
        # the size of one read, never a float64 copy of a whole block
        rows = max(1, min(block_size, 2**25 // (4 * store.feature_dim)))  # ≤ 32 MiB per read
        blocks = store.iter_blocks(checkpoint, rows)
        for _, rows in tqdm(blocks, desc="ekfac eigenvalues", unit="block", disable=not progress):
            for index, block in enumerate(self.blocks):
                step = max(1, 2**20 // block.dim)
                for first in range(0, len(rows), step):
                    x = rows[first : first + step, block.slice].astype(np.float64)
                    traces[index] += np.einsum("ij,ij->", x, x)
                    if block.diagonal:
                        corrected[index] += np.einsum("ij,ij->j", x, x).reshape(block.shape)
                    elif block.kronecker:
                        rotated = block.s_vectors.T @ x.reshape(-1, block.rows, block.cols)
                        rotated = rotated @ block.a_vectors
                        corrected[index] += np.einsum("ijk,ijk->jk", rotated, rotated)
                    else:
                        dense[index] += x.T @ x
        if not (np.isfinite(traces).all()):
            raise NonFiniteError(f"{store.root} holds NaN or inf features")
        for index, block in enumerate(self.blocks):
            block.trace = float(traces[index] / n)
            if block.kronecker:
                block.corrected = corrected[index] / n
            else:
                block.dense_values, block.dense_vectors = eigh_psd(dense[index] / n)
        self.statistics = {
            "source": "store",
            "n_examples": n,
            "store_checkpoint": checkpoint,
            "store_ids_sha256": _ids_digest(store.ids),
        }

    # ---- compatibility ---------------------------------------------------------------------

    def check_store(self, store: FeatureStore) -> None:
        """Raise unless ``store``'s features live in these factors' space."""
        if self.width is None:  # factors from_basis carry their checkpoint's own layout
            require_layout(store.spec.projection)
        problems = []
        if store.spec.projection != self.projection:
            keys = sorted(
                k
                for k in set(store.spec.projection) | set(self.projection)
                if store.spec.projection.get(k) != self.projection.get(k)
            )
            problems.append(f"projection (differs in {', '.join(keys)})")
        if tuple(store.spec.modules) != self.modules:
            problems.append(
                f"modules (store {list(store.spec.modules)}, factors {list(self.modules)})"
            )
        if store.spec.model != self.model:
            problems.append(f"model (store {store.spec.model!r}, factors {self.model!r})")
        if store.feature_dim != self.feature_dim:
            problems.append(f"feature_dim (store {store.feature_dim}, factors {self.feature_dim})")
        if problems:
            raise StoreMismatchError(
                f"{store.root} was not extracted with the settings these K-FAC factors were fit "
                f"with: {'; '.join(problems)}. Fit the factors with the store's extractor settings"
            )

    def resolve_checkpoint(self, store: FeatureStore, checkpoint: str | None = None) -> str:
        """The store checkpoint holding features at the factors' weights: ``checkpoint`` if given,
        else the factors' checkpoint id, else the one whose fingerprint matches.
        :class:`StoreMismatchError` if its recorded fingerprint differs from the factors'."""
        known = store.checkpoints
        if checkpoint is None:
            if any(c.id == self.checkpoint for c in known):
                checkpoint = self.checkpoint
            else:
                matches = [c.id for c in known if c.fingerprint == self.fingerprint]
                if len(known) == 1 and known[0].fingerprint is None:
                    matches = [known[0].id]
                if not matches:
                    raise StoreMismatchError(
                        f"{store.root} has no checkpoint {self.checkpoint!r} and none with the "
                        f"weights the K-FAC factors were fit on (it has "
                        f"{[c.id for c in known]}); name the checkpoint or refit the factors"
                    )
                checkpoint = matches[-1]
        info = store.checkpoint(checkpoint)
        if (
            None not in (info.fingerprint, self.fingerprint)
            and info.fingerprint != self.fingerprint
        ):
            raise StoreMismatchError(
                f"checkpoint {info.id!r} of {store.root} was extracted from different weights "
                f"(fingerprint {info.fingerprint[:12]}...) than the K-FAC factors were fit on "
                f"(checkpoint {self.checkpoint!r}, fingerprint {self.fingerprint[:12]}...); "
                f"refit the factors at that checkpoint's weights"
            )
        return info.id

    # ---- persistence -----------------------------------------------------------------------

    # ---- persistence -----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """What the factors file records (:func:`~infscope.curvature.kfac_file.factors_metadata`)."""
        return factors_metadata(self.blocks, self._header())

    def _header(self) -> dict[str, Any]:
        return {
            "module_names": list(self.modules),
            "projection": self.projection,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "fingerprint": self.fingerprint,
            "n_examples": self.n_examples,
            "statistics": self.statistics,
        }

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (float64 arrays, JSON metadata), atomically
        (:mod:`infscope.curvature.kfac_file`)."""
        if not self.projection.get("blocks"):
            raise InputError(
                "these factors belong to a store with one eigenbasis per checkpoint: they are "
                "rebuilt from the bases on fit (EKFAC(bases)); save the bases instead"
            )
        return write_factors(path, self.blocks, self._header())

    @classmethod
    def load(cls, path: str | Path) -> KFACFactors:
        """Read and validate a file written by :meth:`save` (:class:`InputError` if it is not
        one, or is inconsistent)."""
        blocks, meta = read_factors(path)
        try:
            return cls(
                blocks,
                meta["projection"],
                tuple(meta["module_names"]),
                str(meta["model"]),
                str(meta["checkpoint"]),
                meta["fingerprint"],
                int(meta["n_examples"]),
                dict(meta["statistics"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: inconsistent K-FAC factors file: {exc}") from None


def load_factors(path: str | Path) -> KFACFactors | KroneckerBasis:
    """A file written by :meth:`KFACFactors.save` or :meth:`KroneckerBasis.save`, by its format."""
    if file_format(path) == BASIS_FORMAT:
        return KroneckerBasis.load(path)
    return KFACFactors.load(path)


def _check_factor_sizes(extractor: GradientExtractor, max_factor_dim: int) -> None:
    for block in blocks_from_layout(require_layout(canonical(extractor.projector.describe()))):
        sides = (block.rows, block.cols) if block.kronecker else (block.dim,)
        if max(sides) > max_factor_dim:
            raise InputError(
                f"module {block.name!r}: a K-FAC factor would be {max(sides)}x{max(sides)} "
                f"(> max_factor_dim={max_factor_dim}); use a Kronecker projection with smaller "
                f"factor_dims, or leave the module out"
            )


def _require_training_store(store: FeatureStore, checkpoint: str) -> None:
    if store.spec.gradient not in ("loss", "fisher"):
        raise StoreMismatchError(
            f"{store.root} holds {store.spec.gradient!r} gradients; K-FAC statistics need the "
            f"training store (gradient='loss') or a sampled-label one (gradient='fisher')"
        )
    if not store.is_complete(checkpoint):
        raise StoreIncompleteError(
            f"checkpoint {checkpoint!r} of {store.root} is incomplete {store.status()}; resume "
            f"extraction first"
        )


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
