"""The front door: a model, its task and how its gradients are projected, and the two steps every
analysis takes — extract feature stores (with the curvature they need), then score.

:class:`Analysis` does what ``infscope features`` does (the CLI calls it): it fits or loads the
eigenbases of the curvature-aware projection, extracts a store (sharded over the ranks of a
``torchrun`` process group when there is one), and fits K-FAC factors in the same pass when
asked. :func:`score` does what ``infscope score`` does. Everything else is reachable from the
packages they use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from infscope import distributed
from infscope.attribution.registry import build_estimator
from infscope.attribution.scores import Scores, SelfInfluence
from infscope.attribution.top_k import TopScores
from infscope.curvature import (
    KFACFactors,
    KroneckerBasis,
    as_bases,
    featurize_with_covariances,
    fit_kronecker_basis,
)
from infscope.data import ExampleSet
from infscope.devices import resolve_device
from infscope.errors import InputError
from infscope.gradients.extractor import GradientExtractor, ModuleSelection
from infscope.gradients.featurize import featurize
from infscope.gradients.projection import ProjectionConfig
from infscope.store import FeatureStore
from infscope.tasks.base import Task

__all__ = ["Analysis", "score"]


class Analysis:
    """Feature extraction for one model and task with one projection.

    Args:
        model: the model (its current weights are the checkpoint extracted; load another
            checkpoint's state into it between calls).
        task: what is differentiated (:class:`~infscope.tasks.Task`).
        projection: a :class:`~infscope.gradients.ProjectionConfig`, or its kind
            (``"kronecker"``, ``"eigen"``, ``"sjlt"``, ``"gaussian"``, ``"rademacher"``,
            ``"identity"``) with ``dim`` and ``seed``.
        dim: feature budget; by default 4096 for a random projection and ``"auto"`` for the
            eigen projection (chosen from each basis's spectrum, recorded in the store);
            ``None``: the eigen projection keeps its bases whole.
        modules: which layers are tracked (default: every trainable Linear/Conv1D/Conv2d).
        device: where the model runs (moved there).
        bases: the eigen projection's basis — a :class:`~infscope.curvature.KroneckerBasis`,
            a saved one's path, or one per checkpoint; or fit them with :meth:`fit_basis`.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        *,
        projection: str | ProjectionConfig = "kronecker",
        dim: int | str | None = "default",
        seed: int = 0,
        modules: ModuleSelection | None = None,
        device: str | None = None,
        bases: Any = None,
    ) -> None:
        self.model, self.task = model, task
        self.selection = modules or ModuleSelection()
        self.device = resolve_device(device) if device else None
        if self.device is not None:
            model.to(self.device)
        if isinstance(projection, ProjectionConfig):
            self.kind, self.dim, self.seed = projection.kind, projection.dim, projection.seed
            bases = projection.basis if bases is None else bases
            self._config = None if projection.kind == "eigen" else projection
        else:
            if dim == "default":  # the eigen budget comes from the spectrum, a random one is 4096
                dim = "auto" if projection == "eigen" else 4096
            self.kind, self.dim, self.seed = projection, dim, seed
            self._config = None
            if projection != "eigen":
                self._config = ProjectionConfig(
                    projection, None if projection == "identity" else dim, seed=seed
                )
        if bases is not None and self.kind != "eigen":
            raise InputError("bases apply to the eigen projection only")
        #: the eigen projection's bases, one per checkpoint (fit or loaded)
        self.bases: list[KroneckerBasis] = [] if bases is None else as_bases(bases)
        self._extractor: GradientExtractor | None = None

    @property
    def projection(self) -> ProjectionConfig:
        """The projection features are extracted with (the eigen one needs its bases first)."""
        if self._config is not None:
            return self._config
        if not self.bases:
            raise InputError(
                "the eigen projection needs a basis: fit_basis(train) first, or pass bases="
            )
        return ProjectionConfig("eigen", self.dim, seed=self.seed, basis=list(self.bases))

    @property
    def extractor(self) -> GradientExtractor:
        """The extractor of :attr:`projection` (rebuilt when the bases change)."""
        config = self.projection
        if self._extractor is None or self._extractor.projection != config:
            self._extractor = GradientExtractor(
                self.model, self.task, config, self.selection, device=self.device
            )
        return self._extractor

    # ---- curvature-aware projection ---------------------------------------------------------

    def fit_basis(
        self, data: ExampleSet, path: str | Path | None = None, **options: Any
    ) -> KroneckerBasis:
        """Fit the K-FAC eigenbasis of the model's current weights on ``data`` (the training
        set; ``options``: :func:`~infscope.curvature.fit_kronecker_basis`'s, e.g.
        ``fisher="true"``), add it to :attr:`bases` (one per checkpoint) and save it at
        ``path`` when given."""
        identity = GradientExtractor(
            self.model, self.task, ProjectionConfig("identity", None), self.selection
        )
        basis = fit_kronecker_basis(identity, data, **options)
        if path is not None:
            basis.save(path)
        self.bases = as_bases([*self.bases, basis])
        return basis

    def use_bases(
        self, paths: Sequence[str | Path], data: ExampleSet, *, fit: bool, **options: Any
    ) -> list[Path]:
        """The bases saved at ``paths`` (one, or one per checkpoint) become :attr:`bases`. A
        single one that does not exist yet is fitted on ``data`` at the current weights when
        ``fit`` (training data) and saved there; several must all exist. A basis that exists is
        never refitted (the training and query stores share it). Returns the paths fitted now."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise InputError(
                "the eigen projection needs --basis: the eigenbasis file to fit or read"
            )
        missing = [p for p in paths if not p.exists()]
        if len(paths) > 1 and missing:
            raise InputError(
                f"no eigenbasis at {', '.join(map(str, missing))}: with one basis per checkpoint, "
                f"fit each first (features --basis PATH --basis-only, at that checkpoint's model)"
            )
        if missing and not fit:
            raise InputError(
                f"no eigenbasis at {missing[0]}: extract the training store (gradient 'loss') "
                f"with --projection eigen first, which fits it there"
            )
        if missing:
            self.bases = []
            self.fit_basis(data, missing[0], **options)
            return missing
        self.bases = as_bases(paths)
        return []

    # ---- extraction ---------------------------------------------------------------------------

    def extract(
        self,
        data: ExampleSet,
        out: str | Path,
        checkpoint: str = "final",
        *,
        gradient: str = "loss",
        fit_factors: str | Path | None = None,
        worker: int | None = None,
        num_workers: int | None = None,
        **options: Any,
    ) -> FeatureStore:
        """Write the features of ``data`` at the model's current weights to the store ``out``
        as ``checkpoint`` (:func:`~infscope.gradients.featurize.featurize`; ``options``:
        ``learning_rate``, ``batch_size``, ``shard_size``, ``dtype``, ``sample_seed``,
        ``progress``). Resumes a store that exists.

        Under ``torchrun`` (``WORLD_SIZE`` > 1) with no ``worker``/``num_workers`` the process
        joins the group and the ranks share the shards. ``fit_factors``: also fit the K-FAC
        factors of the training store and save them there — from the same passes when one
        process group writes the whole store, else (several independent workers) after the
        last one, which must find the store complete.
        """
        grouped = worker is None and num_workers is None and distributed.init_from_environment()
        if not grouped:
            worker, num_workers = worker or 0, num_workers or 1
        if fit_factors is not None and gradient != "loss":
            raise InputError("--fit-factors needs training (loss) gradients")
        extractor = self.extractor
        shards = {"worker": worker, "num_workers": num_workers, **options}
        if fit_factors is not None and (grouped or num_workers == 1):  # one pass for both
            store, covariances = featurize_with_covariances(
                extractor, data, out, checkpoint, gradient=gradient, **shards
            )
            KFACFactors.from_covariances(covariances, store, checkpoint).save(fit_factors)
            return store
        store = featurize(extractor, data, out, checkpoint, gradient=gradient, **shards)
        if fit_factors is not None:
            if not store.is_complete(checkpoint):
                raise InputError(
                    "--fit-factors needs the complete store: run it with the last worker"
                )
            batch_size = options.get("batch_size", 32)
            factors = KFACFactors.fit(
                extractor, data, store=store, checkpoint=checkpoint, batch_size=batch_size
            )
            factors.save(fit_factors)
        return store


def score(
    train: str | Path | FeatureStore,
    query: str | Path | FeatureStore | None = None,
    *,
    method: str = "tracin",
    top: int | None = None,
    device: str | None = None,
    allow_other_weights: bool = False,
    **options: Any,
) -> Scores | SelfInfluence | TopScores:
    """Score the training store against the queries with ``method`` and its ``options`` (see
    ``infscope.attribution.registry``; e.g. ``damping``, ``checkpoints``, ``factors``): the
    ``[n_query, n_train]`` :class:`~infscope.attribution.Scores`, the training examples'
    self-influence without ``query``, or with ``top`` each query's most helpful and harmful
    training examples kept while the blocks stream past (the matrix is never held)."""
    if top is not None and query is None:
        raise InputError("--top needs --query (self-influence is one value per example)")
    estimator = build_estimator(method, **options).to(device)
    estimator.fit(train if isinstance(train, FeatureStore) else FeatureStore.open(train))
    if query is None:
        return estimator.self_influence()
    queries = query if isinstance(query, FeatureStore) else FeatureStore.open(query)
    if top is not None:
        return estimator.score_top(queries, top, allow_other_weights=allow_other_weights)
    return estimator.score(queries, allow_other_weights=allow_other_weights)
