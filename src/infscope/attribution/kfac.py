"""K-FAC and EK-FAC influence: a per-module, Kronecker-factored inverse curvature.

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
of a wide layer's directions; the **eigen** projection (:mod:`infscope.gradients.eigenbasis`)
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
* **Damping per module.** ``damping_mode="relative"`` uses ``λ_m = damping × trace_m / dim_m``
  for a Kronecker module — the mean of its K-FAC/EK-FAC eigenvalues in the store, kronfluence's
  heuristic ``damping × mean(Λ_m)`` (on an eigen store, the mean of the eigenvalues kept) — and
  ``trace_m / min(n, dim_m)`` for a dense block, the mean non-zero eigenvalue of its exact
  ``n``-example Fisher (:mod:`infscope.attribution.damped`). The Kronecker eigenvalues are not
  limited to rank ``n``, so their mean is the scale their damping is relative to. Measured on the
  LM benchmarks: with ``trace / min(n, dim)`` the best EK-FAC damping sat 10³× below the default;
  relative to the full layer's mean eigenvalue instead of the kept ones', the default on MiniLM
  lost 0.05–0.13 LDS to its tuned value. ``"absolute"`` uses ``damping`` everywhere. The values
  are recorded in ``describe()``.

Workflow::

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from infscope.attribution.base import NORMALIZATIONS
from infscope.attribution.damped import DampedEstimator
from infscope.attribution.low_rank import LowRankQueries, ModuleLayout
from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError, StoreIncompleteError, StoreMismatchError
from infscope.gradients.covariance import UNSUPPORTED, KroneckerCovariances, accumulate
from infscope.gradients.eigenbasis import (
    KroneckerBasis,
    as_bases,
    describe_bases,
)
from infscope.gradients.extractor import GradientExtractor, model_fingerprint
from infscope.gradients.featurize import model_signature
from infscope.gradients.projection import IdentityProjector, KroneckerProjector
from infscope.io import write_atomic
from infscope.store import FeatureStore

__all__ = ["EKFAC", "KFACFactors", "load_factors"]

FORMAT = "infscope.kfac_factors"
VERSION = 1


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0: round-off of a PSD matrix) and eigenvectors, ascending."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return np.clip(values, 0.0, None), vectors


@dataclass
class _Block:
    """One module's slice of the feature vector and its factors."""

    name: str
    rows: int
    cols: int
    kronecker: bool
    start: int
    tokens: int = 0  # positions that entered A and S (Kronecker blocks)
    trace: float = 0.0  # mean_i ||M_i||^2: trace of the exact empirical-Fisher block
    s_values: np.ndarray | None = None  # [rows] eigenvalues of S_p
    s_vectors: np.ndarray | None = None  # [rows, rows]; None: the features are in the eigenbasis
    a_values: np.ndarray | None = None  # [cols]
    a_vectors: np.ndarray | None = None  # [cols, cols]
    corrected: np.ndarray | None = None  # [rows, cols] EK-FAC eigenvalues
    dense_values: np.ndarray | None = None  # [dim] eigenvalues of the dense block (non-Kronecker)
    dense_vectors: np.ndarray | None = None  # [dim, dim]

    @property
    def dim(self) -> int:
        return self.rows * self.cols

    @property
    def diagonal(self) -> bool:
        """A Kronecker block whose features are already in its eigenbasis (``eigen`` stores):
        its eigenvectors are the identity and are not stored."""
        return self.kronecker and self.s_values is not None and self.s_vectors is None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.dim)

    def damping_unit(self, n: int) -> float:
        """What relative damping multiplies. A Kronecker block: the mean of its K-FAC/EK-FAC
        eigenvalues, ``trace / dim`` (kronfluence's unit; on an eigen store, the mean of the
        eigenvalues kept). A dense block, the exact Fisher of ``n`` examples: its mean non-zero
        eigenvalue, ``trace / min(n, dim)``."""
        if not self.kronecker:
            return self.trace / min(n, self.dim)
        return self.trace / self.dim

    def kfac_values(self) -> np.ndarray:
        """``λ_S ⊗ λ_A`` as ``[rows, cols]``, rescaled so that it sums to ``trace``."""
        values = np.outer(self.s_values, self.a_values)
        total = values.sum()
        return values * (self.trace / total) if total > 0 else np.zeros_like(values)

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("s_values", "s_vectors", "a_values", "a_vectors", "corrected")
        if self.diagonal:
            names = ("s_values", "a_values", "corrected")
        if not self.kronecker:
            names = ("dense_values", "dense_vectors")
        out = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        out["trace"] = np.array([self.trace], dtype=np.float64)
        return out

    def expected_shapes(self, corrected: bool, diagonal: bool) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"trace": (1,)}
        if self.kronecker:
            shapes.update(s_values=(self.rows,), a_values=(self.cols,))
            if not diagonal:
                shapes.update(s_vectors=(self.rows, self.rows), a_vectors=(self.cols, self.cols))
            if corrected:
                shapes["corrected"] = (self.rows, self.cols)
        else:
            shapes.update(dense_values=(self.dim,), dense_vectors=(self.dim, self.dim))
        return shapes


