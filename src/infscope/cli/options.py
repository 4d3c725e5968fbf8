"""The estimator options of every command that builds an estimator, generated from the
declarations of :mod:`infscope.attribution.registry`: a command takes one parameter
``estimator: EstimatorSpec`` and :func:`estimator_options` gives it ``--method`` and one flag per
declared option (with each former flag name as a hidden alias that prints a ``warning:`` line),
so ``score``, ``index`` and any later command have the same options, and ``--config`` files
name them the same way."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from infscope.attribution.registry import ESTIMATORS, OPTIONS, EstimatorSpec, Option
from infscope.cli.output import warn

__all__ = ["estimator_options"]

F = TypeVar("F", bound=Callable[..., Any])
#: the parameter of a command that receives the estimator
PARAMETER = "estimator"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(option: Option) -> str:
    methods = option.methods
    if len(methods) == len(ESTIMATORS):
        return option.help
    return f"{option.help} [{', '.join(methods)}]"


def _parameter(name: str, option: Option, hidden: bool = False) -> inspect.Parameter:
    kind = list[option.type] if option.multiple else option.type
    if option.default is None or option.multiple:
        kind = kind | None
    info = typer.Option(
        _flag(name),
        help="Deprecated: " + _flag(option.name) if hidden else _help(option),
        metavar=option.metavar,
        min=option.minimum,
        hidden=hidden,
    )
    default = None if hidden or option.multiple else option.default
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, info]
    )


def _method_parameter() -> inspect.Parameter:
    listed = "; ".join(f"{m.name}: {m.summary}" for m in ESTIMATORS.values())
    info = typer.Option("--method", help=f"The estimator. {listed}.")
    return inspect.Parameter(
        "method", inspect.Parameter.KEYWORD_ONLY, default="tracin", annotation=Annotated[str, info]
    )


def _absolute(value: Any) -> Any:
    """Paths made absolute, so a recorded spec means the same from any working directory."""
    if isinstance(value, Path):
        return str(value.absolute())
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


def spec_from_parameters(values: dict[str, Any]) -> EstimatorSpec:
    """The :class:`EstimatorSpec` of a command's estimator parameters (popped from ``values``);
    a former flag given prints a ``warning:`` line."""
    method = values.pop("method")
    options = {}
    for name, option in OPTIONS.items():
        value = values.pop(name)
        for old in option.renamed_from:
            given = values.pop(old)
            if given is not None:
                warn(f"{_flag(old)} is deprecated; use {_flag(name)}")
                value = value or given
        options[name] = _absolute(value)
    return EstimatorSpec(method, options)


def estimator_options(command: F) -> F:
    """Replace ``command``'s ``estimator`` parameter by ``--method`` and the declared estimator
    options; the command receives them as one :class:`EstimatorSpec`."""
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at = [p.name for p in params].index(PARAMETER)
    generated = [_method_parameter()]
    for name, option in OPTIONS.items():
        generated.append(_parameter(name, option))
    for option in OPTIONS.values():
        generated += [_parameter(old, option, hidden=True) for old in option.renamed_from]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    new = signature.replace(parameters=keyword[:at] + generated + keyword[at + 1 :])

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        values[PARAMETER] = spec_from_parameters(values)
        return command(**values)

    wrapper.__signature__ = new  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in new.parameters.values()}
    return wrapper  # type: ignore[return-value]
