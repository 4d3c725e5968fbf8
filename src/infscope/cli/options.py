"""Options shared by several commands, declared once and generated into each command's signature.

* :func:`estimator_options`: a command taking ``estimator: EstimatorSpec`` gets ``--method`` and
  one flag per option declared in :mod:`infscope.attribution.registry` (each former flag name a
  hidden alias that prints a ``warning:`` line), so ``score``, ``index`` and any later command
  have the same options, and ``--config`` files name them the same way.
* :func:`option_groups`: a command taking a parameter typed with a frozen dataclass whose fields
  are ``Annotated[type, typer.Option(...)]`` gets one flag per field and receives the dataclass
  (``--model`` and how it loads, the tracked modules, the projection: shared by ``features``
  and ``unlearn``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from infscope.attribution.registry import ESTIMATORS, OPTIONS, EstimatorSpec, Option
from infscope.cli.output import warn

__all__ = ["estimator_options", "option_groups"]

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


def option_groups(command: F) -> F:
    """Replace each parameter of ``command`` whose annotation is a dataclass by that dataclass's
    fields (typer options, keyword-only) and pass the command the dataclass built from them."""
    signature = inspect.signature(command, eval_str=True)
    params, groups = [], {}
    for param in signature.parameters.values():
        group = param.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = typing.get_type_hints(group, include_extras=True)
        names = []
        for item in dataclasses.fields(group):
            default = item.default if item.default is not dataclasses.MISSING else inspect.Parameter.empty
            params.append(
                inspect.Parameter(
                    item.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=hints[item.name],
                )
            )
            names.append(item.name)
        groups[param.name] = (group, names)
    new = signature.replace(parameters=params)

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        for name, (group, fields) in groups.items():
            values[name] = group(**{field: values.pop(field) for field in fields})
        return command(**values)

    wrapper.__signature__ = new  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in new.parameters.values()}
    return wrapper  # type: ignore[return-value]
