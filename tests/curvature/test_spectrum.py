"""The spectrum rules on synthetic spectra with a known answer: the damping at which the damped
curvature resolves a share of ``min(n, D)`` directions, and the eigen budget that keeps a share
of the effective dimension."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infscope.curvature.budget import choose_budget, full_spectrum, sketch_refit_ranks
from infscope.curvature.eigenbasis import KroneckerBasis, ModuleBasis
from infscope.curvature.spectrum import (
    BUDGET_DAMPING_SHARE,
    BUDGET_SHARE,
    CONCENTRATED_DAMPING_SHARE,
    CONCENTRATED_MEDIAN,
    DAMPING_SHARE,
    EIGEN_DAMPING_SHARE,
    SpectrumBlock,
    damping_rule_line,
    effective_dimension,
    median_over_mean,
    spectrum_damping,
)
from infscope.errors import InputError


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 0.9])
def test_flat_spectrum_damping_has_its_closed_form(share):
    # D equal eigenvalues u: d(λ) = D u / (u + λ) = share D  ⇔  λ = u (1 − share) / share
    u, n = 3.0, 40
    choice = spectrum_damping([SpectrumBlock(np.full(n, u), unit=u)], share)
    assert choice.relative == pytest.approx((1 - share) / share, rel=1e-3)
    assert choice.effective_dimension == pytest.approx(share * n, rel=1e-3)
    # the default share puts λ at the midpoint: relative damping 1 on a flat spectrum
    assert spectrum_damping([SpectrumBlock(np.full(n, u), u)], DAMPING_SHARE).relative == (
        pytest.approx(1.0, rel=1e-3)
    )


def test_two_level_spectrum_puts_the_damping_between_the_levels():
    # 10 directions of 1 and 10 of 10⁻⁶: half resolved ⇔ λ far below 1, far above 10⁻⁶
    values = np.array([1.0] * 10 + [1e-6] * 10)
    choice = spectrum_damping([SpectrumBlock(values, 1.0)], 0.5)
    assert 1e-5 < choice.relative < 1e-1


def test_target_is_capped_by_the_examples_and_counts_equal_repeats():
    # 1000 directions but 50 examples: the rule aims at share × 50
    values = np.geomspace(1.0, 1e-6, 10)
    counts = np.full(10, 100)
    compact = spectrum_damping([SpectrumBlock(values, 1.0, counts)], 0.5, 50)
    expanded = spectrum_damping([SpectrumBlock(np.repeat(values, 100), 1.0)], 0.5, 50)
    assert compact.target == 25 and compact.directions == 1000
    assert compact.relative == pytest.approx(expanded.relative, rel=1e-6)
    assert spectrum_damping([SpectrumBlock(values, 1.0, counts)], 0.5).target == 500


def test_steeper_spectrum_gets_less_damping_and_units_scale_per_block():
    flat = spectrum_damping([SpectrumBlock(np.ones(100), 1.0)], 0.5)
    steep = spectrum_damping([SpectrumBlock(np.geomspace(1.0, 1e-8, 100), 1.0)], 0.5)
    assert steep.relative < flat.relative / 10
    # the same spectrum scaled by c with its unit scaled by c gets the same relative damping
    scaled = spectrum_damping([SpectrumBlock(7.0 * np.geomspace(1.0, 1e-8, 100), 7.0)], 0.5)
    assert scaled.relative == pytest.approx(steep.relative, rel=1e-3)
    blocks = [SpectrumBlock(np.ones(10), 1.0), SpectrumBlock(np.ones(10) * 5, 5.0)]
    assert effective_dimension(blocks, 1.0) == pytest.approx(10.0)


def test_spectrum_damping_refuses_bad_spectra():
    with pytest.raises(InputError, match="no positive eigenvalue"):
        spectrum_damping([SpectrumBlock(np.zeros(5), 1.0)], 0.5)
    with pytest.raises(InputError, match="NaN"):
        spectrum_damping([SpectrumBlock(np.array([1.0, np.nan]), 1.0)], 0.5)
    with pytest.raises(InputError, match="share"):
        spectrum_damping([SpectrumBlock(np.ones(5), 1.0)], 1.0)


def _module(name, s_values, a_values, rows=None, s_total=None, trace=1.0):
    rows = rows or len(s_values)
    s_vectors = np.eye(rows)[:, : len(s_values)]
    a_vectors = np.eye(len(a_values))
    return ModuleBasis(
        name,
        rows,
        len(a_values),
        True,
        trace,
        s_values=np.asarray(s_values, float),
        s_vectors=s_vectors,
        s_total=float(s_total if s_total is not None else np.sum(s_values)),
        a_values=np.asarray(a_values, float),
        a_vectors=a_vectors,
        a_total=float(np.sum(a_values)),
    )


def _basis(modules, n):
    return KroneckerBasis(modules, "empirical", ("w",), n, {})


def _outliers_and_bulk(outliers: int, bulk: int, ratio: float, unit: float = 1.0):
    """``outliers`` directions of 1 over a bulk of ``bulk`` directions ``ratio`` times smaller."""
    return SpectrumBlock(unit * np.r_[np.ones(outliers), np.full(bulk, ratio)], unit=unit)


def test_median_over_mean_has_its_closed_form():
    assert median_over_mean([SpectrumBlock(np.full(50, 3.0), unit=3.0)]) == pytest.approx(1.0)
    # 10 outliers of 1 over 990 of 10⁻³: median 10⁻³, mean (10 + 0.99) / 1000
    block = _outliers_and_bulk(10, 990, 1e-3)
    assert median_over_mean([block]) == pytest.approx(1e-3 / (10.99 / 1000))
    # counts are repeats, each block is read in its own unit, zero eigenvalues are not counted
    repeated = SpectrumBlock(np.array([1.0, 1e-3, 0.0]), unit=1.0, counts=np.array([10, 990, 7]))
    scaled = _outliers_and_bulk(10, 990, 1e-3, unit=250.0)
    assert median_over_mean([repeated]) == pytest.approx(median_over_mean([block]))
    assert median_over_mean([scaled, block]) == pytest.approx(median_over_mean([block]))
    with pytest.raises(InputError, match="no positive eigenvalue"):
        median_over_mean([SpectrumBlock(np.zeros(4), unit=1.0)])


def test_a_concentrated_spectrum_switches_to_the_concentrated_share():
    """Five outliers over a bulk 10⁵ times smaller (median/mean 0.002): the rule resolves
    ``CONCENTRATED_DAMPING_SHARE`` of the directions — a damping above the bulk — instead of
    ``EIGEN_DAMPING_SHARE``, which would put it far below; a broad spectrum keeps its share."""
    concentrated = [_outliers_and_bulk(5, 995, 1e-5)]
    assert median_over_mean(concentrated) < CONCENTRATED_MEDIAN
    choice = spectrum_damping(concentrated, EIGEN_DAMPING_SHARE, None, CONCENTRATED_DAMPING_SHARE)
    assert choice.concentrated and choice.share == CONCENTRATED_DAMPING_SHARE
    assert choice.effective_dimension == pytest.approx(CONCENTRATED_DAMPING_SHARE * 1000, rel=1e-3)
    assert choice.relative > 1e-4  # above the bulk: each bulk direction counts < 0.1
    plain = spectrum_damping(concentrated, EIGEN_DAMPING_SHARE)
    assert not plain.concentrated and plain.relative < 1e-5  # below the bulk
    assert choice.to_dict()["median_over_mean"] == pytest.approx(median_over_mean(concentrated))
    broad = [_outliers_and_bulk(100, 900, 0.2)]  # median/mean 0.2 / 0.28
    kept = spectrum_damping(broad, EIGEN_DAMPING_SHARE, None, CONCENTRATED_DAMPING_SHARE)
    assert not kept.concentrated and kept.share == EIGEN_DAMPING_SHARE
    assert kept.relative == spectrum_damping(broad, EIGEN_DAMPING_SHARE).relative
    with pytest.raises(InputError, match="concentrated share"):
        spectrum_damping(broad, 0.5, None, 1.0)


def test_damping_rule_line_says_what_was_chosen_and_why():
    concentrated = [_outliers_and_bulk(5, 995, 1e-5)]
    line = damping_rule_line(
        spectrum_damping(concentrated, 0.9, None, CONCENTRATED_DAMPING_SHARE).to_dict()
    )
    assert line.startswith("damping auto: relative λ = ")
    assert "resolving 1% of 1,000 directions (concentrated spectrum: median eigenvalue 0.002" in line
    plain = damping_rule_line(spectrum_damping(concentrated, 0.5).to_dict())
    assert plain.endswith("resolving 50% of 1,000 directions")
    capped = damping_rule_line(spectrum_damping(concentrated, 0.5, n_examples=200).to_dict())
    assert capped.endswith("resolving 50% of the 200 directions 200 examples determine (of 1,000)")


def test_budget_keeps_exactly_the_directions_above_the_damping():
    # two modules whose K-FAC spectrum holds 2×2 and 3×1 directions of equal size, the rest
    # 10⁻⁹ of it: the rule keeps those 4 + 3 features, whatever the modules' sizes
    tiny = [1e-9] * 8
    first = _module("a", [1, 1] + tiny, [1, 1] + tiny)
    second = _module("b", [1, 1, 1] + tiny, [1] + tiny)
    choice = choose_budget(_basis([first, second], n=7))
    assert choice.ranks == [(2, 2), (3, 1)]
    assert choice.dim == 7 and choice.kept_share > 0.99
    cut = _basis([first, second], n=7).truncate("auto")
    assert cut.feature_dim == 7 and cut.settings["budget"]["dim"] == 7
    assert cut.settings["truncated_to"] == 7


def test_budget_grows_with_a_flatter_spectrum():
    steep = _module("a", np.geomspace(1, 1e-6, 20), np.geomspace(1, 1e-6, 10))
    flat = _module("a", np.geomspace(1, 1e-1, 20), np.geomspace(1, 1e-1, 10))
    small = choose_budget(_basis([steep], n=100))
    large = choose_budget(_basis([flat], n=100))
    assert small.dim < large.dim <= 200
    assert min(small.kept_share, large.kept_share) >= 0.9


def test_explicit_budget_wins_and_a_sketched_side_warns():
    module = _module("a", np.geomspace(1, 1e-1, 20), np.geomspace(1, 1e-1, 10))
    assert _basis([module], n=100).truncate(12).feature_dim <= 12
    # one eigenvector of a 200-row side whose trace is mostly unresolved
    sketched = _module("a", [1.0], np.ones(10), rows=200, s_total=50.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice = choose_budget(_basis([sketched], n=1000))
    assert choice.kept_share < 0.1 and choice.full_rank_share < 0.1
    assert any("even at full rank" in str(w.message) for w in caught)
    assert choice.to_dict()["low_at_full_rank"]


def _head(held, tail):
    """A 200-row output side (4 equal input directions) of which ``held`` eigenvalues are
    resolved: 10 of 1, then the side's ``tail`` (190 values) in order."""
    return _module(
        "head",
        np.append(np.ones(10), tail[: held - 10]),
        np.ones(4),
        rows=200,
        s_total=10 + float(np.sum(tail)),
    )


