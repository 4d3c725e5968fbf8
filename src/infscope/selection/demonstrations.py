"""Demonstration selection: which ``k`` of a fixed set of labeled candidates to put in the prompt
for one test input.

Each strategy is a :class:`DemonstrationSelector` built over its candidates; ``select(query, k)``
returns a :class:`~infscope.selection.base.Selection` of candidate positions **in rank order, best
first** (``info["order"] == "rank"``). Prompts that place the most relevant demonstration next to
the test input (as vote-k's retrieval code does) use the reverse of that order.

* :class:`SimilarDemonstrations`: cosine nearest neighbours of the query embedding.
* :class:`BSRDemonstrations` and :class:`SetBSRDemonstrations` (Gupta et al. 2023, "Coverage-based
  Example Selection for In-Context Learning"): BERTScore-recall of the query's token embeddings
  by each candidate's, ranked independently, or greedily maximised as one set so that the
  demonstrations together cover every salient aspect of the query.
* :class:`InContextInfluence` (Nguyen & Wong 2023, "In-context Example Selection with
  Influences"): each candidate's effect on the LM's score, measured over random prompts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from infscope.errors import InputError
from infscope.selection.base import Pool, Selection, resolve_budget


class DemonstrationSelector(ABC):
    """Picks ``k`` demonstrations for one query from the candidates given at construction.

    ``ids`` name the candidates (their positions as strings by default). Subclasses set ``name``
    and implement :meth:`_select`, which returns positions in rank order and a reason per pick.
    """

    name: ClassVar[str]

    def __init__(self, n: int, ids: Sequence[str] | None = None) -> None:
        # Pool checks that ids are unique, non-empty strings
        self.ids: list[str] = list(Pool(ids=[str(i) for i in range(n)] if ids is None else ids).ids)
        if len(self.ids) != n:
            raise InputError(f"{len(self.ids)} ids for {n} candidates")

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, query: Any, k: int | float) -> Selection:
        """The best ``k`` candidates for ``query`` (a count, or a fraction of the candidates)."""
        count = resolve_budget(k, len(self))
        indices, reasons, info = self._select(query, count)
        return Selection(
            np.asarray(indices, dtype=np.int64),
            [self.ids[i] for i in indices],
            self.name,
            reasons=reasons,
            info={"order": "rank", **info},
        )

    @abstractmethod
    def _select(self, query: Any, k: int) -> tuple[list[int], list[str], dict[str, Any]]:
        """At most ``k`` positions, best first; one reason per pick; strategy-level info."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)})"


def _unit_rows(name: str, values: Any, dim: int | None = None) -> np.ndarray:
    """``values`` as a finite 2-D float array with rows scaled to unit length."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise InputError(f"{name} has dimension {array.shape[1]}, the candidates have {dim}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"{name} has an all-zero row: cosine similarity is undefined")
    return array / norms


class SimilarDemonstrations(DemonstrationSelector):
    """The ``k`` candidates whose embeddings are most cosine-similar to the query's (Liu et al.
    2022's KATE retrieval; vote-k's and IDEAL's prompt retrieval)."""

    name = "similar"

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str] | None = None) -> None:
        self.embeddings = _unit_rows("candidate embeddings", embeddings)
        super().__init__(len(self.embeddings), ids)

    def _select(self, query: Any, k: int) -> tuple[list[int], list[str], dict[str, Any]]:
        dim = self.embeddings.shape[1]
        q = _unit_rows("query embedding", np.atleast_2d(query), dim)
        if len(q) != 1:
            raise InputError(f"give one query embedding of dimension {dim}, got shape {q.shape}")
        cosine = self.embeddings @ q[0]
        order = np.argsort(-cosine, kind="stable")[:k].tolist()
        reasons = [f"cosine {cosine[i]:.4f} (rank {r + 1})" for r, i in enumerate(order)]
        return order, reasons, {}