def _layout(projection: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = projection.get("blocks")
    if not blocks:
        raise InputError(
            f"{UNSUPPORTED} (this projection is {projection.get('kind', 'unknown')!r})"
        )
    return blocks


def _blocks_from_layout(layout: list[dict[str, Any]]) -> list[_Block]:
    blocks, start = [], 0
    for entry in layout:
        rows, cols = (int(x) for x in entry["shape"])
        blocks.append(_Block(entry["module"], rows, cols, bool(entry["kronecker"]), start))
        start += rows * cols
    return blocks


class KFACFactors:
    """Per-module Kronecker factors (eigendecomposed), traces and optional EK-FAC eigenvalues,
    fit at one checkpoint in the feature space of one projection.

    Build with :meth:`fit`; add EK-FAC's corrected eigenvalues with :meth:`correct_eigenvalues`
    (done by :meth:`fit` when given the training store, and by :class:`EKFAC` on ``fit`` when
    missing); persist with :meth:`save` / :meth:`load` (one safetensors file, no pickle).
    """

    def __init__(
        self,
        blocks: list[_Block],
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

    def _block(self, module: str) -> _Block:
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

        When the training store is extracted at the same time, pass ``covariances=`` to
        :func:`~infscope.gradients.featurize.featurize` instead and build the factors with
        :meth:`from_covariances`: one forward/backward pass serves both.

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
        """Factors from collected covariances (e.g. gathered by ``featurize(..., covariances=)``
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
                block.a_values, block.a_vectors = _eigh(covariances.covariance(index, "inputs"))
                block.s_values, block.s_vectors = _eigh(covariances.covariance(index, "outputs"))
        if store is not None:
            factors._store_statistics(store, factors.checkpoint, progress=progress)
        else:
            n = covariances.n_examples
            for index, block in enumerate(factors.blocks):
                block.trace = float(covariances.traces[index] / n)
                if not block.kronecker:
                    block.dense_values, block.dense_vectors = _eigh(covariances.dense[index] / n)
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
        truncated = bases[0]
        if len(bases) > 1:  # the checkpoint's own basis
            info = store.checkpoint(checkpoint or store.checkpoints[-1].id)
            matching = [b for b in bases if b.fingerprint == info.fingerprint]
            if not matching:
                raise StoreMismatchError(
                    f"checkpoint {info.id!r} of {store.root} holds weights none of the eigenbases "
                    f"was fit at"
                )
            truncated, checkpoint = matching[0], info.id
        truncated = truncated.truncate(projection.get("dim"))
        # the checkpoint's own layout (zero padding after it, with one basis per checkpoint)
        layout = [
            {"module": m.name, "shape": [m.out_rank, m.in_rank], "kronecker": m.kronecker}
            for m in truncated.modules
        ]
        blocks = _blocks_from_layout(layout)
        if len(bases) == 1 and layout != _layout(projection):
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
        projection = _canonical(extractor.projector.describe())
        return cls(
            _blocks_from_layout(_layout(projection)),
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
                block.dense_values, block.dense_vectors = _eigh(dense[index] / n)
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
            _layout(store.spec.projection)
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

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "modules": [
                {
                    "name": b.name,
                    "shape": [b.rows, b.cols],
                    "kronecker": b.kronecker,
                    "tokens": b.tokens,
                    "diagonal": b.diagonal,
                }
                for b in self.blocks
            ],
            "module_names": list(self.modules),
            "projection": self.projection,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "fingerprint": self.fingerprint,
            "n_examples": self.n_examples,
            "corrected": self.corrected,
            "statistics": self.statistics,
        }

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (float64 arrays, JSON metadata), atomically."""
        from safetensors.numpy import save

        if not self.projection.get("blocks"):
            raise InputError(
                "these factors belong to a store with one eigenbasis per checkpoint: they are "
                "rebuilt from the bases on fit (EKFAC(bases)); save the bases instead"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{index}.{name}": np.ascontiguousarray(array, dtype=np.float64)
            for index, block in enumerate(self.blocks)
            for name, array in block.arrays().items()
        }
        meta = json.dumps(_canonical(self.metadata()), sort_keys=True)
        write_atomic(path, save(tensors, metadata={"infscope": meta}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KFACFactors:
        """Read and validate a file written by :meth:`save` (:class:`InputError` if it is not
        one, or is inconsistent)."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no K-FAC factors file at {path}")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                raw = (handle.metadata() or {}).get("infscope")
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(f"{path} is not a readable safetensors file: {exc}") from None
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{path} is not an infscope K-FAC factors file")
        if meta.get("version") != VERSION:
            raise InputError(
                f"{path}: unsupported K-FAC factors version {meta.get('version')!r} "
                f"(this infscope reads {VERSION})"
            )
        try:
            projection = meta["projection"]
            layout = _layout(projection)
            blocks = _blocks_from_layout(layout)
            described = [
                {"name": b.name, "shape": [b.rows, b.cols], "kronecker": b.kronecker}
                for b in blocks
            ]
            stated = [{k: m[k] for k in ("name", "shape", "kronecker")} for m in meta["modules"]]
            if stated != described:
                raise InputError("module list does not match the projection's block layout")
            corrected = bool(meta["corrected"])
            expected = {}
            for index, (block, entry) in enumerate(zip(blocks, meta["modules"])):
                block.tokens = int(entry["tokens"])
                diagonal = bool(entry.get("diagonal", False))
                for name, shape in block.expected_shapes(corrected, diagonal).items():
                    expected[f"{index}.{name}"] = (block, name, shape)
            missing = sorted(set(expected) - set(tensors))
            unknown = sorted(set(tensors) - set(expected))
            if missing or unknown:
                raise InputError(f"arrays missing {missing[:5]}, unexpected {unknown[:5]}")
            for key, (block, name, shape) in expected.items():
                array = tensors[key]
                if array.shape != shape or array.dtype != np.float64:
                    raise InputError(
                        f"array {key!r} has shape {array.shape} ({array.dtype}), expected {shape}"
                    )
                if not np.isfinite(array).all():
                    raise InputError(f"array {key!r} holds NaN or inf")
                if name == "trace":
                    block.trace = float(array[0])
                else:
                    setattr(block, name, array)
            factors = cls(
                blocks,
                projection,
                tuple(meta["module_names"]),
                str(meta["model"]),
                str(meta["checkpoint"]),
                meta["fingerprint"],
                int(meta["n_examples"]),
                dict(meta["statistics"]),
            )
            if [b.name for b in blocks] != list(factors.modules):
                raise InputError("module names do not match the projection's block layout")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: inconsistent K-FAC factors file: {exc}") from None
        return factors


def load_factors(path: str | Path) -> KFACFactors | KroneckerBasis:
    """A file written by :meth:`KFACFactors.save` or :meth:`KroneckerBasis.save`, by its format."""
    from safetensors import safe_open

    from infscope.gradients.eigenbasis import FORMAT as BASIS_FORMAT

    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {}).get("infscope") or "{}")
    except Exception:  # unreadable: let load() give its own error
        meta = {}
    if isinstance(meta, dict) and meta.get("format") == BASIS_FORMAT:
        return KroneckerBasis.load(path)
    return KFACFactors.load(path)


def _check_factor_sizes(extractor: GradientExtractor, max_factor_dim: int) -> None:
    for block in _blocks_from_layout(_layout(_canonical(extractor.projector.describe()))):
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


@dataclass
class _Preconditioner:
    block: _Block
    inverse: np.ndarray  # 1 / (Λ + λ): [rows, cols] (Kronecker) or [dim] (dense)
    damping: float


class EKFAC(DampedEstimator):
    """Influence with the EK-FAC (or K-FAC) inverse curvature: ``<(F_m + λ_m I)^-1 φ(q), φ(z)>``
    summed over modules, ``F_m = (Q_S ⊗ Q_A) diag(Λ_m) (Q_S ⊗ Q_A)ᵀ`` per Kronecker module and the
    exact block Fisher for the others; averaged over checkpoints when given several.

    Args:
        factors: :class:`KFACFactors` fit at the training store's checkpoint, or the
            :class:`~infscope.gradients.eigenbasis.KroneckerBasis` (or the per-checkpoint
            sequence of them) an ``eigen``-projected training store was extracted with (the factors of each checkpoint are then built from it on
            :meth:`fit`, see :meth:`KFACFactors.from_basis`). They are not changed: missing
            corrected eigenvalues are computed on :meth:`fit` into a copy.
        damping: ``λ_m`` relative to the mean eigenvalue of each Kronecker module,
            ``trace_m / dim_m`` (kronfluence's unit; default 0.1), and to ``trace_m / min(n,
            dim_m)`` of a dense block; or absolute (below).
        damping_mode: ``"relative"`` (per module) or ``"absolute"`` (one ``λ`` everywhere).
        correct_eigenvalues: EK-FAC (``True``, name ``"ekfac"``) or K-FAC with trace-matched
            ``λ_S ⊗ λ_A`` (``False``, name ``"kfac"``).
        normalize: ``"none"``, ``"unit"`` or ``"relatif"`` (divide by ``sqrt`` of the training
            example's self-influence).
        fisher: a store of the training examples' sampled-label gradients (``featurize(...,
            gradient="fisher")``, same projection and checkpoints) from which the curvature
            statistics (traces, corrected eigenvalues, dense blocks) are taken: the true Fisher.
            ``None``: the training store's own (empirical Fisher).
        checkpoints: with bases, ``"all"`` (every checkpoint of the training store, equally
            weighted: influence averaged over a training trajectory, each checkpoint with its own
            EK-FAC eigenvalues), a list of ids, or ``None``: the checkpoints the bases were fit at
            (one per checkpoint given as a sequence — the trajectory average), else the last.
            :class:`KFACFactors` belong to one checkpoint.
        query_rank: score with each Kronecker module's preconditioned query matrix cut to its
            best rank-``query_rank`` approximation (:mod:`infscope.attribution.low_rank`): all
            queries held at once as factors, the training store read once per checkpoint, the
            kept share of the queries' squared norm recorded as ``query_energy``. ``None``
            (default): exact, one preconditioned query block at a time.
    """

    normalizations = (*NORMALIZATIONS, "relatif")
    default_damping = 0.1

    def __init__(
        self,
        factors: KFACFactors | KroneckerBasis | Sequence[KroneckerBasis],
        damping: float | None = None,
        damping_mode: str = "relative",
        correct_eigenvalues: bool = True,
        normalize: str = "none",
        block_size: int = 4096,
        fisher: FeatureStore | None = None,
        checkpoints: str | list[str] | None = None,
        query_rank: int | None = None,
    ) -> None:
        super().__init__(damping, damping_mode, normalize, block_size)
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
        if isinstance(checkpoints, str) and checkpoints != "all":
            checkpoints = [checkpoints]
        self.factors = factors
        self.fisher = fisher
        self.checkpoints = (
            checkpoints if checkpoints == "all" or checkpoints is None else list(checkpoints)
        )
        self.correct = bool(correct_eigenvalues)
        self.name = "ekfac" if self.correct else "kfac"
        #: the factors used for each checkpoint scored (in order), after fit
        self.factors_by_checkpoint: dict[str, KFACFactors] = {}
        self._preconditioners: dict[str, list[_Preconditioner]] = {}

    @property
    def fitted_factors(self) -> KFACFactors | None:
        """The fitted factors of the last checkpoint scored (the only one by default)."""
        if not self.factors_by_checkpoint:
            return None
        return list(self.factors_by_checkpoint.values())[-1]

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        if self.factors_by_checkpoint:
            ids = list(self.factors_by_checkpoint)
        else:
            ids = self._checkpoint_ids(train)
        return [(c, 1.0 / len(ids)) for c in ids]

    def _checkpoint_ids(self, train: FeatureStore) -> list[str]:
        if self.checkpoints == "all":
            return [c.id for c in train.checkpoints]
        if self.checkpoints is not None:
            return [train.checkpoint(c).id for c in self.checkpoints]
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
        for checkpoint in self._checkpoint_ids(train):
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

    def _eigenvalues(self, block: _Block) -> np.ndarray:
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
            layout = [
                ModuleLayout(p.block.slice, p.block.rows, p.block.cols, p.block.kronecker)
                for p in self._preconditioners[checkpoint]
            ]
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