def test_sketch_refit_rank_is_the_smallest_that_keeps_the_share_on_a_flat_tail():
    # the rule spreads the unresolved rest evenly: on a flat tail that is the truth, so the rank
    # it asks for is exactly the smallest whose held directions keep the budget's share
    tail = np.full(190, 0.05)
    rank = sketch_refit_ranks(_basis([_head(10, tail)], n=1000))[0]["out"]
    assert 10 < rank < 200
    assert sketch_refit_ranks(_basis([_head(rank, tail)], n=1000)) == {}
    assert sketch_refit_ranks(_basis([_head(rank - 1, tail)], n=1000)) == {0: {"out": rank}}
    # a lower share asks for fewer directions; a side held whole is never refit
    assert sketch_refit_ranks(_basis([_head(10, tail)], n=1000), share=0.5)[0]["out"] < rank
    assert sketch_refit_ranks(_basis([_head(200, tail)], n=1000)) == {}


def test_sketch_refit_rank_is_enough_on_a_decaying_tail():
    # the true tail decays, so its leading directions hold more than the even spread: the rank
    # asked for keeps at least the share, and a sketch whose rest is negligible is left alone
    tail = 0.2 * np.geomspace(1.0, 1e-3, 190)
    rank = sketch_refit_ranks(_basis([_head(10, tail)], n=1000))[0]["out"]
    assert sketch_refit_ranks(_basis([_head(rank, tail)], n=1000)) == {}
    # 40 examples resolve at most 40 directions: a tail of 10⁻⁹ lies far below that damping
    assert sketch_refit_ranks(_basis([_head(10, np.full(190, 1e-9))], n=40)) == {}


