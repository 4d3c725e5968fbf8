"""Fit each tracked module's K-FAC eigenbasis in its full space: the model pass behind the
curvature-aware ``eigen`` projection (:mod:`infscope.curvature.eigenbasis` holds the basis and its
file).

Per module the output-gradient and input-activation covariances are summed over the positions
the loss sees — exactly in float64 up to ``max_exact_dim`` per side, or as a Nyström sketch above
— and eigendecomposed; the exact trace of each module's Fisher block is kept beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope import distributed
from infscope.curvature.budget import sketch_refit_ranks
from infscope.curvature.eigenbasis import FISHER_KINDS, KroneckerBasis, ModuleBasis
from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError
from infscope.gradients.extractor import GradientExtractor, model_fingerprint
from infscope.gradients.modules import TrackedModule
from infscope.gradients.passes import model_pass

__all__ = ["fit_kronecker_basis"]


#: exact factor sides wider than this are eigendecomposed in float32 and keep float32
#: eigenvectors: the precision the projection applies them at (it casts them to float32), at about
#: half the time and memory of float64 ``eigh`` (on an LM head's 2,887-wide side 1.6 s against
#: 3.3 s, one core); narrower sides, which cost little, stay float64
FLOAT32_EIGH_DIM = 1024


class _FactorSide:
    """Running second moment of one factor side: exact (``dim ≤ max_exact_dim``) or a Nyström
    sketch ``Y = Σ x (xᵀ Ω)``; plus the trace. Each batch's products are float32 (as
    kronfluence's covariances; twice as fast on an LM head, relative error ~1e-7), summed over
    batches in float64; an exact side sums the lower triangle only (BLAS ``syrk``: half the
    product's work), which ``eigh`` reads."""

    def __init__(self, dim: int, max_exact_dim: int, sketch_rank: int, seed: int) -> None:
        self.dim = dim
        self.total = 0.0
        self.exact = dim <= max_exact_dim
        if self.exact:
            self.sum = torch.zeros(dim, dim, dtype=torch.float64)
        else:
            generator = torch.Generator().manual_seed(seed)
            omega = torch.randn(
                dim, min(sketch_rank, dim), generator=generator, dtype=torch.float64
            )
            self.omega = torch.linalg.qr(omega).Q
            self.omega32 = self.omega.float()
            self.sketch = torch.zeros_like(self.omega)

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` ``[m, dim]`` (CPU)."""
        from scipy.linalg.blas import ssyrk

        x = x.float()
        self.total += float(torch.linalg.vector_norm(x, dtype=torch.float64) ** 2)
        if self.exact:
            # xᵀx's upper triangle in column-major order: its transpose, the lower, is C-ordered
            self.sum += torch.from_numpy(ssyrk(1.0, x.numpy().T).T)
        else:
            self.sketch += (x.T @ (x @ self.omega32)).double()

    def all_reduce(self) -> None:
        """Sum the running moment and trace over the ranks of the process group."""
        distributed.all_reduce_sum(self.sum if self.exact else self.sketch)
        total = torch.tensor([self.total], dtype=torch.float64)
        self.total = float(distributed.all_reduce_sum(total)[0])

    def update_counts(self, counts: torch.Tensor) -> None:
        """Add one-hot rows given as per-coordinate counts (embedding inputs)."""
        self.total += float(counts.sum())
        if self.exact:
            self.sum.diagonal().add_(counts)
        else:
            self.sketch += counts[:, None] * self.omega

    def eigenpairs(self, tokens: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Descending eigenvalues and eigenvectors of the mean, and its trace. Ends the side:
        the running sum is scaled in place and released (no ``side²`` copies beside ``eigh``'s
        own, which reads the lower triangle; above :data:`FLOAT32_EIGH_DIM` one float32 copy,
        and the eigenvectors are float32)."""
        scale = 1.0 / max(tokens, 1)
        if self.exact and self.dim > FLOAT32_EIGH_DIM:
            matrix = self.sum.mul_(scale).float()
            self.sum = None
            try:
                values, vectors = torch.linalg.eigh(matrix)  # LAPACK's float32 syevd
            except torch.linalg.LinAlgError:  # float32 did not converge: float64 (rare)
                values, vectors = torch.linalg.eigh(matrix.double())
            del matrix
            values = values.numpy().astype(np.float64)[::-1]
            vectors = np.flip(vectors.numpy(), axis=1)
        elif self.exact:
            matrix = self.sum.numpy()
            matrix *= scale
            self.sum = None
            values, vectors = np.linalg.eigh(matrix)
            del matrix
            values, vectors = values[::-1], np.flip(vectors, axis=1)
        else:  # single-pass Nyström approximation from the sketch (descending)
            vectors, values = _nystrom(self.sketch.numpy() * scale, self.omega.numpy())
            self.sketch = None
        return (
            np.clip(values, 0.0, None),
            np.ascontiguousarray(vectors),
            self.total * scale,
        )


def _nystrom(sketch: np.ndarray, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors and eigenvalues of a PSD matrix ``A`` from ``Y = A Ω`` (orthonormal ``Ω``):
    the stabilised single-pass Nyström approximation of Tropp, Yurtsever, Udell & Cevher (2017).
    The shift ``ν`` is set by float32 round-off (the sketch's products are float32) and raised
    tenfold while ``Ωᵀ(Y + νΩ)`` is not numerically positive definite."""
    shift = np.sqrt(len(sketch)) * np.finfo(np.float32).eps * np.linalg.norm(sketch)
    for _ in range(6):
        shifted = sketch + shift * omega
        core = omega.T @ shifted
        try:
            factor = np.linalg.cholesky((core + core.T) / 2)
            break
        except np.linalg.LinAlgError:
            shift *= 10
    else:
        raise NonFiniteError("the Nyström sketch of a K-FAC factor is not positive semi-definite")
    left = np.linalg.solve(factor, shifted.T).T  # shifted @ factor^-T
    vectors, singular, _ = np.linalg.svd(left, full_matrices=False)
    return vectors, singular**2 - shift


def _inputs_gram(module: TrackedModule, a: torch.Tensor) -> torch.Tensor:
    """``a_t · a_t'`` per example ``[B, T, T]`` (one-hot ids compare equal)."""
    if not a.is_floating_point():
        return (a[:, :, None] == a[:, None, :]).to(torch.float64)
    return a @ a.transpose(1, 2)


def _squared_norms(module: TrackedModule, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``‖M_i‖²`` of every example's gradient matrix ``M_i = Σ_t g_t a_tᵀ`` without forming it
    when the ``T × T`` Gram form is cheaper."""
    tokens = g.shape[1]
    if not module.supports_kronecker or module.n_rows * module.n_cols <= tokens * tokens:
        rows = module.gradient_rows(a, g, 0, module.n_rows).to(torch.float64)
        return rows.flatten(1).pow(2).sum(1)
    gram_g = g @ g.transpose(1, 2)
    return (gram_g * _inputs_gram(module, a)).sum(dim=(1, 2), dtype=torch.float64)


def fit_kronecker_basis(
    extractor: GradientExtractor,
    data: ExampleSet,
    *,
    fisher: str = "empirical",
    sample_seed: int = 0,
    batch_size: int = 32,
    max_exact_dim: int = 4096,
    sketch_rank: int = 1024,
    seed: int = 0,
    progress: bool = True,
    weights: Sequence[dict[str, torch.Tensor]] | None = None,
    refit_sketches: bool = True,
) -> KroneckerBasis:
    """Fit every tracked module's K-FAC eigenbasis in its full space, in one forward/backward pass
    over ``data`` at the extractor's current weights (its projection is not used) — or one pass
    per state dict in ``weights``, averaging the factors (one basis for the checkpoints of a
    training trajectory; the model's own weights are restored afterwards).

    Args:
        extractor: a :class:`~infscope.gradients.extractor.GradientExtractor` (model, task and
            tracked modules). Under ``torch.distributed`` (``torchrun``) each rank passes over
            its share of the batches and the statistics are summed over ranks; every rank
            returns the same basis.
        data: the training examples.
        fisher: ``"empirical"`` (observed labels) or ``"true"`` (labels drawn from the model,
            seeded by ``sample_seed``).
        batch_size: examples per pass.
        max_exact_dim: factor sides up to this size are summed and eigendecomposed exactly;
            wider ones are sketched with ``sketch_rank`` columns (Nyström).
        seed: seed of the sketches.
        refit_sketches: where a sketched side leaves its module below the budget's share of
            its effective dimension, fit that side again (one more pass) at the rank the
            share needs (:func:`~infscope.curvature.budget.sketch_refit_ranks`), exactly when
            the rank reaches half the side and its square fits :data:`REFIT_MEMORY_MB`; the
            refit ranks are recorded in ``settings["refit"]``.
    """
    if fisher not in FISHER_KINDS:
        raise InputError(f"fisher must be one of {FISHER_KINDS}, got {fisher!r}")
    if batch_size < 1 or max_exact_dim < 1 or sketch_rank < 1:
        raise InputError("batch_size, max_exact_dim and sketch_rank must be positive")
    if len(data) == 0:
        raise InputError("empty dataset: no examples to fit an eigenbasis on")
    modules = extractor.modules
    sides = [
        (
            _FactorSide(m.n_rows, max_exact_dim, sketch_rank, seed * 7919 + 2 * i),
            _FactorSide(m.n_cols, max_exact_dim, sketch_rank, seed * 7919 + 2 * i + 1),
        )
        if m.supports_kronecker
        else None
        for i, m in enumerate(modules)
    ]
    tokens = [0] * len(modules)
    traces = np.zeros(len(modules))
    gradient = "fisher" if fisher == "true" else "loss"

    def run(sides: list, tokens: list[int], traces: np.ndarray) -> tuple[list[str], list[int]]:
        """One pass per set of weights into ``sides``; summed over ranks; the fingerprints."""
        model = extractor.model
        original = (
            None if weights is None else {k: v.clone() for k, v in model.state_dict().items()}
        )
        fingerprints = []
        try:
            for state in weights if weights is not None else [None]:
                if state is not None:
                    model.load_state_dict(state)
                fingerprints.append(model_fingerprint(model))
                _accumulate_factors(
                    extractor,
                    data,
                    sides,
                    tokens,
                    traces,
                    gradient,
                    sample_seed,
                    batch_size,
                    progress,
                )
        finally:
            if original is not None:
                model.load_state_dict(original)
        if distributed.world()[1] > 1:  # each rank saw its own batches: sum the statistics
            for pair in sides:
                for side in pair or ():
                    side.all_reduce()
            counts = distributed.all_reduce_sum(torch.tensor(tokens, dtype=torch.float64))
            tokens = [int(t) for t in counts]
            traces[:] = distributed.all_reduce_sum(torch.from_numpy(traces)).numpy()
        return fingerprints, tokens

    fingerprints, tokens = run(sides, tokens, traces)
    n, n_passes = len(data), len(fingerprints)
    if not np.isfinite(traces).all():
        raise NonFiniteError("non-finite gradients while fitting the eigenbasis")
    traces = traces / (n * n_passes)
    pairs = [
        None if pair is None else (pair[0].eigenpairs(t), pair[1].eigenpairs(t))
        for pair, t in zip(sides, tokens)
    ]
    settings = {
        "max_exact_dim": max_exact_dim,
        "sketch_rank": sketch_rank,
        "seed": seed,
        "sample_seed": sample_seed if fisher == "true" else None,
        "sketched": [
            m.name
            for m, s in zip(modules, sides)
            if s is not None and not (s[0].exact and s[1].exact)
        ],
    }
    basis = _assemble(modules, traces, tokens, pairs, n_passes, fisher, fingerprints, n, settings)
    refits = sketch_refit_ranks(basis) if refit_sketches else {}
    if not refits:
        return basis
    settings["refit"] = _refit(modules, refits, pairs, tokens, seed, run)
    return _assemble(modules, traces, tokens, pairs, n_passes, fisher, fingerprints, n, settings)


#: a refit side is fitted exactly when its rank reaches half the side (a sketch that wide costs as
#: much as the exact sum) and its ``side²`` float64 sum fits this many MB; else sketched at the
#: rank, capped so that its ``side × rank`` sketch and test matrix fit the same memory
REFIT_MEMORY_MB = 1024


def _refit_size(size: int, rank: int) -> tuple[int, int]:
    """``(max_exact_dim, sketch_rank)`` for refitting a side of ``size`` at ``rank``."""
    limit = REFIT_MEMORY_MB * 2**20 // 8
    if 2 * rank >= size and size * size <= limit:
        return size, rank
    return 0, max(1, min(rank, limit // (2 * size)))


def _refit(
    modules: list[TrackedModule],
    refits: dict[int, dict[str, int]],
    pairs: list,
    tokens: list[int],
    seed: int,
    run,
) -> dict[str, dict[str, int | str]]:
    """Fit the sides in ``refits`` (module index → side → rank) again in one more ``run`` and
    put their eigenpairs into ``pairs`` (in place); what each was refit as (a rank or
    ``"exact"``)."""
    again: list = [None] * len(modules)
    record: dict[str, dict[str, int | str]] = {}
    for index, wanted in refits.items():
        module, sides = modules[index], []
        for offset, (side, size) in enumerate((("out", module.n_rows), ("in", module.n_cols))):
            if side not in wanted:
                sides.append(_Skipped())
                continue
            exact_dim, rank = _refit_size(size, wanted[side])
            sides.append(_FactorSide(size, exact_dim, rank, seed * 7919 + 2 * index + offset + 1))
            record.setdefault(module.name, {})[side] = "exact" if sides[-1].exact else rank
        again[index] = tuple(sides)
    run(again, [0] * len(modules), np.zeros(len(modules)))
    for index, refit_sides in enumerate(again):
        if refit_sides is not None:
            pairs[index] = tuple(
                kept if isinstance(side, _Skipped) else side.eigenpairs(tokens[index])
                for kept, side in zip(pairs[index], refit_sides)
            )
    return record


class _Skipped:
    """A factor side the refit pass leaves as it was (its updates are dropped)."""

    def update(self, x: torch.Tensor) -> None:
        pass

    def update_counts(self, counts: torch.Tensor) -> None:
        pass

    def all_reduce(self) -> None:
        pass


def _assemble(
    modules: list[TrackedModule],
    traces: np.ndarray,
    tokens: list[int],
    pairs: list,
    n_passes: int,
    fisher: str,
    fingerprints: list[str],
    n: int,
    settings: dict,
) -> KroneckerBasis:
    """The basis from each module's trace and side eigenpairs."""
    fitted = []
    for index, module in enumerate(modules):
        trace = float(traces[index])
        if pairs[index] is None:
            fitted.append(ModuleBasis(module.name, module.n_rows, module.n_cols, False, trace))
            continue
        (s_values, s_vectors, s_total), (a_values, a_vectors, a_total) = pairs[index]
        fitted.append(
            ModuleBasis(
                module.name,
                module.n_rows,
                module.n_cols,
                True,
                trace,
                tokens[index] // n_passes,
                s_values,
                s_vectors,
                s_total,
                a_values,
                a_vectors,
                a_total,
            )
        )
    return KroneckerBasis(fitted, fisher, tuple(fingerprints), n, settings)


def _accumulate_factors(
    extractor: GradientExtractor,
    data: ExampleSet,
    sides: list,
    tokens: list[int],
    traces: np.ndarray,
    gradient: str,
    sample_seed: int,
    batch_size: int,
    progress: bool,
) -> None:
    """One pass over ``data`` at the model's current weights into the factor sides, token counts
    and traces (in place); under ``torch.distributed``, over this rank's batches only."""
    modules = extractor.modules
    rank, world_size = distributed.world()  # batch b belongs to rank b % world_size
    passes = model_pass(
        extractor,
        data,
        gradient,
        batch_size=batch_size,
        sample_seed=sample_seed,
        rank=rank,
        world_size=world_size,
    )
    with tqdm(total=len(data), desc="eigenbasis", unit="ex", disable=not progress) as bar:
        for part in passes:
            with torch.no_grad():
                for index, (module, (a, g)) in enumerate(zip(modules, part.captured.factors)):
                    g = g.to("cpu", torch.float32)
                    a = a.cpu() if not a.is_floating_point() else a.to("cpu", torch.float32)
                    traces[index] += float(_squared_norms(module, a, g).sum())
                    if sides[index] is None:
                        continue
                    active = (g != 0).any(dim=-1)
                    out_side, in_side = sides[index]
                    out_side.update(g[active])
                    if a.is_floating_point():
                        in_side.update(a[active])
                    else:
                        counts = torch.bincount(a[active], minlength=module.n_cols)
                        in_side.update_counts(counts.to(torch.float64))
                    tokens[index] += int(active.sum())
            bar.update(part.last - part.first)
