"""Former spellings keep working for one release, each with a DeprecationWarning: moved names
(documented import paths) and renamed or positional arguments."""

from __future__ import annotations

import importlib

import pytest

from infscope.deprecation import legacy_arguments


@pytest.mark.parametrize(
    "package,name,home",
    [
        ("infscope.gradients", "fit_kronecker_basis", "infscope.curvature"),
        ("infscope.gradients", "KroneckerBasis", "infscope.curvature"),
        ("infscope.attribution", "KFACFactors", "infscope.curvature"),
    ],
)
def test_moved_names_resolve_with_a_warning(package, name, home):
    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        found = getattr(importlib.import_module(package), name)
    assert found is getattr(importlib.import_module(home), name)


def test_legacy_arguments_map_positions_and_old_names():
    @legacy_arguments("b", "c", old="c")
    def f(a, *, b=1, c=2):
        return a, b, c

    assert f(0, b=5) == (0, 5, 2)
    with pytest.warns(DeprecationWarning, match="by keyword"):
        assert f(0, 7, 8) == (0, 7, 8)
    with pytest.warns(DeprecationWarning, match="use c="):
        assert f(0, old=9) == (0, 1, 9)
    with pytest.raises(TypeError, match="at most"):
        f(0, 1, 2, 3)