def test_auto_budget_travels_with_the_store_and_the_scores(tmp_path):
    """``ProjectionConfig("eigen", "auto")``: the store records the chosen k and kept share,
    ``store info`` prints them, EK-FAC rebuilds the same layout and its scores carry both
    choices; an explicit dim is what it says."""
    from infscope.attribution.kfac import EKFAC
    from infscope.curvature.basis_fit import fit_kronecker_basis
    from infscope.gradients import ProjectionConfig
    from infscope.store.summary import projection_lines
    from infscope.tasks import ClassificationTask
    from tests.attribution.conftest import IDENTITY, split_examples, stores, trained_mlp

    model, x, y = trained_mlp(80, 10)
    train, query = split_examples(x, y, 80)
    identity = stores(tmp_path / "identity", model, ClassificationTask(), train, query, IDENTITY)
    basis = fit_kronecker_basis(identity[0], train, progress=False)
    auto = ProjectionConfig("eigen", "auto", basis=basis)
    _, train_store, query_store = stores(
        tmp_path / "auto", model, ClassificationTask(), train, query, auto
    )
    budget = train_store.spec.projection["budget"]
    assert budget["dim"] == train_store.feature_dim < basis.feature_dim
    assert budget["kept_share"] >= budget["target_share"]
    assert any(
        line.startswith(f"budget: k = {budget['dim']}")
        for line in projection_lines(train_store.spec.projection)
    )
    estimator = EKFAC(basis, damping="auto").fit(train_store)
    described = estimator.describe()
    assert described["projection_budget"] == budget and "damping_rule" in described
    # on the eigen projection the scorer resolves EIGEN_DAMPING_SHARE of its directions, and
    # the budget was judged at the damping where the full space resolves that share of min(n, D)
    rule = described["damping_rule"]
    assert rule["share"] == EIGEN_DAMPING_SHARE
    assert rule["target_effective_dimension"] == pytest.approx(
        EIGEN_DAMPING_SHARE * rule["directions"]
    )
    full = [full_spectrum(m, basis.n_examples) for m in basis.modules]
    judged = spectrum_damping(full, EIGEN_DAMPING_SHARE, basis.n_examples).relative
    assert budget["relative_damping"] == pytest.approx(judged)
    assert np.isfinite(estimator.score(query_store).values).all()
    fixed = ProjectionConfig("eigen", 20, basis=basis)
    assert (
        stores(tmp_path / "fixed", model, ClassificationTask(), train, query, fixed)[1].feature_dim
        <= 20
    )


