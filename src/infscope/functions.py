"""``module:function`` references (the CLI's ``--train-fn``, a factory's ``--model``): the function,
imported where the user's code lives. Light: it loads nothing else."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from infscope.errors import InputError


def load_function(spec: str, option: str = "--train-fn") -> Any:
    """``package.module:function`` → the function, imported from the working directory (as
    ``python -m`` would) or anywhere on ``sys.path``."""
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
    return function
