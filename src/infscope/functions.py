"""``module:function`` options (``--train-fn``, ``--model`` of a factory): the function, imported
where the user's code lives, and reported as the user's when it raises. Light: the CLI's help
never loads torch through it."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from typing import Any

from infscope.errors import InfscopeError, InputError, UserCodeError


def load_function(spec: str, option: str = "--train-fn") -> Any:
    """``package.module:function`` → the function, imported from the working directory (as
    ``python -m`` would) or anywhere on ``sys.path``, wrapped so that an exception it raises
    becomes one :class:`~infscope.errors.UserCodeError` (the CLI prints one line naming the
    exception and the line of the user's code, not a traceback through infscope)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise InputError(f"{option} must be 'module:function', got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"cannot import module {module_name!r}: {err}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise InputError(f"module {module_name!r} has no function {name!r}")
    return _reported(function, f"{option} {spec}")


def _described(value: Any) -> str:
    size = getattr(value, "size", None)
    if getattr(value, "ndim", None) == 1 and isinstance(size, int):
        return f"{size} indices"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _user_frame(err: BaseException) -> str:
    """`` at file:line in function`` of the innermost frame outside infscope, or ``""``."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep  # src/infscope/
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not os.path.abspath(f.filename).startswith(package)
    ]
    return f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""


def _reported(function: Any, what: str) -> Any:
    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except InfscopeError:
            raise
        except Exception as err:
            called = ", ".join(_described(a) for a in args)
            raise UserCodeError(
                f"{what} raised {type(err).__name__}: {err}{_user_frame(err)} (called with "
                f"({called}))"
            ) from err

    return call