def test_budget_lines_warn_when_little_is_kept():
    from infscope.store.summary import budget_lines

    low = {"dim": 10, "kept_share": 0.4, "target_share": 0.9, "low": True}
    lines = budget_lines([low, {**low, "kept_share": 0.95, "low": False}])
    assert lines[0].startswith("budget: k = 10, 10") and "40.0%, 95.0%" in lines[0]
    assert lines[1].startswith("warning:") and "sketch_rank" in lines[1]
    # the whole basis holds enough: the remedy is a larger dim, not a wider sketch
    enough = {**low, "low_at_full_rank": False}
    assert "larger dim" in budget_lines(enough)[1]
    assert budget_lines(None) == []


def test_budget_rule_shares_are_arguments():
    """``truncate("auto", share=..., damping_share=...)`` and ``ProjectionConfig``'s
    ``budget_share`` / ``budget_damping_share`` reach the rule: less damping (a larger damping
    share) resolves more directions and keeps more features, a larger kept share too."""
    from infscope.gradients import ProjectionConfig

    basis = _basis([_module("a", np.geomspace(1, 1e-4, 20), np.geomspace(1, 1e-4, 10))], n=100)
    heavy = choose_budget(basis, share=0.95, damping_share=0.25)
    light = choose_budget(basis, share=0.95, damping_share=0.9)
    assert heavy.damping > light.damping and heavy.dim < light.dim
    assert choose_budget(basis, share=0.99, damping_share=0.25).dim > heavy.dim
    assert choose_budget(basis).dim == choose_budget(basis, BUDGET_SHARE, BUDGET_DAMPING_SHARE).dim
    cut = basis.truncate("auto", share=0.95, damping_share=0.9)
    assert cut.feature_dim == light.dim
    assert cut.settings["budget"]["relative_damping"] == pytest.approx(light.damping)
    config = ProjectionConfig("eigen", "auto", basis=basis, budget_damping_share=0.9)
    assert config.budget_rule() == {"damping_share": 0.9}
    assert config.to_json()["budget_damping_share"] == 0.9
    assert "budget_share" not in ProjectionConfig("eigen", "auto", basis=basis).to_json()
    with pytest.raises(InputError, match="dim='auto' only"):
        ProjectionConfig("eigen", 20, basis=basis, budget_share=0.9)
    with pytest.raises(InputError, match=r"\(0, 1\)"):
        ProjectionConfig("eigen", "auto", basis=basis, budget_share=1.5)
