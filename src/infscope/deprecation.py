"""Old spellings that keep working for one release, with a :class:`DeprecationWarning`.

When an argument is renamed, or options become keyword-only, :func:`legacy_arguments` lets
callers that use the old form go on working while telling them the new one. Remove the
decoration (and the names it lists) in the release after.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["legacy_arguments", "warn_deprecated"]

F = TypeVar("F", bound=Callable[..., Any])


def warn_deprecated(message: str, stacklevel: int = 3) -> None:
    """One :class:`DeprecationWarning` pointing at the caller's caller."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def legacy_arguments(*positional: str, **renamed: str) -> Callable[[F], F]:
    """Accept, for one release, the options of ``function`` given positionally in their old
    order ``positional`` (after its own positional parameters), and keywords under their old
    names (``renamed``: old name → new name), each with a :class:`DeprecationWarning`."""

    def wrap(function: F) -> F:
        params = list(inspect.signature(function).parameters.values())
        takes = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        name = function.__qualname__.replace(".__init__", "")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            own, extra = args[:takes], args[takes:]
            if extra:
                if len(extra) > len(positional):
                    raise TypeError(f"{name}() takes at most {takes + len(positional)} arguments")
                names = positional[: len(extra)]
                warn_deprecated(
                    f"{name}: pass {', '.join(names)} by keyword ({name}(..., "
                    f"{names[0]}=...)); positional options are deprecated"
                )
                for key, value in zip(names, extra):
                    if key in kwargs:
                        raise TypeError(f"{name}() got multiple values for {key!r}")
                    kwargs[key] = value
            for old, new in renamed.items():
                if old in kwargs:
                    warn_deprecated(f"{name}({old}=...) is deprecated; use {new}=...")
                    if new in kwargs:
                        raise TypeError(f"{name}() got both {old!r} and {new!r}")
                    kwargs[new] = kwargs.pop(old)
            return function(*own, **kwargs)

        return wrapper  # type: ignore[return-value]

    return wrap
