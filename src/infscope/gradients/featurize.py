"""Extract a dataset's gradient features into a :class:`~infscope.store.FeatureStore`.

Work is done shard by shard; each shard is written atomically, so a killed run restarted with
the same arguments skips finished shards and produces a byte-identical store. Batches never cross
shard boundaries, which keeps every shard's numbers independent of where a run stopped.
Several workers (``worker``/``num_workers``) fill disjoint shards of one store.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope import distributed
from infscope.data import ExampleSet
from infscope.errors import InfscopeWarning, InputError
from infscope.gradients.extractor import CapturedBatch, GradientExtractor
from infscope.gradients.passes import model_pass
from infscope.store import FeatureStore, StoreSpec
from infscope.store.spec import META_FILE

STORE_DTYPES = ("float32", "float16")
#: Bytes of features a shard holds by default (its rows are buffered in memory before the write).
SHARD_BYTES = 2**25
#: Multiply-adds per example above which a dense projection is reported as slow (~1 s on a CPU
#: core at 10 Gflop/s)
DENSE_COST_WARNING = 10**10


def projection_warnings(extractor: GradientExtractor) -> list[str]:
    """What a user should know about the projection before a long run: a dense projection that
    costs ``gradient_dim x dim`` multiply-adds per example beyond :data:`DENSE_COST_WARNING`,
    or a Kronecker projection whose blocks, capped by the layers' sizes, give far fewer
    features than ``dim``."""
    config, projector = extractor.projection, extractor.projector
    notes = []
    if config.kind in ("gaussian", "rademacher"):
        cost = projector.gradient_dim * projector.feature_dim
        if cost > DENSE_COST_WARNING:
            notes.append(
                f"the {config.kind} projection of {projector.gradient_dim:,} parameters to "
                f"{projector.feature_dim:,} features costs {cost:.1e} multiply-adds per example "
                f"(~{cost / 1e10:.2g} s each at 10 Gflop/s); kronecker or sjlt cost far less"
            )
    if config.kind == "kronecker" and config.dim and projector.feature_dim < config.dim / 2:
        notes.append(
            f"the kronecker projection gives {projector.feature_dim:,} features, not the "
            f"{config.dim:,} asked: each of the {len(extractor.modules)} layers' blocks is capped "
            "by the layer's own size"
        )
    return notes


def model_signature(extractor: GradientExtractor) -> str:
    """Architecture of the tracked modules (names and shapes, not values) — equal across
    checkpoints of one model, different across models."""
    digest = hashlib.sha256()
    for module in extractor.modules:
        for name, param in module.parameters().items():
            digest.update(f"{module.name}.{name}:{tuple(param.shape)};".encode())
    return digest.hexdigest()[:16]


Observer = Callable[[CapturedBatch], None]


def featurize(
    extractor: GradientExtractor,
    data: ExampleSet,
    root: str | Path,
    checkpoint: str = "final",
    *,
    gradient: str = "loss",
    learning_rate: float | None = None,
    batch_size: int = 32,
    shard_size: int | None = None,
    dtype: str = "float32",
    worker: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    observers: Sequence[Observer] = (),
    sample_seed: int = 0,
    covariances: Any = None,
) -> FeatureStore:
    """Write the features of ``data`` at the extractor's current weights as ``checkpoint``.

    Args:
        extractor: model, task, tracked modules and projection.
        data: examples and their ids.
        root: store directory (created, or resumed when it holds a compatible store).
        checkpoint: name of the model state the features belong to.
        gradient: ``"loss"`` for training examples, ``"measurement"`` for queries, ``"fisher"``
            for the true Fisher of the training examples (targets drawn from the model; a store
            that curvature-based estimators take for their curvature statistics).
        learning_rate: learning rate in effect at this checkpoint (used by TracIn).
        batch_size: examples per forward/backward pass.
        shard_size: examples per shard file (default: 1024, or fewer for wide features so that
            a shard holds at most 32 MiB; a resumed store keeps its own).
        dtype: ``"float32"`` or ``"float16"`` on disk.
        worker, num_workers: this process's share of the shards (shard ``i`` belongs to
            worker ``i % num_workers``). Default: the rank and world size of the
            ``torch.distributed`` process group (``torchrun``; :mod:`infscope.distributed`),
            which also waits for every rank to finish; ``0`` of ``1`` without one.
        observers: callables given every batch's :class:`~infscope.gradients.extractor.
            CapturedBatch` (the layers' inputs and output gradients) from the same passes —
            e.g. the K-FAC covariances of :func:`infscope.curvature.featurize_with_covariances`.
            They see each example of this worker's shards once: shards that a resumed run skips
            are passed through once more for them alone.
        sample_seed: ``gradient="fisher"``: seed of the sampled targets (per batch, by position,
            so resumed runs and workers draw the same ones); recorded with the store's task.
        covariances: deprecated: ``observers=[covariances.observe]``, or
            :func:`infscope.curvature.featurize_with_covariances` (which also checks and
            reduces them).
    """
    if dtype not in STORE_DTYPES:
        raise InputError(f"dtype must be one of {STORE_DTYPES}, got {dtype!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    grouped = False
    if worker is None and num_workers is None:
        worker, num_workers = distributed.world()
        grouped = num_workers > 1
    worker, num_workers = worker or 0, num_workers or 1
    if not 0 <= worker < num_workers:
        raise InputError(f"worker {worker} is not in [0, {num_workers})")
    observers = list(observers)
    if covariances is not None:
        warnings.warn(
            "featurize(covariances=) is deprecated; use "
            "infscope.curvature.featurize_with_covariances(...) or observers=[covariances.observe]",
            DeprecationWarning,
            stacklevel=2,
        )
        covariances.check_featurize(extractor, gradient, num_workers, grouped)
        observers.append(covariances.observe)
    store = _open_store(extractor, data, root, checkpoint, gradient, learning_rate, shard_size,
                        dtype, sample_seed)
    todo = store.missing_shards(checkpoint, worker=worker, num_workers=num_workers)
    if todo:
        for note in projection_warnings(extractor):
            warnings.warn(note, InfscopeWarning, stacklevel=2)
    options = dict(batch_size=batch_size, sample_seed=sample_seed)
    if observers:  # a resumed run: the finished shards still feed the observers
        for index, (start, stop) in enumerate(store.shard_ranges()):
            if (start, stop) in todo or index % num_workers != worker:
                continue
            for part in model_pass(extractor, data, gradient, start=start, stop=stop, **options):
                for observe in observers:
                    observe(part.captured)
    total = sum(stop - start for start, stop in todo)
    with tqdm(total=total, desc=f"features[{checkpoint}]", unit="ex", disable=not progress) as bar:
        for start, stop in todo:
            rows = np.empty((stop - start, extractor.feature_dim), dtype=np.float32)
            losses = np.empty(stop - start)
            predictions: np.ndarray | None = np.empty(stop - start, dtype=np.int64)
            for part in model_pass(extractor, data, gradient, start=start, stop=stop, **options):
                captured, first, last = part.captured, part.first - start, part.last - start
                with torch.no_grad():
                    features = extractor.projector.project(captured.factors)
                for observe in observers:
                    observe(captured)
                rows[first:last] = features.detach().float().cpu().numpy()
                losses[first:last] = captured.values.double().cpu().numpy()
                if captured.predictions is None:
                    predictions = None
                elif predictions is not None:
                    predictions[first:last] = captured.predictions.cpu().numpy()
                bar.update(last - first)
            store.write_shard(checkpoint, start, rows, losses, predictions)
    if grouped:
        if covariances is not None:
            covariances.all_reduce()
        distributed.barrier()  # every rank's shards are written when featurize returns
    return store


def _open_store(
    extractor: GradientExtractor,
    data: ExampleSet,
    root: str | Path,
    checkpoint: str,
    gradient: str,
    learning_rate: float | None,
    shard_size: int | None,
    dtype: str,
    sample_seed: int,
) -> FeatureStore:
    """The store for ``data``'s features (created, or the compatible one at ``root``) with
    ``checkpoint`` registered at the extractor's current weights."""
    if shard_size is None:
        existing = Path(root) / META_FILE
        if existing.exists():
            shard_size = FeatureStore.open(root).spec.shard_size
        else:
            shard_size = max(1, min(1024, SHARD_BYTES // (4 * extractor.feature_dim)))
    spec = StoreSpec(
        feature_dim=extractor.feature_dim,
        dtype=dtype,
        gradient=gradient,
        modules=extractor.module_names,
        projection=extractor.describe()["projection"],
        model=model_signature(extractor),
        shard_size=shard_size,
        task={
            **extractor.task.describe(),
            **({"sample_seed": sample_seed} if gradient == "fisher" else {}),
        },
    )
    store = FeatureStore.create(root, list(data.ids), spec)
    store.add_checkpoint(
        checkpoint, learning_rate=learning_rate, fingerprint=extractor.bind_weights()
    )
    for group in store.same_weights():
        if checkpoint in group:
            others = ", ".join(repr(c) for c in group if c != checkpoint)
            warnings.warn(
                f"checkpoint {checkpoint!r} has the same model weights as {others} in {root}: "
                "was this checkpoint's state loaded? (estimators that combine checkpoints refuse "
                "identical ones)",
                InfscopeWarning,
                stacklevel=3,
            )
    return store
