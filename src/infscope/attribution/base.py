"""The Estimator interface: ``fit`` on training features, then ``score`` queries.

An estimator reads features from :class:`~infscope.store.FeatureStore` objects block by block,
so memory stays bounded by the block size (plus the output matrix, which may be a memory map).
The query × train products run in NumPy on the CPU, or in torch on a device given with
:meth:`Estimator.to` (a GPU), one block pair at a time either way.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from infscope.attribution.scores import Scores, SelfInfluence, _check_finite
from infscope.attribution.top_k import TopKAccumulator, TopScores
from infscope.curvature.linalg import gram_accumulate, unit_rows
from infscope.devices import resolve_device
from infscope.errors import InputError, ProvenanceError, StoreError, StoreMismatchError
from infscope.store import FeatureStore

NORMALIZATIONS = ("none", "unit")
#: Bytes of float64 rows a block may hold: wide features get fewer rows than ``block_size``.
BLOCK_BYTES = 2**24


class Estimator(ABC):
    """``fit(train_store)`` → ``score(query_store)`` / ``self_influence()``.

    Positive scores mean the training example helps the query (lowers its measurement).
    """

    name = "estimator"
    #: which gradients the training store must hold: "loss" (most estimators) or "measurement"
    #: (TRAK differentiates the same output function for training examples and queries)
    train_gradient = "loss"

    def __init__(self, block_size: int = 4096) -> None:
        if block_size < 1:
            raise InputError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        #: where query × train products run: ``None`` for NumPy on the CPU, else a torch device
        self.device: torch.device | None = None
        self.train: FeatureStore | None = None
        #: extra facts recorded with every score (e.g. how the damping was chosen)
        self.notes: dict = {}

    def to(self, device: str | torch.device | None) -> Estimator:
        """Run the query × train products on ``device`` (``"cuda"``, ``"cuda:1"``, ``"cpu"`` for
        torch on the CPU; ``None`` for NumPy) in float64, block by block. Returns ``self``."""
        self.device = None if device is None else resolve_device(device)
        return self

    def _products(self, left: np.ndarray | torch.Tensor, right: np.ndarray) -> np.ndarray:
        """``left @ right.T`` in float64: NumPy, or torch on :attr:`device` (``left`` may already
        be there, see :meth:`_on_device`)."""
        if self.device is None:
            return gram_accumulate(left, right, exact=True)
        right = torch.from_numpy(np.ascontiguousarray(right)).to(self.device, torch.float64)
        return (self._on_device(left) @ right.T).cpu().numpy()

    def _on_device(self, block: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """A block moved once to :attr:`device` as float64 (unchanged without a device)."""
        if self.device is None or isinstance(block, torch.Tensor):
            return block
        return torch.from_numpy(np.ascontiguousarray(block)).to(self.device, torch.float64)

    def fit(self, train: FeatureStore) -> Estimator:
        """Remember (and validate) the training features."""
        if train.spec.gradient != self.train_gradient:
            raise StoreMismatchError(
                f"{train.root} holds {train.spec.gradient!r} gradients; {self.name} needs "
                f"{self.train_gradient} gradients of the training examples (extract them with "
                f"gradient='{self.train_gradient}')"
            )
        if not train.is_complete():
            raise StoreError(
                f"{train.root} is incomplete {train.status()}; resume extraction first"
            )
        self.train = train
        self._fit(train)
        self._check_distinct_weights(train)
        return self

    def _fit(self, train: FeatureStore) -> None:
        """Estimator-specific preparation (factors, kernels); nothing by default."""

    def scored_checkpoints(self) -> list[str]:
        """Ids of the training store's checkpoints the scores combine (default: all)."""
        return [c.id for c in self._require_fit().checkpoints]

    def _check_distinct_weights(self, train: FeatureStore) -> None:
        """A trajectory or ensemble over checkpoints that share their weights counts one model
        state several times (usually: the checkpoint was not loaded before extraction)."""
        used = set(self.scored_checkpoints())
        for group in train.same_weights():
            shared = [c for c in group if c in used]
            if len(shared) > 1:
                raise ProvenanceError(
                    f"checkpoints {', '.join(map(repr, shared))} of {train.root} were extracted "
                    "from identical model weights, so combining them counts one state "
                    f"{len(shared)} times: load each checkpoint's weights before `infscope "
                    "features`, or score one of them (--checkpoint)"
                )

    def rows_per_block(self, dim: int) -> int:
        """Rows per block for ``dim``-wide features: ``block_size``, or fewer so that a block's
        float64 working copy stays under :data:`BLOCK_BYTES` (memory bounded for any width)."""
        return max(1, min(self.block_size, BLOCK_BYTES // (8 * max(dim, 1))))

    def _require_fit(self) -> FeatureStore:
        if self.train is None:
            raise InputError(f"{type(self).__name__} is not fitted: call fit(train_store) first")
        return self.train

    def check_query(self, query: FeatureStore) -> None:
        """Queries must be projected exactly like the training features."""
        train = self._require_fit()
        for name in ("feature_dim", "projection", "modules", "model"):
            ours, theirs = getattr(train.spec, name), getattr(query.spec, name)
            if ours != theirs:
                raise StoreMismatchError(
                    f"query store {query.root} differs from training store {train.root} in "
                    f"{'; '.join(differences(theirs, ours, name))} (query vs training); extract "
                    "both with the same settings"
                )
        if not query.is_complete():
            raise StoreError(
                f"{query.root} is incomplete {query.status()}; resume extraction first"
            )

    def check_weights(self, query: FeatureStore) -> None:
        """:class:`ProvenanceError` when a checkpoint the scores use was extracted from other
        model weights for the queries than for the training examples (same name, other
        fingerprint): such scores mix two models."""
        train = self._require_fit()
        known = {c.id: c.fingerprint for c in query.checkpoints}
        for checkpoint in self.scored_checkpoints():
            ours, theirs = train.checkpoint(checkpoint).fingerprint, known.get(checkpoint)
            if ours is not None and theirs is not None and ours != theirs:
                raise ProvenanceError(
                    f"checkpoint {checkpoint!r}: query store {query.root} was extracted from "
                    f"other model weights (fingerprint {theirs[:12]}) than training store "
                    f"{train.root} ({ours[:12]}); extract both from the same weights, or allow "
                    "it deliberately (allow_other_weights=True, --allow-other-weights)"
                )

    def score(
        self,
        query: FeatureStore,
        out: str | Path | None = None,
        *,
        allow_other_weights: bool = False,
    ) -> Scores:
        """Scores ``[n_query, n_train]``; with ``out``, written into a memory-mapped ``.npy``.
        Queries must come from the same weights as the training features at every checkpoint
        used (:meth:`check_weights`) unless ``allow_other_weights``."""
        train = self._require_fit()
        self.check_query(query)
        if not allow_other_weights:
            self.check_weights(query)
        shape = (query.n_examples, train.n_examples)
        if out is None:
            values = np.zeros(shape, dtype=np.float32)
        else:
            values = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=shape)
        self._score_into(query, values)
        metadata = {
            **self.describe(),
            "train_store": os.path.abspath(train.root),
            "query_store": os.path.abspath(query.root),
            **({"allow_other_weights": True} if allow_other_weights else {}),
        }
        return Scores(values, list(query.ids), list(train.ids), self.name, metadata)

    def score_top(
        self,
        query: FeatureStore,
        k: int = 10,
        per_train: int = 0,
        *,
        allow_other_weights: bool = False,
    ) -> TopScores:
        """Each query's ``k`` most helpful and most harmful training examples (with
        ``per_train``, also each training example's ``per_train`` most helped queries), kept
        while the score blocks stream past: the full matrix is never held, so memory is bounded
        by the block size and ``k``. The same rankings as ``score(query).top(k)``."""
        train = self._require_fit()
        self.check_query(query)
        if not allow_other_weights:
            self.check_weights(query)
        top = TopKAccumulator(query.n_examples, train.n_examples, k, per_train)
        query_ids, train_ids = list(query.ids), list(train.ids)
        for q_start, t_start, block in self._score_blocks(query):
            _check_finite(
                block,
                self.name,
                query_ids[q_start : q_start + len(block)],
                train_ids[t_start : t_start + block.shape[1]],
            )
            top.add(q_start, t_start, block)
        metadata = {
            **self.describe(),
            "train_store": os.path.abspath(train.root),
            "query_store": os.path.abspath(query.root),
            **({"allow_other_weights": True} if allow_other_weights else {}),
        }
        return top.result(query_ids, train_ids, self.name, metadata)

    def self_influence(self) -> SelfInfluence:
        """Each training example's score against itself (high = unusual for its label: likely
        mislabeled or atypical)."""
        train = self._require_fit()
        values = self._self_influence(train)
        metadata = {
            **self.describe(),
            "train_store": os.path.abspath(train.root),
            "higher_is_harder": True,
            "high_means": "unusual for its label (likely mislabeled or atypical)",
        }
        return SelfInfluence(values.astype(np.float32), list(train.ids), self.name, metadata)

    def _score_into(self, query: FeatureStore, values: np.ndarray) -> None:
        """Fill ``values[q, t]`` from :meth:`_score_blocks`."""
        for q_start, t_start, block in self._score_blocks(query):
            values[q_start : q_start + len(block), t_start : t_start + block.shape[1]] = block

    @abstractmethod
    def _score_blocks(self, query: FeatureStore) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(first query, first train, scores)`` blocks covering the matrix once each."""

    @abstractmethod
    def _self_influence(self, train: FeatureStore) -> np.ndarray:
        """One value per training example."""

    def describe(self) -> dict:
        """Settings recorded with the scores."""
        device = "numpy" if self.device is None else str(self.device)
        described = {"method": self.name, "block_size": self.block_size, "device": device}
        train = getattr(self, "train", None)
        budget = train.spec.projection.get("budget") if train is not None else None
        if budget:  # the eigen projection's budget chosen from the spectrum (dim="auto")
            described["projection_budget"] = budget
        return {**described, **self.notes}


#: which checkpoints an estimator scores: ``"last"``, ``"all"``, one checkpoint id, a sequence
#: of ids, or ``None`` for the estimator's own default
CheckpointChoice = str | Sequence[str] | None


def check_checkpoint_choice(choice: Any) -> str | tuple[str, ...] | None:
    """``choice`` normalised: ``None``, ``"last"``, ``"all"`` or a tuple of checkpoint ids."""
    if choice is None or choice in ("last", "all"):
        return choice
    if isinstance(choice, str):
        return (choice,)
    if isinstance(choice, (list, tuple)) and choice and all(isinstance(c, str) for c in choice):
        if len(choice) == 1 and choice[0] in ("last", "all"):
            return choice[0]
        return tuple(choice)
    raise InputError(
        f"checkpoints must be 'last', 'all', a checkpoint id or a list of ids, got {choice!r}"
    )


def choose_checkpoints(train: FeatureStore, choice: str | tuple[str, ...]) -> list[str]:
    """The ids of ``train``'s checkpoints that ``choice`` names (each checked to exist)."""
    if choice == "last":
        return [train.checkpoints[-1].id]
    if choice == "all":
        return [c.id for c in train.checkpoints]
    return [train.checkpoint(c).id for c in choice]


class CheckpointSum(Estimator):
    """``sum_c w_c <P_c phi_c(q), phi_c(z)> s_c(z)`` over chosen checkpoints, computed in blocks.

    ``checkpoints`` (every estimator's one way to choose them, :data:`CheckpointChoice`) picks
    the checkpoints; by default they are weighted equally (the mean over checkpoints).
    Subclasses may weight them otherwise, precondition queries (``P_c``, e.g. an inverse
    curvature) and rescale training examples (``s_c``, e.g. RelatIF or TRAK's re-weighting); by
    default both are the identity, which gives dot products.
    """

    normalizations: tuple[str, ...] = NORMALIZATIONS
    #: what ``checkpoints=None`` means for this estimator
    default_checkpoints: str = "last"
    #: whether the estimator scores exactly one checkpoint
    one_checkpoint: bool = False

    def __init__(
        self,
        *,
        normalize: str = "none",
        checkpoints: CheckpointChoice = None,
        block_size: int = 4096,
    ) -> None:
        super().__init__(block_size)
        if normalize not in self.normalizations:
            raise InputError(f"normalize must be one of {self.normalizations}, got {normalize!r}")
        self.normalize = normalize
        self.checkpoints = check_checkpoint_choice(checkpoints)
        if self.one_checkpoint and (
            self.checkpoints == "all"
            or (isinstance(self.checkpoints, tuple) and len(self.checkpoints) > 1)
        ):
            raise InputError(f"{self.name} scores one checkpoint, got checkpoints={checkpoints!r}")

    def checkpoint_ids(self, train: FeatureStore) -> list[str]:
        """The checkpoints of ``train`` the scores combine, in order."""
        if self.checkpoints is None:
            return self._default_checkpoint_ids(train)
        return choose_checkpoints(train, self.checkpoints)

    def _default_checkpoint_ids(self, train: FeatureStore) -> list[str]:
        return choose_checkpoints(train, self.default_checkpoints)

    def checkpoint_weights(self, train: FeatureStore) -> list[tuple[str, float]]:
        """``(checkpoint id, weight)`` pairs the score sums over (default: equal weights)."""
        ids = self.checkpoint_ids(train)
        return [(c, 1.0 / len(ids)) for c in ids]

    def _fit(self, train: FeatureStore) -> None:
        self.checkpoint_weights(train)  # fail at fit, not mid-scoring, on a missing checkpoint

    def scored_checkpoints(self) -> list[str]:
        return [c for c, _ in self.checkpoint_weights(self._require_fit())]

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        """Normalisation of raw features (both sides)."""
        return unit_rows(block) if self.normalize == "unit" else block

    def _precondition(self, checkpoint: str, block: np.ndarray) -> np.ndarray:
        """``P_c`` applied to prepared query rows ``[m, dim]`` (identity by default)."""
        return block

    def _train_scales(self, checkpoint: str) -> np.ndarray | None:
        """Multipliers ``s_c(z)`` of every training example (``None`` = 1)."""
        return None

    def _self_products(self, checkpoint: str) -> np.ndarray:
        """``<P_c φ_c(z), φ_c(z)>`` of every training example, in one pass over the store."""
        out = np.empty(self.train.n_examples)
        rows = self.rows_per_block(self.train.feature_dim)
        blocks = self.train.iter_blocks(checkpoint, rows)
        total = -(-self.train.n_examples // rows)
        label = f"self-influence[{self.name}, {checkpoint}]"
        for start, block in tqdm(blocks, total=total, desc=label, unit="block", disable=None):
            block = self._prepare(block)
            own = np.einsum("ij,ij->i", self._precondition(checkpoint, block), block)
            out[start : start + len(block)] = own
        return out

    def check_query(self, query: FeatureStore) -> None:
        super().check_query(query)
        known = {c.id for c in query.checkpoints}
        missing = [c for c, _ in self.checkpoint_weights(self.train) if c not in known]
        if missing:
            raise StoreMismatchError(
                f"query store {query.root} has no features for checkpoint(s) {missing}; "
                f"it has {sorted(known)}"
            )

    def _score_blocks(self, query: FeatureStore) -> Iterator[tuple[int, int, np.ndarray]]:
        """One query block at a time, preconditioned at every checkpoint, against the streamed
        training blocks, summed over checkpoints in float64: memory is bounded by the block size
        times the number of checkpoints (the training store is read once per query block)."""
        weights = self.checkpoint_weights(self.train)
        rows = self.rows_per_block(self.train.feature_dim)
        scales = self.train_scales()
        n_blocks = -(-query.n_examples // rows) * -(-self.train.n_examples // rows)
        queries = zip(*(query.iter_blocks(checkpoint, rows) for checkpoint, _ in weights))
        with tqdm(total=n_blocks, desc=f"scoring[{self.name}]", unit="block", disable=None) as bar:
            for parts in queries:
                q_start = parts[0][0]
                preconditioned = [
                    self._on_device(self._precondition(checkpoint, self._prepare(block)))
                    for (checkpoint, _), (_, block) in zip(weights, parts)
                ]
                trains = zip(*(self.train.iter_blocks(c, rows) for c, _ in weights))
                for t_parts in trains:
                    t_start = t_parts[0][0]
                    total = None
                    for (_, weight), q_block, (_, t_block), scale in zip(
                        weights, preconditioned, t_parts, scales
                    ):
                        product = self._products(q_block, self._prepare(t_block))
                        if scale is not None:
                            product *= scale[t_start : t_start + len(t_block)]
                        total = weight * product if total is None else total + weight * product
                    yield q_start, t_start, total
                    bar.update()

    # ---- scores as one inner product (nearest-neighbour indexes, candidate re-scoring) ---------

    def query_vectors(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """Query rows of the space where every score is one inner product with
        :meth:`train_vectors`: per checkpoint (in :meth:`checkpoint_weights` order, ``parts``
        one ``[m, dim]`` array each) the weight times the preconditioned prepared features,
        concatenated (float64, ``[m, checkpoints × dim]``)."""
        weights = self.checkpoint_weights(self._require_fit())
        if len(parts) != len(weights):
            raise InputError(f"{len(parts)} checkpoint parts given, {len(weights)} expected")
        return np.concatenate(
            [
                weight * np.asarray(self._precondition(c, self._prepare(part)), np.float64)
                for (c, weight), part in zip(weights, parts)
            ],
            axis=1,
        )

    def train_scales(self) -> list[np.ndarray | None]:
        """Per checkpoint (in :meth:`checkpoint_weights` order) the training examples'
        multipliers (TRAK, RelatIF; ``None`` = 1), for :meth:`train_vectors`. May cost a pass
        over the store: compute once, pass to every call."""
        return [self._train_scales(c) for c, _ in self.checkpoint_weights(self._require_fit())]

    def train_vectors(
        self,
        parts: Sequence[np.ndarray],
        indices: np.ndarray,
        scales: Sequence[np.ndarray | None],
    ) -> np.ndarray:
        """Training rows of that space for training examples ``indices`` (``parts``: their
        features per checkpoint; ``scales``: :meth:`train_scales`): the prepared features times
        each example's scale, concatenated over checkpoints (float64)."""
        if not len(parts) == len(scales) == len(self.checkpoint_weights(self._require_fit())):
            raise InputError("one feature part and one scale per scored checkpoint expected")
        out = []
        for part, scale in zip(parts, scales):
            part = np.asarray(self._prepare(part), np.float64)
            out.append(part if scale is None else part * scale[indices, None])
        return np.concatenate(out, axis=1)

    def _self_influence(self, train: FeatureStore) -> np.ndarray:
        values = np.zeros(train.n_examples, dtype=np.float64)
        for checkpoint, weight in self.checkpoint_weights(train):
            own = self._self_products(checkpoint)
            scales = self._train_scales(checkpoint)
            values += weight * (own if scales is None else own * scales)
        return values

    def describe(self) -> dict:
        return {
            **super().describe(),
            "normalize": self.normalize,
            "checkpoints": dict(self.checkpoint_weights(self._require_fit())),
        }


def differences(theirs: Any, ours: Any, path: str, limit: int = 4) -> list[str]:
    """``"projection.seed: 1 vs 0"``: where two JSON-like values differ, at most ``limit``
    places, each value shortened, so a mismatch reads as its cause rather than two dumps."""

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    if isinstance(theirs, dict) and isinstance(ours, dict):
        found = []
        for key in sorted(set(theirs) | set(ours), key=str):
            if theirs.get(key, _MISSING) != ours.get(key, _MISSING):
                found += differences(
                    theirs.get(key, _MISSING), ours.get(key, _MISSING), f"{path}.{key}", limit
                )
        return found[:limit]
    if isinstance(theirs, (list, tuple)) and isinstance(ours, (list, tuple)):
        if len(theirs) != len(ours):
            return [f"{path}: {len(theirs)} vs {len(ours)} entries"]
        found = []
        for i, (a, b) in enumerate(zip(theirs, ours)):
            if a != b:
                found += differences(a, b, f"{path}[{i}]", limit)
        return found[:limit]
    return [f"{path}: {short(theirs)} vs {short(ours)}"]


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()
