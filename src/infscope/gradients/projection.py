"""Random projections of per-example gradients to ``k`` dimensions, seeded and deterministic.

* ``identity`` — the full gradient (small models, exact references);
* ``gaussian`` / ``rademacher`` — dense Johnson-Lindenstrauss matrices, generated in chunks so
  memory stays bounded (and cached when small enough);
* ``sjlt`` — sparse JL / CountSketch: each gradient coordinate is hashed to ``s`` buckets with
  random signs (4-wise independent polynomial hashes, so nothing is stored);
* ``kronecker`` — per module, ``P_out M P_in^T``: input activations and output gradients are
  projected separately and the full per-example gradient ``M`` is never formed (as in LoGra);
* ``eigen`` — the same Kronecker form with ``P_out = Q_Sᵀ``, ``P_in = Q_Aᵀ``: the leading
  eigenvectors of each module's K-FAC factors fitted on the training data
  (:mod:`infscope.curvature.eigenbasis`), so the features keep the directions that carry the
  curvature (the projection for EK-FAC; random projections stay the choice for TracIn/TRAK).

Every random matrix is generated on the CPU from ``seed`` and the module's index, so the same
configuration gives the same features on any device, batch size or worker.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from infscope.errors import InputError
from infscope.gradients.basis import check_bases, describe_bases
from infscope.gradients.modules import TrackedModule
from infscope.store.layout import BlockLayout

_PRIME = 2**31 - 1


@dataclass(frozen=True)
class ProjectionConfig:
    """How per-example gradients are compressed.

    Attributes:
        kind: one of ``identity``, ``gaussian``, ``rademacher``, ``sjlt``, ``kronecker``,
            ``eigen``.
        dim: total feature dimension ``k`` (``None`` for ``identity``). For ``kronecker`` it is a
            budget split evenly over modules, each block ``k_out x k_in`` as square as the module
            allows, so the resulting ``feature_dim`` can be a little below ``dim``. For ``eigen``
            it is split by curvature mass (:meth:`KroneckerBasis.allocate`); ``None`` keeps the
            whole basis; ``"auto"`` chooses it from the basis's spectrum (the directions that
            hold :data:`~infscope.curvature.spectrum.BUDGET_SHARE` of the curvature's effective
            dimension at the damping the spectrum implies, :mod:`infscope.curvature.budget`),
            recorded as ``budget`` in the store.
        seed: random seed; with the module list it fixes every projection matrix.
        sjlt_nonzeros: nonzeros per gradient coordinate for ``sjlt`` (1 = CountSketch); must
            divide ``dim``.
        factor_dims: ``kronecker`` only: explicit ``(k_in, k_out)`` per module instead of
            splitting ``dim`` (each side capped at the module's own size).
        chunk_elements: bound on the random-matrix elements generated at once by dense kinds
            (part of the seed schedule, so it is recorded with the features).
        cache_bytes: dense and sjlt projections up to this size are generated once and reused.
        basis: ``eigen`` only: a :class:`~infscope.curvature.eigenbasis.KroneckerBasis` (any
            :class:`~infscope.gradients.basis.Basis`; load a saved one with
            ``KroneckerBasis.load``) — or a sequence of them, one per checkpoint of the store
            (each checkpoint projected on its own); stores record their digests.
        budget_share, budget_damping_share: ``eigen`` with ``dim="auto"`` only: the share of
            the full space's effective dimension the chosen budget keeps, and the share of
            ``min(n, D)`` directions whose damping it is judged at
            (:func:`~infscope.curvature.budget.choose_budget`; ``None``: the library's
            :data:`~infscope.curvature.spectrum.BUDGET_SHARE` and
            :data:`~infscope.curvature.spectrum.BUDGET_DAMPING_SHARE`).
    """

    kind: str = "kronecker"
    dim: int | str | None = 4096
    seed: int = 0
    sjlt_nonzeros: int = 1
    factor_dims: tuple[int, int] | None = None
    chunk_elements: int = 2**24
    cache_bytes: int = 2**29
    basis: Any = None
    budget_share: float | None = None
    budget_damping_share: float | None = None

    def __post_init__(self) -> None:
        for name in ("budget_share", "budget_damping_share"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.kind != "eigen" or self.dim != "auto":
                raise InputError(f"{name} applies to the eigen projection with dim='auto' only")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise InputError(f"{name} must lie in (0, 1), got {value!r}")
        if self.kind not in PROJECTIONS:
            raise InputError(
                f"unknown projection kind {self.kind!r}; choose from {tuple(PROJECTIONS)}"
            )
        if (self.basis is None) == (self.kind == "eigen"):
            raise InputError("the eigen projection, and only it, takes a basis")
        if self.kind == "eigen":
            if self.factor_dims is not None:
                raise InputError("factor_dims applies to the kronecker projection only")
            if self.dim is not None and self.dim != "auto" and (
                isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1
            ):
                raise InputError(
                    f"the eigen projection needs a positive dim, 'auto' or None, got {self.dim!r}"
                )
        elif PROJECTIONS[self.kind].dim == "none":
            if self.dim is not None:
                raise InputError(f"the {self.kind} projection takes no dim (use dim=None)")
        elif self.factor_dims is not None:
            if self.kind != "kronecker":
                raise InputError("factor_dims applies to the kronecker projection only")
            if len(self.factor_dims) != 2 or min(self.factor_dims) < 1:
                raise InputError(f"factor_dims must be two positive ints, got {self.factor_dims}")
            object.__setattr__(self, "factor_dims", tuple(int(d) for d in self.factor_dims))
            object.__setattr__(self, "dim", None)
        elif self.dim is None or self.dim < 1:
            raise InputError(f"projection {self.kind!r} needs a positive dim, got {self.dim}")
        if self.sjlt_nonzeros < 1 or (
            self.kind == "sjlt" and self.dim is not None and self.dim % self.sjlt_nonzeros
        ):
            raise InputError(
                f"sjlt_nonzeros={self.sjlt_nonzeros} must be positive and divide dim={self.dim}"
            )

    def budget_rule(self) -> dict[str, float]:
        """The ``dim="auto"`` budget rule's shares this config overrides, as ``truncate``
        keywords."""
        given = {"share": self.budget_share, "damping_share": self.budget_damping_share}
        return {name: value for name, value in given.items() if value is not None}

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["factor_dims"] = list(self.factor_dims) if self.factor_dims else None
        for name in ("budget_share", "budget_damping_share"):  # recorded only when given
            if data[name] is None:
                del data[name]
        if self.basis is not None:
            given = self.basis if isinstance(self.basis, (list, tuple)) else [self.basis]
            digests = [getattr(b, "digest", None) or str(b) for b in given]
            data["basis"] = digests if isinstance(self.basis, (list, tuple)) else digests[0]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProjectionConfig:
        data = dict(data)
        if data.get("factor_dims") is not None:
            data["factor_dims"] = tuple(data["factor_dims"])
        return cls(**data)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _gaussian(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(shape, generator=generator)
    return matrix if scale == 1.0 else matrix.mul_(scale)


def _rademacher(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.float32).mul_(2).sub_(1)


class Projector(ABC):
    """Maps the captured factors of every tracked module to features ``[B, feature_dim]``."""

    def __init__(self, config: ProjectionConfig, modules: Sequence[TrackedModule]) -> None:
        self.config = config
        self.modules = list(modules)
        total = sum(m.num_params for m in self.modules)
        # a Kronecker budget is split over modules and each block is capped at its module's
        # size, so a budget above the model's size just keeps every module whole
        if (
            config.kind not in ("kronecker", "eigen")
            and config.dim is not None
            and config.dim > total
        ):
            raise InputError(
                f"projection dim {config.dim} is larger than the tracked gradient "
                f"({total} parameters); use a smaller dim or kind='identity'"
            )
        self.gradient_dim = total

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Length of each example's feature vector."""

    @abstractmethod
    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Features ``[B, feature_dim]`` from ``(A, G)`` per module (same order as ``modules``)."""

    def describe(self) -> dict[str, Any]:
        """Configuration plus the resolved layout, recorded with the features."""
        described = {**self.config.to_json(), "feature_dim": self.feature_dim}
        layout = self.blocks_layout()
        if layout is not None:
            described["blocks"] = layout.to_json()
        return described

    #: whether the matrices depend on the checkpoint (:meth:`bind_weights` must be called)
    needs_weights = False

    def bind_weights(self, fingerprint: str) -> None:
        """Tell the projector which weights the next features come from (a no-op unless its
        matrices depend on the checkpoint, as the eigen projection's bases can)."""

    def blocks_layout(self) -> BlockLayout | None:
        """Per-module slices of the feature vector, in order, when the projection keeps modules
        apart; a block is the module's (projected) gradient matrix, row-major. ``None`` when
        modules are mixed (dense, sjlt)."""
        return None

    def _row_chunks(self, module: TrackedModule, width: int) -> list[tuple[int, int]]:
        rows = max(1, self.config.chunk_elements // max(1, module.n_cols * width))
        return [(r, min(r + rows, module.n_rows)) for r in range(0, module.n_rows, rows)]


class IdentityProjector(Projector):
    """The full per-example gradient, module after module (each in its matrix layout)."""

    @property
    def feature_dim(self) -> int:
        return self.gradient_dim

    def blocks_layout(self) -> BlockLayout:
        return BlockLayout.of(
            [(m.name, m.n_rows, m.n_cols, m.supports_kronecker) for m in self.modules]
        )

    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        blocks = [
            module.gradient_rows(a, g, 0, module.n_rows).flatten(1)
            for module, (a, g) in zip(self.modules, factors)
        ]
        return torch.cat(blocks, dim=1)


class DenseProjector(Projector):
    """``P g`` with a dense Gaussian or Rademacher ``P`` (entries of variance ``1/k``)."""

    def __init__(self, config: ProjectionConfig, modules: Sequence[TrackedModule]) -> None:
        super().__init__(config, modules)
        self._sample = _gaussian if config.kind == "gaussian" else _rademacher
        self._cache: dict[tuple[int, int], torch.Tensor] | None = (
            {} if self.gradient_dim * config.dim * 4 <= config.cache_bytes else None
        )

    @property
    def feature_dim(self) -> int:
        return self.config.dim

    def _matrix(self, index: int, chunk: int, columns: int, device: torch.device) -> torch.Tensor:
        """Unscaled entries (unit variance); ``project`` applies ``1/sqrt(k)`` to the output."""
        key = (index, chunk)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        matrix = self._sample((columns, self.config.dim), _seed(self.config.seed, index, chunk))
        matrix = matrix.to(device)
        if self._cache is not None:
            self._cache[key] = matrix
        return matrix

    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        batch = factors[0][1].shape[0]
        out = factors[0][1].new_zeros(batch, self.config.dim)
        for index, (module, (a, g)) in enumerate(zip(self.modules, factors)):
            for chunk, (start, stop) in enumerate(self._row_chunks(module, self.config.dim)):
                rows = module.gradient_rows(a, g, start, stop).flatten(1)
                out += rows @ self._matrix(index, chunk, rows.shape[1], rows.device).to(rows.dtype)
        return out.mul_(1 / math.sqrt(self.config.dim))


class SparseProjector(Projector):
    """Sparse JL (CountSketch when ``s = 1``): coordinate ``x`` goes to one bucket in each of ``s``
    blocks of ``k/s`` with sign ``±1/sqrt(s)``; buckets and signs come from 4-wise independent
    polynomial hashes of the coordinate's global index."""

    def __init__(self, config: ProjectionConfig, modules: Sequence[TrackedModule]) -> None:
        super().__init__(config, modules)
        self.offsets = np.cumsum([0] + [m.num_params for m in self.modules]).tolist()
        rng = np.random.default_rng(_seed(config.seed, 2**20))
        # per nonzero: coefficients of a degree-3 polynomial for the bucket and one for the sign
        self.coefficients = torch.as_tensor(
            rng.integers(1, _PRIME, size=(config.sjlt_nonzeros, 2, 4)), dtype=torch.int64
        )
        self._cache: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] | None = (
            {} if self.gradient_dim * config.sjlt_nonzeros * 9 <= config.cache_bytes else None
        )

    @property
    def feature_dim(self) -> int:
        return self.config.dim

    @staticmethod
    def _hash(x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        acc = torch.zeros_like(x)
        for c in coefficients.tolist():
            acc = (acc * x + c) % _PRIME
        return acc

    def _buckets(
        self, index: int, start: int, stop: int, nonzero: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (index, start, nonzero)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        block = self.config.dim // self.config.sjlt_nonzeros
        coords = torch.arange(self.offsets[index] + start, self.offsets[index] + stop) % _PRIME
        bucket_coef, sign_coef = self.coefficients[nonzero]
        buckets = self._hash(coords, bucket_coef) % block + nonzero * block
        signs = (self._hash(coords, sign_coef) % 2).to(torch.int8) * 2 - 1
        result = (buckets.to(device), signs.to(device))
        if self._cache is not None:
            self._cache[key] = result
        return result

    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        batch = factors[0][1].shape[0]
        out = factors[0][1].new_zeros(batch, self.config.dim)
        scale = 1 / math.sqrt(self.config.sjlt_nonzeros)
        for index, (module, (a, g)) in enumerate(zip(self.modules, factors)):
            for start, stop in self._row_chunks(module, 1):
                rows = module.gradient_rows(a, g, start, stop).flatten(1)
                first = start * module.n_cols
                last = first + rows.shape[1]
                for nonzero in range(self.config.sjlt_nonzeros):
                    buckets, signs = self._buckets(index, first, last, nonzero, rows.device)
                    out.index_add_(1, buckets, rows * signs.to(rows.dtype), alpha=scale)
        return out


class KroneckerProjector(Projector):
    """Per module ``P_out M P_in^T`` with Gaussian ``P_in`` ``[k_in, n_cols]`` and ``P_out``
    ``[k_out, n_rows]`` — equal to ``(P_out ⊗ P_in) vec(M)`` — computed as
    ``sum_t (P_out g_t)(P_in a_t)^T`` without forming ``M``. Layers without Kronecker structure
    (LayerNorm) get a dense Gaussian block of the same budget."""

    def __init__(self, config: ProjectionConfig, modules: Sequence[TrackedModule]) -> None:
        super().__init__(config, modules)
        if config.kind == "kronecker" and config.dim is not None and config.dim < len(self.modules):
            raise InputError(
                f"projection dim {config.dim} is below the number of tracked modules "
                f"({len(self.modules)}): the kronecker projection gives each module at least one "
                "feature; use a larger dim or track fewer modules"
            )
        self.blocks = [self._block_shape(m) for m in self.modules]
        self._matrices: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _block_shape(self, module: TrackedModule) -> tuple[int, int]:
        """``(k_in, k_out)`` for a module; ``k_out = 1`` for a dense block of ``k_in`` dims."""
        if self.config.factor_dims is not None:
            k_in, k_out = self.config.factor_dims
            if not module.supports_kronecker:
                return min(k_in * k_out, module.num_params), 1
            return min(k_in, module.n_cols), min(k_out, module.n_rows)
        budget = max(1, self.config.dim // len(self.modules))
        if not module.supports_kronecker:
            return min(budget, module.num_params), 1
        k_out = min(module.n_rows, max(1, round(math.sqrt(budget))))
        k_in = min(module.n_cols, max(1, budget // k_out))
        k_out = min(module.n_rows, max(k_out, budget // k_in))
        return k_in, k_out

    @property
    def feature_dim(self) -> int:
        return sum(k_in * k_out for k_in, k_out in self.blocks)

    def blocks_layout(self) -> BlockLayout:
        return BlockLayout.of(
            [
                (m.name, k_out, k_in, m.supports_kronecker)
                for m, (k_in, k_out) in zip(self.modules, self.blocks)
            ]
        )

    def matrices(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_in, P_out)`` for module ``index``; for a dense block ``P_out`` is ``[[1]]``."""
        if index not in self._matrices:
            module = self.modules[index]
            k_in, k_out = self.blocks[index]
            if module.supports_kronecker:
                p_in = _gaussian(
                    (k_in, module.n_cols), _seed(self.config.seed, index, 0), k_in**-0.5
                )
                p_out = _gaussian(
                    (k_out, module.n_rows), _seed(self.config.seed, index, 1), k_out**-0.5
                )
            else:
                p_in = _gaussian(
                    (k_in, module.num_params), _seed(self.config.seed, index, 0), k_in**-0.5
                )
                p_out = torch.ones(1, 1)
            self._matrices[index] = (p_in.to(device), p_out.to(device))
        return self._matrices[index]

    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return torch.cat(self._module_blocks(factors), dim=1)

    def _module_blocks(
        self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Each module's projected block ``[B, k_out * k_in]``."""
        blocks = []
        for index, (module, (a, g)) in enumerate(zip(self.modules, factors)):
            p_in, p_out = self.matrices(index, g.device)
            p_in, p_out = p_in.to(g.dtype), p_out.to(g.dtype)
            if module.supports_kronecker:
                projected_in = module.project_inputs(a, p_in)  # [B, T, k_in]
                tokens, (k_out, n_rows), k_in = g.shape[1], p_out.shape, p_in.shape[0]
                if tokens * n_rows * k_in + n_rows * k_in * k_out < tokens * n_rows * k_out:
                    # narrow input side (an LM head kept at many outputs, few inputs): sum over
                    # positions first, then project the [n_rows, k_in] result — as one GEMM of
                    # [B·k_in, n_rows] rows (``p_out @ batch`` would copy p_out per example)
                    summed = torch.einsum("bto,bti->bio", g, projected_in)
                    block = (summed @ p_out.T).transpose(1, 2)
                else:
                    block = torch.einsum("bto,bti->boi", g @ p_out.T, projected_in)
            else:
                block = module.gradient_rows(a, g, 0, module.n_rows).flatten(1) @ p_in.T
            blocks.append(block.flatten(1))
        return blocks


class EigenProjector(KroneckerProjector):
    """Per module ``Q_S,rᵀ M Q_A,r``: the Kronecker projection onto the leading eigenvectors of
    the module's K-FAC factors (a :class:`~infscope.gradients.basis.Basis`), ranks
    split over modules by curvature mass for ``dim`` features. Non-Kronecker modules are whole.

    With one basis per checkpoint (a sequence), each checkpoint's features are its gradients on
    its own basis, cut to its own rank layout (the layouts that serve each checkpoint best
    differ: one layout for all lost a fifth of the trajectory's LDS on the GPT-2 benchmark) and
    zero-padded to the widest; :meth:`bind_weights` (called by featurize) picks the basis of the
    model's current weights. Products between features of one checkpoint are then exact, which
    is all a checkpoint-wise estimator computes; each checkpoint's per-module layout is recorded
    (``ranks``) for EK-FAC."""

    def __init__(self, config: ProjectionConfig, modules: Sequence[TrackedModule]) -> None:
        self.sources = check_bases(config.basis)
        for basis in self.sources:
            basis.check_modules(list(modules))
        self.bases = [basis.truncate(config.dim, **config.budget_rule()) for basis in self.sources]
        self.needs_weights = len(self.bases) > 1
        self._active: int | None = None if self.needs_weights else 0
        super().__init__(config, modules)

    @property
    def basis(self):
        """The basis features are projected on now."""
        if self._active is None:
            raise InputError(
                "the eigen projection holds bases of several checkpoints: bind the model's "
                "weights first (extractor.bind_weights(); featurize does it)"
            )
        return self.bases[self._active]

    def bind_weights(self, fingerprint: str) -> None:
        if not self.needs_weights:
            return
        for index, basis in enumerate(self.bases):
            if basis.fingerprint == fingerprint:
                if index != self._active:  # one checkpoint's matrices cached at a time
                    self._matrices.clear()
                self._active = index
                return
        raise InputError(
            f"none of the {len(self.bases)} eigenbases was fit at the model's current weights "
            f"(fingerprint {fingerprint[:12]}...); fit one at this checkpoint"
        )

    def _block_shape(self, module: TrackedModule) -> tuple[int, int]:
        (entry,) = [m for m in self.bases[0].modules if m.name == module.name]
        return (entry.in_rank, entry.out_rank) if entry.kronecker else (module.num_params, 1)

    @property
    def feature_dim(self) -> int:
        return max(basis.feature_dim for basis in self.bases)

    def blocks_layout(self) -> BlockLayout | None:
        """The per-module layout when there is one basis (several: each has its own)."""
        return super().blocks_layout() if len(self.bases) == 1 else None

    def project(self, factors: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        out = torch.cat(self._module_blocks(factors), dim=1)
        return torch.nn.functional.pad(out, (0, self.feature_dim - out.shape[1]))

    def describe(self) -> dict[str, Any]:
        described = {
            **super().describe(),
            **describe_bases(self.sources, self.config.dim, **self.config.budget_rule()),
        }
        chosen = [basis.settings.get("budget") for basis in self.bases]
        if self.config.dim == "auto":  # what the spectrum chose, per basis
            described["budget"] = chosen[0] if len(chosen) == 1 else chosen
        return described

    def matrices(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q_A,rᵀ, Q_S,rᵀ)`` for module ``index``; for a whole block ``(I, [[1]])``."""
        entry = self.basis.modules[index]
        key = (self._active, index)
        if key not in self._matrices:
            if entry.kronecker:
                p_in = torch.as_tensor(entry.a_vectors.T, dtype=torch.float32)
                p_out = torch.as_tensor(entry.s_vectors.T, dtype=torch.float32)
            else:
                p_in, p_out = torch.eye(self.modules[index].num_params), torch.ones(1, 1)
            self._matrices[key] = (p_in.contiguous().to(device), p_out.contiguous().to(device))
        return self._matrices[key]


@dataclass(frozen=True)
class ProjectionKind:
    """A projection by name: the :class:`Projector` that computes it, one line for ``--help``,
    and what its ``dim`` means: ``"required"`` (the feature count), ``"optional"`` (a budget;
    ``None`` keeps everything) or ``"none"`` (it has no dim). The other
    :class:`ProjectionConfig` fields are its options."""

    name: str
    projector: type[Projector]
    summary: str
    dim: str = "required"


#: every projection, by the ``ProjectionConfig.kind`` that names it
PROJECTIONS: dict[str, ProjectionKind] = {}


def register_projection(
    name: str, projector: type[Projector], *, summary: str, dim: str = "required"
) -> ProjectionKind:
    """Make ``ProjectionConfig(kind=name, ...)`` build ``projector(config, modules)``."""
    if name in PROJECTIONS:
        raise InputError(f"projection {name!r} is already registered")
    if dim not in ("required", "optional", "none"):
        raise InputError(f"dim must be 'required', 'optional' or 'none', got {dim!r}")
    PROJECTIONS[name] = ProjectionKind(name, projector, summary, dim)
    return PROJECTIONS[name]


register_projection(
    "identity", IdentityProjector, summary="the full gradient (small models)", dim="none"
)
register_projection("gaussian", DenseProjector, summary="dense Gaussian JL matrix")
register_projection("rademacher", DenseProjector, summary="dense ±1 JL matrix")
register_projection("sjlt", SparseProjector, summary="sparse JL / CountSketch")
register_projection(
    "kronecker", KroneckerProjector, summary="per module P_out M P_inᵀ, never forming M"
)
register_projection(
    "eigen",
    EigenProjector,
    summary="onto each module's K-FAC eigenbasis (curvature-aware, for ekfac/kfac)",
    dim="optional",
)
#: the built-in projections
PROJECTION_KINDS = tuple(PROJECTIONS)


def build_projector(config: ProjectionConfig, modules: Sequence[TrackedModule]) -> Projector:
    """The projector for ``config.kind`` over ``modules``."""
    if not modules:
        raise InputError("no modules to project")
    return PROJECTIONS[config.kind].projector(config, modules)
