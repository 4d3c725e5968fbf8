"""What a user needs to trust a selection, in text and one figure.

:func:`diagnose` reports, for any :class:`~infscope.selection.Selection` of a
:class:`~infscope.selection.Pool`:

* **composition**: counts and shares per value of every tag (task, label, source), pool against
  selection, and the majority-label share per task (:func:`~infscope.selection.label_skew`);
* **scores**: the distribution of the selector's score (``pool.scores``, else the mean influence
  over the queries) among the picks and among the rest;
* **coverage**: the share of k-means clusters of the pool's feature space (``features``, else
  ``pool.features``) that the selection hits, against the share a random subset of the same size
  hits in expectation, and the share of the pool that lives in hit clusters;
* **near-duplicates**: the share of picks whose nearest other pick has cosine similarity at least
  ``duplicate_threshold`` (and, with texts, the share of picks whose normalised text another pick
  repeats), against a random subset of the same size;
* **label noise**: with an influence matrix and target features, the share of picks whose label
  pulls against their nearest targets, against the pool's
  (:func:`~infscope.selection.label_noise.noise_in_picks`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infscope.errors import InputError
from infscope.plotting import saved_figure
from infscope.selection.balance import LabelSkew, label_skew
from infscope.selection.bandit import cluster_features
from infscope.selection.base import Pool, Selection
from infscope.selection.label_noise import NoiseEstimate, noise_in_picks


@dataclass(frozen=True)
class ScoreSummary:
    """Quantiles (10%, 50%, 90%) and mean of a score among the picks and among the rest."""

    name: str
    selected: tuple[float, float, float, float]
    rest: tuple[float, float, float, float]


@dataclass(frozen=True)
class Coverage:
    """Share of the ``n_clusters`` k-means clusters the selection hits, what a random subset of
    the same size hits in expectation, and the pool share in hit clusters."""

    n_clusters: int
    hit: float
    random_hit: float
    pool_share_covered: float


@dataclass(frozen=True)
class Duplicates:
    """Share of picks with a near-duplicate (cosine >= ``threshold``) among the other picks, the
    same for a random subset of the same size, and the exact-text rates (None without texts)."""

    threshold: float
    selected: float
    random: float
    text_selected: float | None = None
    text_random: float | None = None


@dataclass
class SelectionReport:
    """The diagnostics of one selection (see the module docstring); :meth:`text` and
    :meth:`plot` render them."""

    method: str
    n_pool: int
    n_selected: int
    counts: dict[str, dict[str, tuple[int, int]]]
    skew: LabelSkew | None
    scores: ScoreSummary | None
    coverage: Coverage | None
    duplicates: Duplicates | None
    noise: NoiseEstimate | None = None
    _values: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def text(self, max_values: int = 12) -> str:
        """A plain-text report (tags with more than ``max_values`` values: the most changed)."""
        lines = [f"{self.method}: {self.n_selected} of {self.n_pool} selected"]
        for tag, counts in self.counts.items():
            lines.append(f"  {tag}: pool -> selected (share of the pool -> of the selection)")
            change = {
                k: abs(a / max(self.n_selected, 1) - b / self.n_pool)
                for k, (b, a) in counts.items()
            }
            shown = sorted(counts, key=lambda k: -change[k])[:max_values]
            for key in sorted(shown):
                before, after = counts[key]
                lines.append(
                    f"    {key}: {before} -> {after}, {before / self.n_pool:.1%} -> "
                    f"{after / max(self.n_selected, 1):.1%}"
                )
            if len(counts) > len(shown):
                lines.append(f"    ... {len(counts) - len(shown)} more values")
        if self.skew is not None and self.skew.groups:
            scope = f" within {self.skew.within}" if self.skew.within else ""
            lines.append(
                f"  most frequent {self.skew.by}'s share{scope}: pool {self.skew.pool_share:.2f}"
                f" -> selected {self.skew.selected_share:.2f}"
            )
            warning = self.skew.warning()
            if warning:
                lines.append(f"  warning: {warning}")
        if self.scores is not None:
            fmt = lambda q: ", ".join(f"{v:.4g}" for v in q)  # noqa: E731
            lines.append(
                f"  {self.scores.name} (10%, 50%, 90%, mean): selected {fmt(self.scores.selected)}"
                f"; rest {fmt(self.scores.rest)}"
            )
        if self.coverage is not None:
            c = self.coverage
            lines.append(
                f"  coverage: {c.hit:.0%} of {c.n_clusters} k-means clusters hit (random subset "
                f"of the same size: {c.random_hit:.0%}); hit clusters hold "
                f"{c.pool_share_covered:.0%} of the pool"
            )
        if self.duplicates is not None:
            d = self.duplicates
            line = (
                f"  near-duplicates (cosine >= {d.threshold:g}): {d.selected:.1%} of the picks "
                f"(random subset: {d.random:.1%})"
            )
            if d.text_selected is not None:
                line += f"; repeated texts {d.text_selected:.1%} (random {d.text_random:.1%})"
            lines.append(line)
        if self.noise is not None:
            lines.append(f"  {self.noise.text()}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """One figure: shares of the first tag and majority-label shares per group (pool vs
        selection), the score distribution of picks vs rest, and cluster shares with the
        coverage and duplicate rates in the titles."""
        with saved_figure(path, figsize=(11, 7.5), grid=(2, 2)) as axes:
            self._plot_tag(axes[0, 0])
            self._plot_skew(axes[0, 1])
            self._plot_scores(axes[1, 0])
            self._plot_clusters(axes[1, 1])
        return Path(path)

    def _bars(self, axis, names, before, after, ylabel: str) -> None:
        x = np.arange(len(names))
        axis.bar(x - 0.2, before, 0.4, label="pool", color="lightgray")
        axis.bar(x + 0.2, after, 0.4, label=self.method)
        axis.set_xticks(x, names, rotation=45 if len(names) > 5 else 0, ha="right", fontsize=8)
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)

    def _plot_tag(self, axis) -> None:
        if not self.counts:
            axis.set_axis_off()
            axis.set_title("no tags")
            return
        tag, counts = next(iter(self.counts.items()))
        names = list(counts)[:30]
        before = [counts[k][0] / self.n_pool for k in names]
        after = [counts[k][1] / max(self.n_selected, 1) for k in names]
        self._bars(axis, names, before, after, f"share by {tag}")

    def _plot_skew(self, axis) -> None:
        if self.skew is None or not self.skew.groups:
            axis.set_axis_off()
            axis.set_title("no label tag")
            return
        names = list(self.skew.groups)
        before = [self.skew.groups[g][0] for g in names]
        after = [self.skew.groups[g][1] for g in names]
        self._bars(axis, names, before, after, f"most frequent {self.skew.by}'s share")

    def _plot_scores(self, axis) -> None:
        if self.scores is None:
            axis.set_axis_off()
            axis.set_title("no scores")
            return
        picked, rest = self._values["selected_scores"], self._values["rest_scores"]
        bins = np.histogram_bin_edges(np.concatenate([picked, rest]), bins=40)
        axis.hist(rest, bins=bins, density=True, alpha=0.5, color="gray", label="rest")
        axis.hist(picked, bins=bins, density=True, alpha=0.6, label="selected")
        axis.set_xlabel(self.scores.name)
        axis.set_ylabel("density")
        axis.legend(fontsize=8)

    def _plot_clusters(self, axis) -> None:
        if self.coverage is None:
            axis.set_axis_off()
            axis.set_title("no features: no coverage")
            return
        pool_share, picked_share = self._values["cluster_pool"], self._values["cluster_selected"]
        order = np.argsort(-pool_share)
        x = np.arange(len(order))
        axis.bar(x, pool_share[order], color="lightgray", label="pool")
        axis.plot(x, picked_share[order], "o", ms=3, label=self.method)
        axis.set_xlabel("k-means cluster (by pool share)")
        axis.set_ylabel("share")
        title = f"clusters hit {self.coverage.hit:.0%} (random {self.coverage.random_hit:.0%})"
        if self.duplicates is not None:
            title += (
                f"; near-dup {self.duplicates.selected:.1%} (random {self.duplicates.random:.1%})"
            )
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=8)


def expected_random_hits(sizes: np.ndarray, n: int, k: int) -> float:
    """Expected share of groups of ``sizes`` (summing to ``n``) that a uniform random subset of
    ``k`` hits: ``1 - C(n - size, k) / C(n, k)`` averaged over groups."""
    miss = []
    for size in sizes.tolist():
        if n - size < k:
            miss.append(0.0)
            continue
        log_miss = (
            math.lgamma(n - size + 1)
            - math.lgamma(n - size - k + 1)
            - math.lgamma(n + 1)
            + math.lgamma(n - k + 1)
        )
        miss.append(math.exp(log_miss))
    return float(1.0 - np.mean(miss))


def near_duplicate_rate(features: np.ndarray, threshold: float, block: int = 1024) -> float:
    """Share of rows whose most similar other row has cosine >= ``threshold``."""
    if len(features) < 2:
        return 0.0
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = (features / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    hits = 0
    for first in range(0, len(unit), block):
        sim = unit[first : first + block] @ unit.T
        rows = np.arange(sim.shape[0])
        sim[rows, first + rows] = -np.inf
        hits += int(np.count_nonzero(sim.max(axis=1) >= threshold))
    return hits / len(unit)


def repeated_text_rate(texts: list[str]) -> float:
    """Share of texts whose normalised form (lowercase, single spaces) another text repeats."""
    keys = [" ".join(t.lower().split()) for t in texts]
    counts = Counter(keys)
    return sum(counts[k] > 1 for k in keys) / max(len(keys), 1)


def diagnose(
    selection: Selection,
    pool: Pool,
    features: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    n_clusters: int = 50,
    duplicate_threshold: float = 0.95,
    seed: int = 0,
) -> SelectionReport:
    """The :class:`SelectionReport` of ``selection`` over ``pool`` (see the module docstring).

    ``features`` (``[n, d]``, e.g. sentence embeddings) defaults to ``pool.features``; ``scores``
    (``[n]``) to ``pool.scores`` or the mean of ``pool.influence`` over its rows. Without
    features there is no coverage and duplicate section; without scores no score section.
    ``seed`` fixes the k-means clustering and the random reference subset.
    """
    n, k = len(pool), len(selection)
    if k and (selection.indices.max() >= n or selection.indices.min() < 0):
        raise InputError(f"the selection's indices do not fit a pool of {n} candidates")
    counts = {tag: selection.counts(pool, tag) for tag in pool.tags}
    values: dict[str, np.ndarray] = {}
    mask = selection.mask(n)
    score_summary = None
    if scores is None:
        if pool.scores is not None:
            scores, score_name = pool.scores, "score"
        elif pool.influence is not None:
            scores, score_name = pool.influence.mean(axis=0), "mean influence"
    else:
        score_name = "score"
        scores = np.asarray(scores, dtype=float)
        if scores.shape != (n,):
            raise InputError(f"scores have shape {scores.shape}, expected ({n},)")
    if scores is not None and k:
        values["selected_scores"], values["rest_scores"] = scores[mask], scores[~mask]
        quant = lambda v: (*np.quantile(v, [0.1, 0.5, 0.9]).tolist(), float(v.mean()))  # noqa: E731
        rest = scores[~mask] if (~mask).any() else scores[mask]
        score_summary = ScoreSummary(score_name, quant(scores[mask]), quant(rest))
    features = pool.features if features is None else np.asarray(features, dtype=float)
    coverage = duplicates = None
    if features is not None and k:
        if features.shape[0] != n:
            raise InputError(f"features have {features.shape[0]} rows for {n} candidates")
        clusters = cluster_features(features, n_clusters, seed)
        n_arms = int(clusters.max()) + 1
        sizes = np.bincount(clusters, minlength=n_arms)
        picked = np.bincount(clusters[mask], minlength=n_arms)
        values["cluster_pool"], values["cluster_selected"] = sizes / n, picked / k
        coverage = Coverage(
            n_arms,
            float(np.mean(picked > 0)),
            expected_random_hits(sizes, n, k),
            float(sizes[picked > 0].sum() / n),
        )
        reference = np.random.default_rng(seed).choice(n, k, replace=False)
        text_rates: tuple[float | None, float | None] = (None, None)
        if pool.texts is not None:
            text_rates = (
                repeated_text_rate([pool.texts[i] for i in selection.indices]),
                repeated_text_rate([pool.texts[i] for i in reference]),
            )
        duplicates = Duplicates(
            duplicate_threshold,
            near_duplicate_rate(features[selection.indices], duplicate_threshold),
            near_duplicate_rate(features[reference], duplicate_threshold),
            *text_rates,
        )
    return SelectionReport(
        selection.method,
        n,
        k,
        counts,
        label_skew(pool, selection.indices),
        score_summary,
        coverage,
        duplicates,
        noise_in_picks(pool.influence, pool.features, pool.target_features, selection.indices),
        values,
    )
