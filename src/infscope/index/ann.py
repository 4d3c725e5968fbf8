"""Approximate nearest-neighbour search for influence: FAISS over a training store.

Every score of a :class:`~infscope.attribution.base.CheckpointSum` estimator (dot product,
cosine, TracIn, influence functions, TRAK, EK-FAC, DataInf) is one inner product
``<query_vectors(q), train_vectors(z)>`` — the training side is the prepared (and, for TRAK or
RelatIF, rescaled) features concatenated over checkpoints, the query side the weighted,
preconditioned ones. So the training side is indexed once and a query's most helpful training
examples are a maximum-inner-product search; its most harmful, a search with the negated query.

* ``flat`` — exact search (FAISS ``IndexFlatIP``): the reference, ``n × dim`` float32 in memory.
* ``ivf-flat`` / ``ivf-sq8`` / ``ivf-pq`` — an inverted file of ``nlist`` k-means cells
  (trained on a seeded sample; ``4·√n`` cells by default, at most 4,096), searched in the
  ``nprobe`` cells of largest centroid score, holding the vectors whole (float32), as one byte
  per dimension (``sq8``, 4× smaller, near-exact distances) or as product-quantised codes of
  ``pq_bytes`` per vector: 4-bit codes of 4 dimensions each (``dim/8`` bytes by default: 32 at
  256 dims, 128 at 1024), scanned with FAISS's fast-scan kernels (SIMD table look-ups), coarse
  distances that the exact re-scoring corrects (10⁶ rows, 256 dims, 1 thread: a quarter of
  4,000 cells scanned in 3 ms; 8-bit codes of 16 dims, the earlier default, are too coarse for
  the harmful direction to reach 0.95 in every cell). The cells are capped since adding costs
  ``n × nlist`` inner products; an HNSW graph over the centroids, searched by inner product,
  misses the harmful direction's cells (SQ8, 1,024 of 4,000 cells: 0.65 against 0.73).
* ``hnsw`` — a graph index (no training; slow to build at 10⁶).

The approximate kinds search inner products directly (``metric="ip"``, the default) or L2
neighbours of lifted vectors (``metric="l2"``: training rows ``[x, √(R² − ‖x‖²)]`` with ``R`` the
largest training norm, queries ``[q, 0]``, whose L2 order is exactly the inner products' —
Bachrach et al. 2014). The lift is slightly better for nearly equal norms (synthetic clusters:
recall@100 0.96 vs 0.92), much worse for real gradient features' heavy-tailed norms (MiniLM
store: 0.37 vs 0.81), where its last coordinate, near ``R`` for short vectors, dominates.

**Both directions.** A query's most harmful training examples are those its most helpful are
for the negated query — but an inverted file is much worse at finding them: the most negative
inner products lie in the tails of many cells, which the ranking of cells by their centroid
misses (synthetic clusters, 10⁶ rows: recall@100 0.42 at the 32 cells that find 0.965 of the
helpful ones). Indexing ``{x} ∪ {−x}`` or a second index over ``−x`` is no way out: k-means on
``−x`` has the negated centroids, so either search is the negated-query search again. So each
direction gets the number of cells it needs, *measured when the index is built*: the add pass
also scores ``calibration_queries`` seeded training rows exactly against every row, and from
``(nprobe, rerank)`` each direction doubles whichever of the two finds more of those queries'
exact top-``calibration_k`` (the cells while some are unprobed, the re-scored candidates up to
32 times the config's: coarse codes can miss neighbours in every cell) until they find
``target_recall`` of it, then bisects that last doubling (:mod:`infscope.index.calibration`).
The measured recall is recorded in the index and reported with each
search (:attr:`InfluenceIndex.calibration`). Ranking cells by their score spread along the
query too (a Gaussian tail per cell) gains little: 10⁶ rows, 4,000 cells, 0.95 of the harmful
top-100 in a median 304 cells against 382 (they lie in 48).

Candidates are re-scored exactly from the store, so the returned scores are exact and only the
candidate set is approximate. ``ivf-pq`` indexes keep a refine copy by default (one byte per
dimension, :mod:`infscope.index.rescore`): the ``rerank × k`` candidates the codes propose are
scored in it and only its best ``2k`` are read from the store's memory-mapped shards (10⁶ rows ×
256 dims, 1 thread, same run: one query in both directions 26 ms against 85 ms without the copy,
same recall); without it (``refine="none"``) all ``rerank × k`` are read.
Built with :meth:`InfluenceIndex.build`, saved with FAISS's own binary writer plus a JSON file
(no pickle) and reopened only beside an estimator fitted on the same store with the same
settings (:meth:`InfluenceIndex.load`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from infscope.attribution.base import CheckpointSum
from infscope.attribution.top_k import TopKAccumulator, TopScores
from infscope.errors import InputError, StoreMismatchError
from infscope.index.calibration import calibrated_setting
from infscope.index.lift import Augmentation
from infscope.index.parallel import split_search
from infscope.index.recall import rows_recall
from infscope.index.rescore import (
    REFINE_KINDS,
    ask_refined,
    check_refine,
    exact_top_k,
    refine_factory,
    refined_count,
)
from infscope.io import write_atomic
from infscope.store import FeatureStore
from infscope.store.shards import checked_states, trust_checked

__all__ = ["INDEX_KINDS", "MAX_NLIST", "IndexConfig", "InfluenceIndex"]

INDEX_KINDS = ("flat", "ivf-flat", "ivf-sq8", "ivf-pq", "hnsw")
INDEX_METRICS = ("ip", "l2")
#: 2: the metric (inner products or lifted L2) is recorded; 3: each direction's calibrated nprobe
#: and recall, and the shards checked at build time; 4: the refine copy
FORMAT = "infscope.index/4"
DIRECTIONS = ("helpful", "harmful")
#: the default cell count's cap: adding ``n`` rows scores each against every centroid
MAX_NLIST = 4096
INDEX_FILE, META_FILE = "index.faiss", "index.json"
#: re-scored candidate values per step of a search or calibration (float64: ~32 MiB)
RESCORE_VALUES = 2**22
#: rows per block when adding to or searching the index (float32 copies of ~32 MiB at 1024 dims)
ADD_ROWS = 8192


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError(
            "approximate search needs FAISS: pip install 'infscope[index]' (faiss-cpu)"
        ) from None
    return faiss


@dataclass(frozen=True)
class IndexConfig:
    """How the index is built and searched.

    Attributes:
        kind: one of :data:`INDEX_KINDS`.
        nlist: IVF cells (default ``4·√n``, at least 1, at most :data:`MAX_NLIST` and a 39th
            of the training sample — ``min(n, train_size)`` rows — so each cell gets FAISS's
            minimum of 39 points).
        pq_bytes: ``ivf-pq`` code bytes per vector, two 4-bit codes per byte (default
            ``dim / 8``, one code per 4 dimensions; ``2 · pq_bytes`` must divide ``dim``).
        hnsw_m: ``hnsw`` graph degree.
        metric: ``ip`` (cells and graph on inner products) or ``l2`` (on lifted vectors); see
            the module docstring. The ``flat`` index is exact either way.
        nprobe: IVF cells searched per query (more = higher recall, slower).
        rerank: candidates per result re-scored (``rerank × k``): exactly from the store, or
            with a refine copy first in the copy, whose best ``2k`` are then re-scored exactly;
            0 returns the index's own (approximate, for ``ivf-pq``) scores.
        refine: ``ivf-pq`` only: ``sq8`` (default) or ``fp16`` keeps a copy of every training
            vector at 1 or 2 bytes per dimension in the index (memory and disk), in which the
            candidates are scored before the store is read; ``none`` keeps none (see
            :mod:`infscope.index.rescore`).
        target_recall: the recall@``calibration_k`` each direction's calibrated ``nprobe``
            must reach on the calibration queries (IVF kinds; see the module docstring). 0.97,
            not 0.95: the recall measured on a few queries is itself a sample, and the
            settings are the smallest that reach it.
        calibration_queries: seeded training rows searched at build time to calibrate and
            report each direction's recall (0: no calibration; ``nprobe`` for both). 128, not
            32: with 32 the recall of new queries at the calibrated setting ranged 0.949–0.973
            over four seeds (synthetic, 10⁴ rows, helpful, target 0.97), with 128 0.962–0.976
            (``bench/index_calibration.py``).
        calibration_k: the ``k`` of that recall.
        train_size: rows of the seeded sample the quantiser is trained on (the default holds
            39 rows for each of :data:`MAX_NLIST` cells).
        seed: sampling and k-means seed.
    """

    kind: str = "ivf-pq"
    nlist: int | None = None
    pq_bytes: int | None = None
    hnsw_m: int = 32
    metric: str = "ip"
    nprobe: int = 32
    rerank: int = 10
    refine: str = "sq8"
    target_recall: float = 0.97
    calibration_queries: int = 128
    calibration_k: int = 100
    train_size: int = 159_744
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise InputError(f"unknown index kind {self.kind!r}; choose from {INDEX_KINDS}")
        if self.metric not in INDEX_METRICS:
            raise InputError(f"unknown metric {self.metric!r}; choose from {INDEX_METRICS}")
        if self.refine not in REFINE_KINDS:
            raise InputError(f"unknown refine {self.refine!r}; choose from {tuple(REFINE_KINDS)}")
        for name in ("hnsw_m", "nprobe", "train_size", "calibration_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        for name in ("nlist", "pq_bytes"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InputError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("rerank", "calibration_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a non-negative int, got {value!r}")
        if not (isinstance(self.target_recall, (int, float)) and 0 < self.target_recall <= 1):
            raise InputError(f"target_recall must lie in (0, 1], got {self.target_recall!r}")

    def factory(self, n: int, dim: int) -> str:
        """The FAISS ``index_factory`` description for ``n`` vectors of ``dim``."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        cap = min(MAX_NLIST, min(n, self.train_size) // 39)
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), cap))
        if self.kind == "ivf-flat":
            return f"IVF{nlist},Flat"
        if self.kind == "ivf-sq8":
            return f"IVF{nlist},SQ8"
        codes = 2 * self.pq_bytes if self.pq_bytes else max(2, dim // 4)
        if dim % codes:
            raise InputError(
                f"pq_bytes={codes // 2} holds {codes} 4-bit codes, which must divide the vector "
                f"dimension {dim}"
            )
        return f"IVF{nlist},PQ{codes}x4fs" + refine_factory(self.refine)


def _fitted(estimator: CheckpointSum) -> FeatureStore:
    if estimator.train is None:
        raise InputError(f"{type(estimator).__name__} is not fitted: call fit(train_store) first")
    return estimator.train


def _signature(estimator: CheckpointSum) -> str:
    """What the indexed training vectors depend on: the estimator's settings (not where or in
    what blocks it computes)."""
    settings = {k: v for k, v in estimator.describe().items() if k not in ("device", "block_size")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _store_digest(store: FeatureStore) -> str:
    text = json.dumps({"ids": list(store.ids), "spec": store.spec.to_json()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class InfluenceIndex:
    """A FAISS index over an estimator's training vectors (see the module docstring)."""

    def __init__(
        self, index: Any, estimator: CheckpointSum, config: IndexConfig, info: dict[str, Any]
    ) -> None:
        self.index, self.estimator, self.config, self.info = index, estimator, config, info

    # ---- build ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls, estimator: CheckpointSum, config: IndexConfig | None = None, progress: bool = False
    ) -> InfluenceIndex:
        """Index the training vectors of a fitted ``estimator``: one streamed pass for their
        norms (approximate kinds), a seeded sample to train IVF quantisers, one pass to add."""
        faiss = _faiss()
        config = config or IndexConfig()
        if not isinstance(estimator, CheckpointSum):
            raise InputError(f"{type(estimator).__name__} scores are not inner products")
        train = _fitted(estimator)
        n = train.n_examples
        checkpoints = [c for c, _ in estimator.checkpoint_weights(train)]
        scales = estimator.train_scales()
        dim = train.feature_dim * len(checkpoints)
        steps = -(-n // ADD_ROWS)

        def vectors(rows: np.ndarray, parts: list[np.ndarray] | None = None) -> np.ndarray:
            parts = parts or [train.rows(c, rows) for c in checkpoints]
            return np.ascontiguousarray(estimator.train_vectors(parts, rows, scales), np.float32)

        def passed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            """``(rows, vectors)`` blocks in one sequential pass (its shards are not kept mapped,
            so the store does not stay in memory: 10⁷ × 256 fp16, 5 GB)."""
            for parts in zip(*(train.iter_blocks(c, ADD_ROWS) for c in checkpoints)):
                rows = np.arange(parts[0][0], parts[0][0] + len(parts[0][1]))
                yield rows, vectors(rows, [block for _, block in parts])

        # metric "l2": L2 neighbours of [x, sqrt(R² − ‖x‖²)] are the largest inner products
        # with [q, 0] (Bachrach et al. 2014); approximate kinds pad to a multiple of 16 columns
        # (product quantisers split them evenly)
        lifted = config.kind != "flat" and config.metric == "l2"
        radius = 0.0
        if lifted:
            for _, block in tqdm(passed(), desc="index[norms]", total=steps, disable=not progress):
                radius = max(radius, float(np.linalg.norm(block, axis=1).max()))
        width = dim if config.kind == "flat" else -(-(dim + lifted) // 16) * 16
        metric = faiss.METRIC_L2 if lifted else faiss.METRIC_INNER_PRODUCT
        description = config.factory(n, width)
        index = faiss.index_factory(width, description, metric)
        augment = Augmentation(dim, width, radius, lifted)
        if not index.is_trained:
            rng = np.random.default_rng(config.seed)
            sample = np.sort(rng.choice(n, size=min(n, config.train_size), replace=False))
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            ivf.cp.seed = config.seed  # the coarse k-means
            if hasattr(ivf, "do_polysemous_training"):
                ivf.do_polysemous_training = False  # the factory's default: minutes, unused here
            index.train(augment.train(vectors(sample)))
        probe, exact = None, None
        if config.kind != "flat" and config.calibration_queries:
            rng = np.random.default_rng([config.seed, 1])
            chosen = np.sort(rng.choice(n, size=min(n, config.calibration_queries), replace=False))
            probe = estimator.query_vectors([train.rows(c, chosen) for c in checkpoints])
            exact = TopKAccumulator(len(chosen), n, min(config.calibration_k, n))
        for rows, block in tqdm(
            passed(), desc=f"index[{config.kind}]", total=steps, disable=not progress
        ):
            index.add(augment.train(block))
            if exact is not None:  # the calibration queries' exact scores, from the same pass
                exact.add(0, int(rows[0]), probe @ block.T)
        shards = [
            train.shard_path(c, start) for c in checkpoints for start, _ in train.shard_ranges()
        ]
        info = {
            "factory": description,
            "dim": dim,
            "width": width,
            "radius": radius,
            "lifted": lifted,
            "n": n,
            "checkpoints": checkpoints,
            "train_store": os.path.abspath(train.root),
            "store_digest": _store_digest(train),
            "estimator": estimator.describe(),
            "signature": _signature(estimator),
            "checked_shards": checked_states(shards),
        }
        built = cls(index, estimator, config, info)
        if exact is not None:
            built.info["calibration"] = built._calibrate(probe, exact.result([], [], "", {}))
        return built

    def _calibrate(self, probe: np.ndarray, exact: TopScores) -> dict[str, Any]:
        """Per direction, the ``(nprobe, rerank)`` with which the probe queries find
        ``target_recall`` of their exact top-k, and the recall found there (which settings
        are tried: :func:`~infscope.index.calibration.calibrated_setting`)."""
        ivf, config = faiss_ivf(self.index), self.config
        scales = self.estimator.train_scales() if config.rerank else None
        result: dict[str, Any] = {
            "queries": len(probe),
            "k": exact.k,
            "target": config.target_recall,
        }
        for direction in DIRECTIONS:
            result[direction] = self._calibrate_direction(probe, exact, direction, ivf, scales)
        return result

    def _calibrate_direction(self, probe, exact: TopScores, direction: str, ivf, scales) -> dict:
        """:meth:`_calibrate` for one direction."""
        config, curve = self.config, {}

        def recall_at(nprobe: int | None, rerank: int) -> float:
            if f"{nprobe}/{rerank}" not in curve:  # a few queries at a time: ~32 MiB re-scored
                fetch = min(self.info["n"], exact.k * max(rerank, 1))
                rescored = refined_count(self.index, fetch, exact.k, rerank)
                step = max(1, RESCORE_VALUES // (rescored * self.info["dim"]))
                found = np.concatenate([
                    self._search_vectors(part, direction, exact.k, nprobe, rerank, scales)[1]
                    for part in np.array_split(probe, range(step, len(probe), step))
                ])  # fmt: skip
                curve[f"{nprobe}/{rerank}"] = rows_recall(found, exact.arrays[direction])
            return curve[f"{nprobe}/{rerank}"]

        nprobe, rerank = None if ivf is None else min(config.nprobe, ivf.nlist), config.rerank
        if ivf is not None:
            nprobe, rerank = calibrated_setting(
                recall_at, nprobe, rerank, ivf.nlist, config.target_recall
            )
        recall = recall_at(nprobe, rerank)
        return {"nprobe": nprobe, "rerank": rerank, "recall": recall, "curve": curve}

    @property
    def calibration(self) -> dict[str, Any] | None:
        """What the build measured: per direction the calibrated ``nprobe`` and ``rerank``,
        their recall on the calibration queries and the recall at each pair tried, keyed
        ``"nprobe/rerank"`` (``None``: not calibrated)."""
        return self.info.get("calibration")

    def nprobe_for(self, direction: str) -> int | None:
        """The cells a search in ``direction`` probes by default: the calibrated number, else
        the config's (``None`` for indexes without cells)."""
        if faiss_ivf(self.index) is None:
            return None
        calibrated = (self.calibration or {}).get(direction)
        return calibrated["nprobe"] if calibrated else self.config.nprobe

    def rerank_for(self, direction: str) -> int:
        """The re-scoring factor of a search in ``direction``: calibrated, else the config's."""
        calibrated = (self.calibration or {}).get(direction)
        return calibrated.get("rerank", self.config.rerank) if calibrated else self.config.rerank

    # ---- search -----------------------------------------------------------------------------

    def search(
        self,
        query: FeatureStore,
        k: int = 10,
        directions: tuple[str, ...] = DIRECTIONS,
        nprobe: int | None = None,
        rerank: int | None = None,
    ) -> TopScores:
        """Each query's ``k`` most helpful and/or most harmful training examples. Candidates
        come from the index, in each direction's calibrated number of cells unless ``nprobe``
        is given; with ``rerank > 0`` (default from the config) ``rerank × k`` of them are
        re-scored exactly, so the scores returned are exact. The metadata say whether the
        result is approximate and what recall the build measured at these settings."""
        estimator, train = self.estimator, _fitted(self.estimator)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        unknown = set(directions) - set(DIRECTIONS)
        if unknown or not directions:
            raise InputError(f"directions must be 'helpful' and/or 'harmful', got {directions}")
        estimator.check_query(query)
        estimator.check_weights(query)
        k = min(k, train.n_examples)
        probes = {d: nprobe or self.nprobe_for(d) for d in directions}
        reranks = {d: self.rerank_for(d) if rerank is None else rerank for d in directions}
        fetch = min(train.n_examples, k * max(*reranks.values(), 1))
        rescored = refined_count(self.index, fetch, k, max(reranks.values()))
        checkpoints = self.info["checkpoints"]
        scales = estimator.train_scales() if any(reranks.values()) else None
        # queries per step: the re-scored candidates' float64 vectors stay within ~32 MiB
        step = max(
            1,
            min(
                estimator.rows_per_block(self.info["dim"]),
                RESCORE_VALUES // (rescored * self.info["dim"]),
            ),
        )
        arrays: dict[str, list[np.ndarray]] = {}
        for start in range(0, query.n_examples, step):
            rows = np.arange(start, min(start + step, query.n_examples))
            vectors = estimator.query_vectors([query.rows(c, rows) for c in checkpoints])
            for direction in directions:
                values, candidates = self._search_vectors(
                    vectors, direction, k, probes[direction], reranks[direction], scales
                )
                arrays.setdefault(direction, []).append(candidates.astype(np.int64))
                arrays.setdefault(f"{direction}_values", []).append(values.astype(np.float32))
        result = {name: np.concatenate(parts) for name, parts in arrays.items()}
        if (result[directions[0]] < 0).any():
            raise InputError(
                "the index returned fewer candidates than asked for: raise nprobe (or build with "
                "fewer cells)"
            )
        metadata = {
            **estimator.describe(),
            "index": self.info["factory"],
            "nprobe": probes,
            "rerank": reranks,
            "approximate": self.config.kind != "flat",
            "training_examples": train.n_examples,
            "expected_recall": self.expected_recall(probes, reranks),
            "train_store": self.info["train_store"],
            "query_store": os.path.abspath(query.root),
        }
        # the store's id list itself, not a copy: copying 10⁷ ids costs more than the search
        return TopScores(list(query.ids), train.ids, estimator.name, result, metadata)

    def expected_recall(
        self, probes: dict[str, int | None], reranks: dict[str, int]
    ) -> dict[str, float] | None:
        """Per direction, the recall@k the build measured at ``probes[direction]`` cells and
        ``reranks[direction]`` (1.0 for the exact ``flat`` index; ``None`` where nothing was
        measured at that setting)."""
        if self.config.kind == "flat":
            return dict.fromkeys(probes, 1.0)
        calibration = self.calibration or {}
        measured = {
            d: calibration[d]["curve"].get(f"{p}/{reranks[d]}")
            for d, p in probes.items()
            if d in calibration
        }
        return {d: r for d, r in measured.items() if r is not None} or None

    def _search_vectors(
        self,
        vectors: np.ndarray,
        direction: str,
        k: int,
        nprobe: int | None,
        rerank: int,
        scales: list[np.ndarray | None] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, training rows)`` ``[m, k]`` of query ``vectors`` in ``direction``, best
        first: largest scores (helpful) or smallest (harmful)."""
        n, info = self.info["n"], self.info
        fetch = min(n, k * max(rerank, 1))
        ivf = faiss_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = nprobe or self.config.nprobe
        if hasattr(self.index, "hnsw"):  # the graph search must hold at least the candidates
            self.index.hnsw.efSearch = max(fetch, 64)
        augment = Augmentation(info["dim"], info["width"], info["radius"], info["lifted"])
        signed = vectors if direction == "helpful" else -vectors
        asked = ask_refined(self.index, fetch, k, rerank)  # the codes still propose `fetch`
        found, candidates = self._candidates(augment.query(signed), asked, k, ivf)
        if rerank:
            found, candidates = exact_top_k(
                self.estimator, info["checkpoints"], signed, candidates, k, scales
            )
        else:
            found = augment.inner_products(signed, found)[:, :k]
            candidates = candidates[:, :k]
        return (found if direction == "helpful" else -found), candidates

    def _candidates(
        self, queries: np.ndarray, fetch: int, k: int, ivf: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The index's ``fetch`` nearest for each query; a query whose probed cells hold fewer
        than ``k`` vectors (small or uneven cells) is searched again with twice the cells, up to
        all of them, so every query gets ``k`` results."""
        found, candidates = split_search(self.index, ivf, queries, fetch) or self.index.search(
            queries, fetch
        )
        short = np.flatnonzero((candidates >= 0).sum(axis=1) < k)
        if ivf is None or not short.size:
            return found, candidates
        base = ivf.nprobe
        try:
            while short.size and ivf.nprobe < ivf.nlist:
                ivf.nprobe = min(2 * ivf.nprobe, ivf.nlist)
                found[short], candidates[short] = self.index.search(queries[short], fetch)
                short = short[(candidates[short] >= 0).sum(axis=1) < k]
        finally:
            ivf.nprobe = base
        return found, candidates

    # ---- persistence ------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """``index.faiss`` (FAISS's binary format) then ``index.json``, each atomically."""
        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # streamed to the file: no second in-memory copy of the (refine copy's) gigabytes
        write_atomic(
            directory / INDEX_FILE,
            lambda h: faiss.write_index(self.index, faiss.PyCallbackIOWriter(h.write)),
        )
        meta = {"format": FORMAT, "config": asdict(self.config), **self.info}
        text = json.dumps(meta, default=str).encode()
        write_atomic(directory / META_FILE, lambda h: h.write(text))
        return directory

    @classmethod
    def load(cls, directory: str | Path, estimator: CheckpointSum) -> InfluenceIndex:
        """Reopen a saved index for ``estimator``, which must be fitted on the same training
        store with the same settings (else the indexed vectors would not be its own)."""
        faiss = _faiss()
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            (directory / INDEX_FILE).stat()
        except (OSError, ValueError) as err:
            raise InputError(f"{directory} holds no readable index: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(
                f"{directory} is not an infscope index of this version (rebuild it with "
                "`infscope index`)"
            )
        train = _fitted(estimator)
        if meta["store_digest"] != _store_digest(train):
            raise StoreMismatchError(
                f"the index at {directory} was built over another training store "
                f"({meta['train_store']}) than the estimator's ({train.root})"
            )
        if meta["signature"] != _signature(estimator):
            raise StoreMismatchError(
                f"the index at {directory} was built with other estimator settings: "
                f"{meta['estimator']}; fit the estimator the same way"
            )
        try:  # read in blocks, not as one more copy in memory
            with (directory / INDEX_FILE).open("rb") as handle:
                index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        except (OSError, RuntimeError) as err:
            raise InputError(f"{directory / INDEX_FILE}: not a FAISS index ({err})") from None
        if index.ntotal != meta["n"] or index.d != meta["width"]:
            raise InputError(f"{directory / INDEX_FILE} does not match {META_FILE}")
        check_refine(index, meta["factory"], meta["n"], str(directory / INDEX_FILE))
        # shards of this training store checked at build time and unchanged since: not re-hashed
        own = {
            str(train.shard_path(c, start))
            for c in meta["checkpoints"]
            for start, _ in train.shard_ranges()
        }
        trust_checked({p: s for p, s in meta.get("checked_shards", {}).items() if p in own})
        config = IndexConfig(**meta["config"])
        info = {k: v for k, v in meta.items() if k not in ("format", "config")}
        return cls(index, estimator, config, info)


def faiss_ivf(index: Any) -> Any:
    """The inverted file inside ``index`` (whose ``nprobe`` is set), or ``None``."""
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:  # flat and graph indexes have none
        return None