def idf_weights(query_tokens: Sequence[int], corpus: Sequence[Sequence[int]]) -> np.ndarray:
    """BERTScore's idf weight of each query token: ``log((M + 1) / (df + 1))`` over ``M``
    reference token-id sequences, ``df`` counting the sequences that contain the token. Drop
    special tokens ([CLS], [SEP], BOS, ...) from the query first: BERTScore gives them weight 0."""
    if len(corpus) == 0:
        raise InputError("idf needs a non-empty corpus of token-id sequences")
    df: dict[int, int] = {}
    for tokens in corpus:
        for token in set(tokens):
            df[token] = df.get(token, 0) + 1
    total = len(corpus) + 1
    return np.array([math.log(total / (df.get(t, 0) + 1)) for t in query_tokens])


@dataclass
class TokenQuery:
    """A query for the coverage selectors: its token embeddings ``[t, d]`` and optionally one
    non-negative weight per token (e.g. :func:`idf_weights`; uniform when None)."""

    tokens: np.ndarray
    weights: np.ndarray | None = None


class _TokenCoverage(DemonstrationSelector):
    """Shared BERTScore-recall machinery over candidates given as token embeddings."""

    def __init__(
        self, token_embeddings: Sequence[np.ndarray], ids: Sequence[str] | None = None
    ) -> None:
        if isinstance(token_embeddings, np.ndarray) and token_embeddings.ndim != 3:
            raise InputError("token_embeddings must be one [tokens, dim] array per candidate")
        if len(token_embeddings) == 0:
            raise InputError("there are no candidates to select from")
        blocks = [
            _unit_rows(f"token embeddings of candidate {j}", tokens)
            for j, tokens in enumerate(token_embeddings)
        ]
        dims = {b.shape[1] for b in blocks}
        if len(dims) != 1:
            raise InputError(f"candidate token embeddings differ in dimension: {sorted(dims)}")
        self.tokens = np.concatenate(blocks)
        self.offsets = np.cumsum([0] + [len(b) for b in blocks[:-1]])
        super().__init__(len(blocks), ids)

    def token_similarity(self, query_tokens: np.ndarray) -> np.ndarray:
        """``[query tokens, candidates]``: each query token's best cosine match in each
        candidate."""
        q = _unit_rows("query token embeddings", query_tokens, self.tokens.shape[1])
        return np.maximum.reduceat(q @ self.tokens.T, self.offsets, axis=1)

    def recall(self, query_tokens: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Each candidate's BERTScore-recall of the query (``weights``, e.g. :func:`idf_weights`,
        make it idf-weighted)."""
        best = self.token_similarity(query_tokens)
        w = _token_weights(weights, len(best))
        return w @ best

    def _select(self, query: Any, k: int) -> tuple[list[int], list[str], dict[str, Any]]:
        if not isinstance(query, TokenQuery):
            query = TokenQuery(query)
        best = self.token_similarity(query.tokens)
        return self._pick(best, _token_weights(query.weights, len(best)), k)

    @abstractmethod
    def _pick(
        self, best: np.ndarray, w: np.ndarray, k: int
    ) -> tuple[list[int], list[str], dict[str, Any]]:
        """Select from per-token best matches ``best`` with normalised token weights ``w``."""


def _token_weights(weights: Any, n_tokens: int) -> np.ndarray:
    """Token weights normalised to sum to 1 (uniform when ``weights`` is None)."""
    if weights is None:
        return np.full(n_tokens, 1.0 / n_tokens)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_tokens,):
        raise InputError(f"{w.shape} token weights for {n_tokens} query tokens: give one each")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InputError("token weights must be finite, non-negative and not all zero")
    return w / w.sum()


class BSRDemonstrations(_TokenCoverage):
    """The ``k`` candidates with the highest BERTScore-recall (BSR) of the query: the weighted mean
    over query tokens of each token's best cosine match among the candidate's tokens. Ranked
    independently, so near-duplicates that cover the same part of the query can all be picked.

    ``select(query, k)`` takes the query's token embeddings ``[t, d]``, or a :class:`TokenQuery`
    that adds token weights (idf weighting)."""

    name = "bsr"

    def _pick(
        self, best: np.ndarray, w: np.ndarray, k: int
    ) -> tuple[list[int], list[str], dict[str, Any]]:
        score = w @ best
        order = np.argsort(-score, kind="stable")[:k].tolist()
        return order, [f"BSR {score[i]:.4f} (rank {r + 1})" for r, i in enumerate(order)], {}


class SetBSRDemonstrations(_TokenCoverage):
    """Set-BSR: the ``k`` candidates chosen greedily to maximise the recall of the query by the
    set as a whole, where each query token counts its best cosine match over all tokens of all
    selected candidates. The set objective is monotone submodular (a weighted facility location
    over query tokens), so greedy selection is within ``1 - 1/e`` of the best set, and a second
    demonstration is chosen for the query tokens the first one misses. Ties in gain go to the
    higher individual BSR, then the lower position.

    ``select(query, k)`` takes the same query as :class:`BSRDemonstrations`; ``info`` has the
    final ``set_bsr``."""

    name = "set-bsr"

    def _pick(
        self, best: np.ndarray, w: np.ndarray, k: int
    ) -> tuple[list[int], list[str], dict[str, Any]]:
        single = w @ best
        covered = np.full(len(best), -1.0)  # the lowest cosine: the empty set covers nothing
        taken = np.zeros(best.shape[1], dtype=bool)
        picks: list[int] = []
        reasons: list[str] = []
        for _ in range(k):
            gain = w @ (np.maximum(best, covered[:, None]) - covered[:, None])
            gain[taken] = -np.inf
            pick = int(np.lexsort((np.arange(len(gain)), -single, -gain))[0])
            covered = np.maximum(covered, best[:, pick])
            taken[pick] = True
            picks.append(pick)
            reasons.append(
                f"set recall gain {gain[pick]:.4f} -> set BSR {w @ covered:.4f} "
                f"(own BSR {single[pick]:.4f})"
            )
        return picks, reasons, {"set_bsr": float(w @ covered)}


LMScore = Callable[[list[int], Any], float]
"""``lm_score(demo_indices, query)``: how well the LM does on ``query`` when prompted with the
candidates at ``demo_indices``, in prompt order (first = farthest from the query). Higher = better:
e.g. the log-probability of the correct answer, or accuracy over a validation set."""


@dataclass
class InfluenceEstimate:
    """In-context influences from ``len(scores)`` scored random prompts.

    ``influence[i]``: mean score of prompts containing candidate ``i`` minus mean score of prompts
    without it. ``counts[i]``: prompts containing ``i``. ``prompts`` ``[n_prompts, m]`` and
    ``scores`` ``[n_prompts]``: what was run. ``position_influence[i, p]``: the same contrast
    restricted to prompts with ``i`` at position ``p`` (NaN where ``i`` never sat there).
    ``position_weight[p]``: least-squares slope of ``position_influence[:, p]`` on ``influence``
    — how strongly a demonstration's effect shows at position ``p`` (about 1 everywhere without a
    position effect; rising towards the last position under recency bias).
    """

    influence: np.ndarray
    counts: np.ndarray
    prompts: np.ndarray
    scores: np.ndarray
    position_influence: np.ndarray
    position_weight: np.ndarray


class InContextInfluence(DemonstrationSelector):
    """In-context influence (Nguyen & Wong 2023): run the LM on ``n_prompts`` random prompts of
    ``m`` distinct candidates each (in random order, from the selector's ``seed``), score each with
    ``lm_score``, and estimate each candidate's influence as the mean score of the prompts that
    contain it minus the mean of those that do not. :meth:`select` keeps the ``k`` most
    influential candidates — with ``positive_only`` (the default) only those that help, so fewer
    than ``k`` may come back; ``info`` carries the influence of every candidate.

    The query is passed to ``lm_score`` untouched: one test input, or a validation set whose
    accuracy ``lm_score`` reports (the paper's setting). Every candidate must be in some prompts
    and left out of others; about 20 or more appearances each (``n_prompts * m / n``) make the
    estimates usable.
    """

    name = "in-context-influence"

    def __init__(
        self,
        n_candidates: int,
        lm_score: LMScore,
        m: int = 4,
        n_prompts: int = 200,
        positive_only: bool = True,
        ids: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        for name, value in (("n_candidates", n_candidates), ("m", m), ("n_prompts", n_prompts)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name} must be a positive count, got {value!r}")
        if not m < n_candidates:
            raise InputError(
                f"prompts of m={m} from {n_candidates} candidates: m must be below the number of "
                "candidates, so that every candidate is also left out of some prompts"
            )
        if not callable(lm_score):
            raise InputError("lm_score must be a callable (demo_indices, query) -> float")
        super().__init__(int(n_candidates), ids)
        self.lm_score = lm_score
        self.m = int(m)
        self.n_prompts = int(n_prompts)
        self.positive_only = bool(positive_only)
        self.seed = int(seed)

    def prompts(self) -> np.ndarray:
        """``[n_prompts, m]``: the random prompts (candidate positions, in prompt order), the same
        for every query; an error when some candidate is in none or all of them."""
        n = len(self)
        rng = np.random.default_rng(self.seed)
        prompts = rng.random((self.n_prompts, n)).argsort(axis=1)[:, : self.m]
        counts = np.bincount(prompts.ravel(), minlength=n)
        for bad, where in ((counts == self.n_prompts, "all"), (counts == 0, "none")):
            if bad.any():
                which = np.flatnonzero(bad)
                shown = ", ".join(map(str, which[:5])) + (" ..." if len(which) > 5 else "")
                raise InputError(
                    f"{len(which)} candidates ({shown}) appear in {where} of the "
                    f"{self.n_prompts} prompts of {self.m}, so their influence cannot be "
                    f"estimated: raise n_prompts (about {math.ceil(20 * n / self.m)} gives each "
                    "candidate some 20 appearances)"
                )
        return prompts

    def estimate(self, query: Any) -> InfluenceEstimate:
        """Score every prompt on ``query`` and estimate the in-context influences."""
        prompts = self.prompts()
        scores = np.array([self._score(p.tolist(), query) for p in prompts])
        n, m = len(self), self.m
        member = np.zeros((len(prompts), n), dtype=bool)
        np.put_along_axis(member, prompts, True, axis=1)
        counts = member.sum(axis=0)
        absent_mean = (scores @ ~member) / (len(prompts) - counts)
        influence = (scores @ member) / counts - absent_mean
        position_influence = np.full((n, m), np.nan)
        for p in range(m):
            total = np.bincount(prompts[:, p], weights=scores, minlength=n)
            seen = np.bincount(prompts[:, p], minlength=n)
            there = seen > 0
            position_influence[there, p] = total[there] / seen[there] - absent_mean[there]
        position_weight = np.array([_slope(influence, position_influence[:, p]) for p in range(m)])
        return InfluenceEstimate(
            influence, counts, prompts, scores, position_influence, position_weight
        )

    def _select(self, query: Any, k: int) -> tuple[list[int], list[str], dict[str, Any]]:
        est = self.estimate(query)
        order = np.argsort(-est.influence, kind="stable")[:k]
        if self.positive_only:
            order = order[est.influence[order] > 0]
        reasons = [
            f"in-context influence {est.influence[i]:+.4g} (rank {r + 1}; in {est.counts[i]} of "
            f"{len(est.scores)} prompts)"
            for r, i in enumerate(order)
        ]
        info = {
            "m": self.m,
            "n_prompts": self.n_prompts,
            "mean_score": float(est.scores.mean()),
            "influence": est.influence,
            "position_weight": est.position_weight,
        }
        return order.tolist(), reasons, info

    def _score(self, demos: list[int], query: Any) -> float:
        value = self.lm_score(demos, query)
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(
                f"lm_score must return one real number, got {type(value).__name__} for the "
                f"prompt {demos}"
            )
        if not math.isfinite(value):
            raise InputError(f"lm_score returned {value} for the prompt {demos}: it must be finite")
        return float(value)

    def __repr__(self) -> str:
        return (
            f"InContextInfluence(n={len(self)}, m={self.m}, n_prompts={self.n_prompts}, "
            f"seed={self.seed})"
        )


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope through the origin of ``y`` on ``x`` over the rows where ``y`` is
    known (NaN when ``x`` is all zero there)."""
    known = np.isfinite(y)
    denominator = float(x[known] @ x[known])
    return float(x[known] @ y[known]) / denominator if denominator > 0 else float("nan")
