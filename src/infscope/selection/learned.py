"""Learned influence: compute influence for a few percent of the pool, predict the rest.

Computing influence needs one gradient (a forward and backward pass of the real model) per
candidate; on a large pool that is the cost of influence-based selection. NN-CIFT (Agarwal et al.
2025) and MATES (Yu et al. 2024) train a small network on the influence of a probed sample and
let it score everything else from cheap features. :class:`InfluencePredictor` is that network: a
small MLP on per-example features (e.g. sentence embeddings), optionally paired with the features
of the query/target each score is about (NN-CIFT's pair input), trained on standardised scores.

The workflow::

    probed = sample_probe(len(pool), 0.05, seed=0, features=embeddings)   # which rows to compute
    computed = ...                                                          # influence of those rows
    predictor = InfluencePredictor().fit(embeddings[probed], computed)
    predictor.summary.validation_spearman                                   # held-out rank correlation
    scored = predictor.score_pool(pool, probed, computed)                   # Pool with every score
    selection = build_selector("top-k").select(scored, 0.15)

Scores keep infscope's sign (higher = more helpful); the predicted scores are on the scale of the
computed ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from infscope.errors import InputError, NonFiniteError
from infscope.selection.bandit import cluster_features
from infscope.selection.base import Pool, resolve_budget
from infscope.selection.similarity import proportional_quotas

if TYPE_CHECKING:
    import torch

#: standard deviations below this are treated as constant columns (not divided by)
_MIN_STD = 1e-8


@dataclass(frozen=True)
class PredictorConfig:
    """How the predictor is built and trained.

    ``hidden``: widths of the hidden layers (ReLU). ``epochs`` is the most training epochs;
    with ``validation`` > 0 that share of the probed rows (at least 5) is held out, training stops
    after ``patience`` epochs without a lower validation loss, and — with ``refit`` — the network
    is trained again on every probed row for the best epoch count (so few probes are not wasted on
    validation). ``min_probed``: fewer probed rows are an error, not a silently bad predictor.
    """

    hidden: tuple[int, ...] = (256, 64)
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    validation: float = 0.2
    patience: int = 30
    refit: bool = True
    min_probed: int = 20
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise InputError(f"hidden must list positive layer widths, got {self.hidden!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise InputError("epochs, batch_size and patience must be positive")
        if self.lr <= 0 or self.weight_decay < 0:
            raise InputError(
                f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if not 0 <= self.validation < 1:
            raise InputError(f"validation must lie in [0, 1), got {self.validation}")
        if self.min_probed < 2:
            raise InputError(f"min_probed must be at least 2, got {self.min_probed}")


@dataclass(frozen=True)
class FitSummary:
    """What :meth:`InfluencePredictor.fit` measured.

    ``validation_spearman``/``validation_mse`` are from the network trained without the held-out
    rows (MSE on standardised scores; ``None`` without a validation split) — an honest estimate
    of how well the predictor ranks unseen examples. ``best_epoch`` is the epoch count kept.
    """

    n_probed: int
    n_validation: int
    validation_spearman: float | None
    validation_mse: float | None
    best_epoch: int
    epochs_run: int
    refit: bool
    seconds: float


class InfluencePredictor:
    """A small MLP that predicts influence scores from cheap per-example features.

    ``fit(features, scores)`` learns from the probed examples; ``predict(features)`` scores any
    example. With ``queries`` (the features of the query or target each score is about: one
    vector for all rows, or one row per example), the input is the pair ``[x, q]`` — plus ``x * q``
    when both have the same width, the interaction a similarity-like influence depends on — so one
    predictor serves several targets. Inputs and scores are standardised with the probed rows'
    statistics; the loss is the mean squared error on standardised scores (a rank loss would
    match Spearman more directly, but MSE on z-scores is smooth, well-conditioned with a few
    hundred rows, and a monotone fit of the scores ranks them too).
    """

    def __init__(self, config: PredictorConfig | None = None) -> None:
        self.config = config or PredictorConfig()
        self.summary: FitSummary | None = None
        self._network: torch.nn.Module | None = None
        self._paired: bool = False
        self._width: tuple[int, int] = (0, 0)
        self._input_stats: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.ones(0))
        self._score_stats: tuple[float, float] = (0.0, 1.0)

    def fit(
        self,
        features: Any,
        scores: Any,
        queries: Any | None = None,
        groups: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> InfluencePredictor:
        """Train on ``features`` ``[n, d]`` of the probed examples and their computed ``scores``
        ``[n]``. ``groups`` keep rows together in the validation split (e.g. the example id when
        the same example appears with several queries, so validation rows are unseen examples);
        ``ids`` name examples in errors. Inputs are copied, never changed."""
        config = self.config
        x = _matrix("features", features)
        y = np.array(scores, dtype=np.float64)
        if y.shape != (len(x),):
            raise InputError(f"scores have shape {y.shape}, expected ({len(x)},): one per row")
        if ids is not None and len(ids) != len(x):
            raise InputError(f"{len(ids)} ids for {len(x)} rows")
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            names = [str(ids[i]) for i in bad] if ids is not None else None
            raise NonFiniteError(
                f"{bad.size} computed score(s) are NaN or inf (rows {bad[:5].tolist()})",
                bad.tolist(),
                names,
            )
        if len(x) < config.min_probed:
            raise InputError(
                f"{len(x)} probed examples, need at least {config.min_probed} to learn from "
                "(probe more of the pool, or lower PredictorConfig.min_probed)"
            )
        self._paired = queries is not None
        self._width = (x.shape[1], 0 if queries is None else _queries(queries, len(x)).shape[1])
        inputs = self._inputs(x, queries)
        mean, std = inputs.mean(axis=0), inputs.std(axis=0)
        self._input_stats = (mean, np.where(std > _MIN_STD, std, 1.0))
        y_mean, y_std = float(y.mean()), float(y.std())
        self._score_stats = (y_mean, y_std if y_std > _MIN_STD else 1.0)
        z = (inputs - self._input_stats[0]) / self._input_stats[1]
        target = (y - self._score_stats[0]) / self._score_stats[1]

        started = time.perf_counter()
        rng = np.random.default_rng(config.seed)
        held = _validation_rows(len(x), config.validation, groups, rng)
        spearman = mse = None
        if held.size:
            kept = np.setdiff1d(np.arange(len(x)), held)
            network, best_epoch, epochs_run, mse = self._train(
                z[kept], target[kept], config.epochs, (z[held], target[held])
            )
            spearman = _spearman(target[held], self._forward(network, z[held]))
            if config.refit:
                network = self._train(z, target, best_epoch, None)[0]
        else:
            network, best_epoch, epochs_run, _ = self._train(z, target, config.epochs, None)
        self._network = network
        self.summary = FitSummary(
            n_probed=len(x),
            n_validation=int(held.size),
            validation_spearman=spearman,
            validation_mse=mse,
            best_epoch=best_epoch,
            epochs_run=epochs_run,
            refit=bool(held.size and config.refit),
            seconds=time.perf_counter() - started,
        )
        return self

    def predict(self, features: Any, queries: Any | None = None) -> np.ndarray:
        """Predicted scores ``[n]`` (on the computed scores' scale) for ``features`` ``[n, d]``,
        paired with ``queries`` when the predictor was fitted with them."""
        if self._network is None:
            raise InputError("the predictor is not fitted: call fit() on probed examples first")
        if (queries is not None) != self._paired:
            need = "needs" if self._paired else "was fitted without"
            raise InputError(f"this predictor {need} query features")
        x = _matrix("features", features)
        if x.shape[1] != self._width[0]:
            raise InputError(
                f"features have {x.shape[1]} columns, the predictor was fitted on {self._width[0]}"
            )
        if queries is not None and _queries(queries, len(x)).shape[1] != self._width[1]:
            raise InputError(f"query features must have {self._width[1]} columns")
        z = (self._inputs(x, queries) - self._input_stats[0]) / self._input_stats[1]
        return self._forward(self._network, z) * self._score_stats[1] + self._score_stats[0]

    def complete(
        self,
        features: Any,
        probed: Sequence[int] | np.ndarray,
        probed_scores: Any,
        queries: Any | None = None,
    ) -> np.ndarray:
        """A score for every row of ``features``: the computed ``probed_scores`` at the
        ``probed`` positions, predictions elsewhere."""
        x = _matrix("features", features)
        index = np.asarray(probed, dtype=np.int64)
        computed = np.asarray(probed_scores, dtype=np.float64)
        if computed.shape != index.shape or len(np.unique(index)) != index.size:
            raise InputError("give one computed score per probed position, no position twice")
        if index.size and (index.min() < 0 or index.max() >= len(x)):
            raise InputError(f"probed positions must lie in 0..{len(x) - 1}")
        scores = self.predict(x, queries)
        scores[index] = computed
        return scores

    def score_pool(
        self,
        pool: Pool,
        probed: Sequence[int] | np.ndarray,
        probed_scores: Any,
        queries: Any | None = None,
    ) -> Pool:
        """A copy of ``pool`` whose ``scores`` are :meth:`complete` on ``pool.features``: ready
        for any score-reading selector (``top-k``, ``softmax``, ``stratified``, ...)."""
        if pool.features is None:
            raise InputError("the pool has no features to predict scores from")
        scores = self.complete(pool.features, probed, probed_scores, queries)
        return dataclasses.replace(pool, scores=scores)

    def _inputs(self, x: np.ndarray, queries: Any | None) -> np.ndarray:
        if queries is None:
            return x
        q = _queries(queries, len(x))
        parts = [x, q, x * q] if q.shape[1] == x.shape[1] else [x, q]
        return np.concatenate(parts, axis=1)

    def _train(
        self,
        z: np.ndarray,
        target: np.ndarray,
        epochs: int,
        validation: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[torch.nn.Module, int, int, float | None]:
        """Train a fresh network (seeded) for at most ``epochs``; with ``validation``, stop early
        and return the best epoch's weights. Returns (network, best epoch, epochs run, best
        validation MSE)."""
        import torch

        from infscope.devices import resolve_device

        config = self.config
        device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            layers: list[torch.nn.Module] = []
            width = z.shape[1]
            for hidden in config.hidden:
                layers += [torch.nn.Linear(width, int(hidden)), torch.nn.ReLU()]
                width = int(hidden)
            network = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        inputs = torch.as_tensor(z, dtype=torch.float32, device=device)
        labels = torch.as_tensor(target, dtype=torch.float32, device=device)
        order_rng = torch.Generator().manual_seed(config.seed)
        best = (float("inf"), 0, None)
        epoch = 0
        for epoch in range(1, epochs + 1):
            network.train()
            for rows in torch.randperm(len(z), generator=order_rng).split(config.batch_size):
                rows = rows.to(device)
                loss = torch.nn.functional.mse_loss(network(inputs[rows]).squeeze(1), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if validation is None:
                continue
            predicted = self._forward(network, validation[0])
            mse = float(np.mean((predicted - validation[1]) ** 2))
            if mse < best[0]:
                state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                best = (mse, epoch, state)
            elif epoch - best[1] >= config.patience:
                break
        if validation is None:
            return network, epochs, epoch, None
        network.load_state_dict(best[2])
        return network, best[1], epoch, best[0]

    def _forward(self, network: torch.nn.Module, z: np.ndarray) -> np.ndarray:
        import torch

        network.eval()
        device = next(network.parameters()).device
        with torch.no_grad():
            out = network(torch.as_tensor(z, dtype=torch.float32, device=device))
        return out.squeeze(1).double().cpu().numpy()


def sample_probe(
    n: int,
    budget: int | float,
    seed: int = 0,
    features: Any | None = None,
    n_clusters: int = 20,
) -> np.ndarray:
    """Sorted positions of the ``budget`` (a count or a share of ``n``) examples whose influence
    to compute. Without ``features``: uniform at random. With ``features`` ``[n, d]``: stratified
    over ``n_clusters`` k-means clusters (each cluster gets its share of the pool, random inside),
    so small regions of the pool are probed too and the predictor sees all of it."""
    k = resolve_budget(budget, n)
    rng = np.random.default_rng(seed)
    if features is None:
        return np.sort(rng.choice(n, k, replace=False))
    x = _matrix("features", features)
    if len(x) != n:
        raise InputError(f"features have {len(x)} rows for a pool of {n}")
    clusters = cluster_features(x, min(n_clusters, k), seed)
    sizes = np.bincount(clusters)
    quotas = proportional_quotas(sizes.astype(float), sizes, k)
    picks = [
        rng.choice(np.flatnonzero(clusters == c), int(q), replace=False)
        for c, q in enumerate(quotas)
    ]
    return np.sort(np.concatenate(picks))


def _matrix(name: str, values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise InputError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise InputError(f"{name} contain NaN or inf in rows {bad[:5].tolist()}")
    return array


def _queries(queries: Any, n: int) -> np.ndarray:
    """Query features as ``[n, dq]`` (one vector is used for every row)."""
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim == 1:
        q = np.broadcast_to(q, (n, q.size))
    q = _matrix("queries", q)
    if len(q) != n:
        raise InputError(f"{len(q)} query rows for {n} examples: give one, or one per example")
    return q


def _validation_rows(
    n: int, share: float, groups: Sequence[Any] | None, rng: np.random.Generator
) -> np.ndarray:
    """Positions held out for early stopping: ``share`` of the rows (at least 5), whole groups
    at a time when ``groups`` are given; none when ``share`` is 0."""
    if share == 0:
        return np.zeros(0, dtype=np.int64)
    if groups is None:
        labels = np.arange(n)
    else:
        if len(groups) != n:
            raise InputError(f"{len(groups)} groups for {n} rows")
        labels = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    members = np.bincount(labels)
    want = max(5, int(round(share * n)))
    held_groups, count = [], 0
    for g in rng.permutation(len(members)):
        if count >= want:
            break
        held_groups.append(g)
        count += members[g]
    held = np.flatnonzero(np.isin(labels, held_groups))
    if n - held.size < 2:
        raise InputError(f"{n} rows are too few for a {share:.0%} validation split")
    return held


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else 0.0
