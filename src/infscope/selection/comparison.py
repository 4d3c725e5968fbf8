"""Compare selections after retraining: seed statistics, wins per setting and paired differences.

A selection method is judged by the metric of a model trained on its subset, with several seeds,
in several settings (target tasks, budgets). ``results[setting][method]`` holds one metric per
seed, the seeds in the same order for every method (seed ``s`` of two methods is a pair: same
training seed, same selection seed), so differences can be paired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infscope.errors import InputError

Results = Mapping[str, Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class SeedStats:
    """Mean and sample standard deviation (``ddof=1``; 0 for one seed) over seeds."""

    mean: float
    std: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"57.1 ± 1.2"`` (the metric times ``scale``)."""
        return f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"


def seed_stats(values: Sequence[float]) -> SeedStats:
    """:class:`SeedStats` of one method's per-seed metrics."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise InputError("seed_stats needs a non-empty list of per-seed values")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return SeedStats(float(array.mean()), std, int(array.size))


@dataclass(frozen=True)
class MethodComparison:
    """``method`` against ``baseline`` over the settings both were run in.

    ``wins``: settings where the method's mean is higher, ``losses`` the others (ties included);
    ``clear_wins``/``clear_losses``: higher/lower by more than the two methods' seed standard
    deviations combined (``sqrt(std_a² + std_b²)``). ``average`` is the per-seed mean over settings (the seeds paired), and
    ``difference`` the paired per-seed difference of those averages: the method beats the baseline
    on average by more than the seed noise when ``difference.mean > difference.std``.
    """

    method: str
    baseline: str
    settings: tuple[str, ...]
    wins: tuple[str, ...]
    clear_wins: tuple[str, ...]
    losses: tuple[str, ...]
    clear_losses: tuple[str, ...]
    average: SeedStats
    baseline_average: SeedStats
    difference: SeedStats

    @property
    def beats_on_average(self) -> bool:
        return self.difference.mean > max(self.difference.std, 0.0)

    def text(self, scale: float = 100.0) -> str:
        lost = f" (not on {', '.join(self.losses)})" if self.losses else ""
        return (
            f"{self.method} vs {self.baseline}: higher on {len(self.wins)}/{len(self.settings)}"
            f"{lost}, by more than the seed noise on {len(self.clear_wins)}, lower by more on "
            f"{len(self.clear_losses)}; average {self.average.format(scale)} vs "
            f"{self.baseline_average.format(scale)}, paired difference "
            f"{self.difference.format(scale)}"
        )


def compare_methods(results: Results, method: str, baseline: str) -> MethodComparison:
    """Compare ``method`` with ``baseline`` in every setting that has both (see the module)."""
    settings = tuple(s for s, r in results.items() if method in r and baseline in r)
    if not settings:
        raise InputError(f"no setting has results of both {method!r} and {baseline!r}")
    a = [np.asarray(results[s][method], dtype=float) for s in settings]
    b = [np.asarray(results[s][baseline], dtype=float) for s in settings]
    if any(len(x) != len(y) for x, y in zip(a, b)) or len({len(x) for x in a}) != 1:
        raise InputError("every setting needs the same number of seeds for both methods")
    wins, clear_wins, losses, clear_losses = [], [], [], []
    for s, x, y in zip(settings, a, b):
        sx, sy = seed_stats(x), seed_stats(y)
        gap, noise = sx.mean - sy.mean, float(np.hypot(sx.std, sy.std))
        (wins if gap > 0 else losses).append(s)
        if gap > noise:
            clear_wins.append(s)
        elif gap < -noise:
            clear_losses.append(s)
    per_seed_a, per_seed_b = np.mean(a, axis=0), np.mean(b, axis=0)
    return MethodComparison(
        method,
        baseline,
        settings,
        tuple(wins),
        tuple(clear_wins),
        tuple(losses),
        tuple(clear_losses),
        seed_stats(per_seed_a),
        seed_stats(per_seed_b),
        seed_stats(per_seed_a - per_seed_b),
    )
