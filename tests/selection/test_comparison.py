import numpy as np
import pytest

from infscope.errors import InputError
from infscope.selection import compare_methods, seed_stats


def test_seed_stats():
    s = seed_stats([0.5, 0.6, 0.7])
    assert s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1) and s.n == 3
    assert s.format() == "60.0 ± 10.0"
    assert seed_stats([0.4]).std == 0.0
    with pytest.raises(InputError):
        seed_stats([])


def test_compare_methods_counts_wins_and_pairs_seeds():
    results = {
        "a": {"new": [0.80, 0.82, 0.81], "base": [0.70, 0.71, 0.72]},  # a clear win
        "b": {"new": [0.60, 0.70, 0.50], "base": [0.58, 0.69, 0.52]},  # within the noise
        "c": {"new": [0.40, 0.41, 0.42], "base": [0.50, 0.50, 0.51]},  # a clear loss
        "d": {"base": [0.1, 0.1, 0.1]},  # not compared
    }
    c = compare_methods(results, "new", "base")
    assert c.settings == ("a", "b", "c")
    assert c.wins == ("a", "b") and c.clear_wins == ("a",) and c.clear_losses == ("c",)
    per_seed = np.mean([results[s]["new"] for s in "abc"], 0) - np.mean(
        [results[s]["base"] for s in "abc"], 0
    )
    assert c.difference.mean == pytest.approx(per_seed.mean())
    assert c.beats_on_average == (per_seed.mean() > per_seed.std(ddof=1))
    assert "higher on 2/3 (not on c)" in c.text()
    with pytest.raises(InputError, match="no setting"):
        compare_methods(results, "new", "other")
    with pytest.raises(InputError, match="same number of seeds"):
        compare_methods({"a": {"x": [1, 2], "y": [1]}}, "x", "y")
