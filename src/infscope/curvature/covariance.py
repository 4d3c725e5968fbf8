"""Kronecker-factor statistics of the training loss in the feature space, gathered in the pass that
extracts features.

K-FAC and EK-FAC need, per tracked module, the second moments of its (projected) input
activations ``A = Σ a aᵀ`` and output gradients ``S = Σ g gᵀ`` over the positions the loss sees.
Both come from the same captured ``(a, g)`` that the projector turns into features, so
:func:`featurize_with_covariances` collects them while it writes the training store (one
:func:`~infscope.gradients.featurize.featurize` pass with the covariances as an observer), and
:func:`accumulate` does a pass of its own when no store is being extracted. The
eigendecompositions and everything read back from a store live with the factors
(:class:`~infscope.curvature.kfac.KFACFactors`).

:func:`~infscope.curvature.basis_fit.fit_kronecker_basis` gathers the same statistics in each
module's *full* space for the curvature-aware ``eigen`` projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope import distributed
from infscope.data import ExampleSet
from infscope.errors import InputError
from infscope.gradients.extractor import CapturedBatch, GradientExtractor, model_fingerprint
from infscope.gradients.featurize import featurize
from infscope.gradients.passes import model_pass
from infscope.gradients.projection import IdentityProjector, KroneckerProjector
from infscope.store import FeatureStore

UNSUPPORTED = (
    "K-FAC/EK-FAC needs features that keep modules apart (per-module blocks): extract them with "
    "ProjectionConfig(kind='kronecker', ...) or kind='identity'; dense (gaussian, rademacher) and "
    "sjlt projections mix all modules and are not supported"
)


class KroneckerCovariances:
    """Running sums of ``a aᵀ`` and ``g gᵀ`` per Kronecker module (positions with a non-zero
    output gradient only: padding and positions the loss never sees carry no gradient), their
    token counts, and — with ``features=True`` — the per-block sums of squared features and the
    ``ΦᵀΦ`` of non-Kronecker blocks (LayerNorm), for factors fitted without a store.

    Feed it every training example exactly once, through :meth:`update`.
    """

    def __init__(self, extractor: GradientExtractor, features: bool = False) -> None:
        projector = extractor.projector
        if not isinstance(projector, (KroneckerProjector, IdentityProjector)):
            raise InputError(f"{UNSUPPORTED} (the extractor uses {extractor.projection.kind!r})")
        self.extractor = extractor
        self.features = features
        self.layout = projector.blocks_layout()
        self.fingerprint = model_fingerprint(extractor.model)
        self.n_examples = 0
        self.tokens = [0] * len(self.layout)
        self.sums_a: list[torch.Tensor | None] = [None] * len(self.layout)
        self.sums_s: list[torch.Tensor | None] = [None] * len(self.layout)
        self.traces = np.zeros(len(self.layout))
        self.dense = {
            i: np.zeros((block.dim, block.dim))
            for i, block in enumerate(self.layout)
            if not block.kronecker
        }

    def check_featurize(
        self, extractor: GradientExtractor, gradient: str, num_workers: int, grouped: bool
    ) -> None:
        """Raise unless a featurize pass with these settings feeds these covariances every
        training example once: the same extractor, training-loss gradients, one worker or a
        process group (whose ranks' sums are reduced), and no example seen yet."""
        if self.extractor is not extractor:
            raise InputError("the covariances were made for another extractor")
        if gradient != "loss" or (num_workers != 1 and not grouped):
            raise InputError(
                "covariances are collected from the training loss of the whole set: use "
                "gradient='loss' and one worker, or a torch.distributed process group (whose "
                "ranks' sums are reduced)"
            )
        if self.n_examples:
            raise InputError("the covariances already hold examples: give a fresh collector")

    def observe(self, batch: CapturedBatch) -> None:
        """Add one captured batch (a :func:`~infscope.gradients.featurize.featurize` observer)."""
        self.update(batch.factors)

    def update(
        self, captured: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: np.ndarray | None = None
    ) -> None:
        """Add one batch: the extractor's captured ``(a, g)`` per module and, when collecting
        feature statistics, the batch's projected features ``rows``."""
        extractor = self.extractor
        projector = extractor.projector
        kronecker = isinstance(projector, KroneckerProjector)
        with torch.no_grad():
            for index, (module, (a, g)) in enumerate(zip(extractor.modules, captured)):
                block = self.layout.blocks[index]
                if not block.kronecker:
                    continue
                device = g.device if g.device.type == "cuda" else torch.device("cpu")
                active = (g != 0).any(dim=-1)  # [B, T]
                if kronecker:
                    p_in, p_out = projector.matrices(index, g.device)
                    a = module.project_inputs(a, p_in.to(g.dtype))
                    g = g @ p_out.to(g.dtype).T
                elif not a.is_floating_point():  # embedding ids: one-hot inputs
                    a = torch.nn.functional.one_hot(a, module.n_cols).to(g.dtype)
                a = a[active].to(device, torch.float64)
                g = g[active].to(device, torch.float64)
                if self.sums_a[index] is None:
                    self.sums_a[index] = a.new_zeros(block.cols, block.cols)
                    self.sums_s[index] = g.new_zeros(block.rows, block.rows)
                self.sums_a[index] += a.T @ a
                self.sums_s[index] += g.T @ g
                self.tokens[index] += int(active.sum())
            batch = int(captured[0][1].shape[0]) if captured else 0
        if self.features:
            if rows is None:
                raise InputError("feature statistics need the batch's projected features")
            rows = np.asarray(rows, dtype=np.float64)
            for index, block in enumerate(self.layout):
                x = rows[:, block.columns]
                self.traces[index] += np.einsum("ij,ij->", x, x)
                if not block.kronecker:
                    self.dense[index] += x.T @ x
            batch = len(rows)
        self.n_examples += batch

    def all_reduce(self) -> None:
        """Sum every statistic over the ranks of the ``torch.distributed`` process group (each
        rank fed its own examples); a no-op without one."""
        for index, block in enumerate(self.layout):
            if not block.kronecker:
                continue
            if self.sums_a[index] is None:  # this rank saw no example
                self.sums_a[index] = torch.zeros(block.cols, block.cols, dtype=torch.float64)
                self.sums_s[index] = torch.zeros(block.rows, block.rows, dtype=torch.float64)
            distributed.all_reduce_sum(self.sums_a[index])
            distributed.all_reduce_sum(self.sums_s[index])
        counts = distributed.all_reduce_sum(
            torch.tensor([self.n_examples, *self.tokens], dtype=torch.float64)
        )
        self.n_examples, self.tokens = int(counts[0]), [int(t) for t in counts[1:]]
        self.traces = distributed.all_reduce_sum(torch.from_numpy(self.traces.copy())).numpy()
        for index in self.dense:
            reduced = distributed.all_reduce_sum(torch.from_numpy(self.dense[index].copy()))
            self.dense[index] = reduced.numpy()

    def covariance(self, index: int, side: str) -> np.ndarray:
        """``A`` (``side="inputs"``) or ``S`` (``"outputs"``) of Kronecker module ``index``:
        the mean over the positions that entered it."""
        sums = self.sums_a if side == "inputs" else self.sums_s
        if sums[index] is None:
            block = self.layout.blocks[index]
            size = block.cols if side == "inputs" else block.rows
            return np.zeros((size, size))
        return sums[index].cpu().numpy() / max(self.tokens[index], 1)


def accumulate(
    extractor: GradientExtractor,
    data: ExampleSet,
    batch_size: int = 32,
    progress: bool = True,
    features: bool = False,
) -> KroneckerCovariances:
    """One pass of training-loss gradients over ``data`` into a :class:`KroneckerCovariances`."""
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    covariances = KroneckerCovariances(extractor, features)
    if extractor.projector.needs_weights:
        extractor.bind_weights()
    with tqdm(total=len(data), desc="kfac factors", unit="ex", disable=not progress) as bar:
        for part in model_pass(extractor, data, "loss", batch_size=batch_size):
            rows = None
            if features:
                with torch.no_grad():
                    rows = extractor.projector.project(part.captured.factors)
                rows = rows.detach().cpu().numpy()
            covariances.update(part.captured.factors, rows)
            bar.update(part.last - part.first)
    return covariances


def featurize_with_covariances(
    extractor: GradientExtractor,
    data: ExampleSet,
    root: str | Path,
    checkpoint: str = "final",
    **options: Any,
) -> tuple[FeatureStore, KroneckerCovariances]:
    """Write the training store (:func:`~infscope.gradients.featurize.featurize` with
    ``options``) and collect the K-FAC covariances from the same forward/backward passes:
    :meth:`KFACFactors.from_covariances(covariances, store)
    <infscope.curvature.kfac.KFACFactors.from_covariances>` then needs no second pass over the
    data. Shards a resumed run skips are passed through once more for the covariances, so they
    always see every example once; under a ``torch.distributed`` process group each rank's sums
    are reduced, so every rank returns the covariances of the whole set."""
    covariances = KroneckerCovariances(extractor)
    worker, num_workers = options.get("worker"), options.get("num_workers")
    grouped = worker is None and num_workers is None and distributed.world()[1] > 1
    covariances.check_featurize(
        extractor, options.get("gradient", "loss"), num_workers or 1, grouped
    )
    store = featurize(extractor, data, root, checkpoint, observers=[covariances.observe], **options)
    if grouped:
        covariances.all_reduce()
    return store, covariances
