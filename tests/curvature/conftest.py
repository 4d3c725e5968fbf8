"""Fixtures shared with the attribution tests (the estimators read what curvature builds)."""

from tests.attribution.conftest import eigen, mlp  # noqa: F401
