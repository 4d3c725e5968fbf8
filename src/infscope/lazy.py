"""Package faces that import what they export only when it is first used.

``import infscope`` or ``import infscope.attribution.registry`` should not load torch or an
estimator's dependencies; a package lists its public names with the module each lives in, and
:func:`exports` gives it the module-level ``__getattr__`` and ``__dir__`` (PEP 562) that import
them on first access.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, names: dict[str, str], moved: dict[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``names`` (name → module path);
    ``moved`` names (name → the module that holds it now) still resolve, for one release, with
    a :class:`DeprecationWarning`."""
    moved = dict(moved or {})

    def getattr_(name: str) -> Any:
        if name in moved:
            warnings.warn(
                f"{package}.{name} has moved: import it from {moved[name]}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(moved[name]), name)
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_
