"""Estimators by name, and their options declared once.

Every option an estimator takes from text — the command line, a YAML config, a saved
:class:`EstimatorSpec` — is an :class:`Option` (type, default, help, the values it accepts) in
:data:`OPTIONS`, and every estimator is a :class:`Method` in :data:`ESTIMATORS` naming the
options it takes. The CLI builds its flags from these declarations
(:mod:`infscope.cli.options`), so every command that builds an estimator has every option;
:func:`build_estimator` and :class:`EstimatorSpec` read the same ones. Adding an estimator is
one :func:`register_estimator` call (see ``CONTRIBUTING.md``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infscope.deprecation import warn_deprecated
from infscope.errors import InputError

if TYPE_CHECKING:
    from infscope.attribution.base import Estimator

__all__ = [
    "ESTIMATORS",
    "METHODS",
    "OPTIONS",
    "EstimatorSpec",
    "Method",
    "Option",
    "build_estimator",
    "estimator_class",
    "estimator_options",
    "register_estimator",
    "register_option",
]


@dataclass(frozen=True)
class Option:
    """One estimator option, as the CLI (``--name-with-dashes``), YAML configs and
    :func:`build_estimator` (``name=``) all see it.

    Args:
        name: the keyword (and, dashed, the flag).
        type: the type of one value: ``str``, ``int``, ``float``, ``bool`` or ``Path``.
        default: the value when none is given (``None``: the estimator's own default).
        help: one line for ``--help`` (which methods take it is added from the registry).
        choices: the values a ``str`` option accepts.
        multiple: a list of values (the flag repeated).
        minimum: the smallest value a number may take.
        metavar: the placeholder ``--help`` shows.
        load: turns a value read from text (a path) into what the estimator takes (a store,
            factors); objects pass through unchanged.
        required: the methods that take it cannot do without it.
        label: what error messages call it (default: the name, spaced).
        renamed_from: former names, accepted with a deprecation warning for one release.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    multiple: bool = False
    minimum: float | None = None
    metavar: str | None = None
    load: Callable[[Any], Any] | None = None
    required: bool = False
    label: str | None = None
    renamed_from: tuple[str, ...] = ()

    @property
    def noun(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods that take this option."""
        return tuple(name for name, method in ESTIMATORS.items() if self.name in method.options)

    def check(self, value: Any) -> Any:
        """``value`` if it is one this option takes (a clear :class:`InputError` otherwise)."""
        if value is None:
            return None
        if self.multiple:
            values = [value] if isinstance(value, (str, Path)) else list(value)
            return [self._check_one(v) for v in values]
        return self._check_one(value)

    def _check_one(self, value: Any) -> Any:
        if self.type is Path and isinstance(value, (str, Path)):
            return value
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type in (int, float, bool, str) and type(value) is not self.type:
            if self.load is None:  # objects an estimator takes directly pass through load
                raise InputError(
                    f"option {self.name} takes a {self.type.__name__}, got {value!r}"
                )
            return value
        if self.choices is not None and value not in self.choices:
            raise InputError(f"option {self.name} must be one of {self.choices}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise InputError(f"option {self.name} must be at least {self.minimum}, got {value!r}")
        return value


@dataclass(frozen=True)
class Method:
    """An estimator by name: ``build(**options)`` returns it unfitted; ``options`` are the
    :data:`OPTIONS` it takes (in the order ``--help`` lists them)."""

    name: str
    summary: str
    build: Callable[..., Estimator]
    options: tuple[str, ...]
    #: keyword arguments fixed by the name (``cosine``: ``normalize="unit"``)
    fixed: dict[str, Any] = field(default_factory=dict)


OPTIONS: dict[str, Option] = {}
ESTIMATORS: dict[str, Method] = {}


def _damping_value(value: Any) -> float | str:
    """A damping as given: ``"auto"``, or a number (text from the command line or a config)."""
    if value == "auto" or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"option damping takes a number or 'auto', got {value!r}") from None


def register_option(option: Option) -> Option:
    """Declare an option (its name must be new)."""
    if option.name in OPTIONS:
        raise InputError(f"estimator option {option.name!r} is already declared")
    OPTIONS[option.name] = option
    return option


def register_estimator(
    name: str,
    build: Callable[..., Estimator],
    *,
    summary: str,
    options: Sequence[str],
    fixed: dict[str, Any] | None = None,
) -> Method:
    """Make ``name`` an estimator: ``build(**fixed, **options)`` (an estimator class, or a
    function) takes the declared ``options`` by keyword."""
    if name in ESTIMATORS:
        raise InputError(f"estimator {name!r} is already registered")
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise InputError(f"estimator {name!r}: undeclared options {unknown} (register_option)")
    method = Method(name, summary, build, tuple(options), dict(fixed or {}))
    ESTIMATORS[name] = method
    return method


def estimator_options(method: str) -> dict[str, Option]:
    """The options ``method`` takes, by name."""
    return {name: OPTIONS[name] for name in _method(method).options}


def _method(name: str) -> Method:
    if name not in ESTIMATORS:
        raise InputError(f"unknown method {name!r}; choose from {tuple(ESTIMATORS)}")
    return ESTIMATORS[name]


def _renamed(options: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """Options under former names moved to the current ones (with a deprecation warning for
    Python callers; a file written before is read silently)."""
    out = dict(options)
    for option in OPTIONS.values():
        for old in option.renamed_from:
            if old in out:
                if warn:
                    warn_deprecated(f"estimator option {old!r} is deprecated; use {option.name!r}", 4)
                if out.get(option.name) is not None:
                    raise InputError(f"both {old!r} and {option.name!r} given")
                out[option.name] = out.pop(old)
    return out


def build_estimator(method: str, **options: Any) -> Estimator:
    """An unfitted estimator by name. ``options`` are the declared :data:`OPTIONS` (see
    ``estimator_options(method)``); a value left at ``None`` takes the estimator's default. An
    option ``method`` does not take is refused unless it is at its default (the CLI passes every
    option to every method)."""
    chosen = _method(method)
    options = _renamed(options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown estimator options {unknown}; declared: {sorted(OPTIONS)}")
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        option = OPTIONS[name]
        value = option.check(value)
        if name not in chosen.options:
            if value not in (None, option.default, []):
                takers = ", ".join(option.methods) or "none"
                raise InputError(f"{method} takes no {option.noun} ({takers} do)")
            continue
        if value is not None and value != []:
            kwargs[name] = option.load(value) if option.load is not None else value
    missing = [n for n in chosen.options if OPTIONS[n].required and n not in kwargs]
    if missing:
        raise InputError(f"{method} needs {missing[0]}: {OPTIONS[missing[0]].help}")
    return chosen.build(**chosen.fixed, **kwargs)


class EstimatorSpec:
    """An estimator by name and options (:func:`build_estimator`'s arguments), recorded as JSON
    beside what it produced (an index, a run's configuration) so it can be rebuilt:
    ``EstimatorSpec("ekfac", factors=["basis.safetensors"], damping=0.1)``. Options at their
    default are not kept; paths are kept as text; a spec written with former option names reads
    back."""

    def __init__(
        self, method: str = "tracin", options: dict[str, Any] | None = None, **more: Any
    ) -> None:
        _method(method)
        given = {**(options or {}), **more}
        unknown = sorted(set(_renamed(given, warn=False)) - set(OPTIONS))
        if unknown:
            raise InputError(f"not an estimator spec: unknown options {unknown}")
        kept = {}
        for name, value in _renamed(given).items():
            value = OPTIONS[name].check(value)
            if value is None or value == [] or value == OPTIONS[name].default:
                continue
            if isinstance(value, list):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            kept[name] = str(value) if isinstance(value, Path) else value
        self.method = method
        self.options = kept

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EstimatorSpec) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"EstimatorSpec({self.method!r}, {self.options!r})"

    def build(self) -> Estimator:
        return build_estimator(self.method, **self.options)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, **self.options}

    @classmethod
    def from_json(cls, data: Any) -> EstimatorSpec:
        if not isinstance(data, dict) or not isinstance(data.get("method", "tracin"), str):
            raise InputError(f"not an estimator spec: {data!r}")
        options = _renamed({k: v for k, v in data.items() if k != "method"}, warn=False)
        return cls(data.get("method", "tracin"), options)


# ---- the options --------------------------------------------------------------------------


def _open_store(value: Any) -> Any:
    from infscope.store import FeatureStore

    return FeatureStore.open(value) if isinstance(value, (str, Path)) else value


def _load_factors(value: Any) -> Any:
    from infscope.curvature.kfac import load_factors

    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    loaded = [load_factors(v) if isinstance(v, (str, Path)) else v for v in values]
    return loaded[0] if len(loaded) == 1 else loaded


for _option in (
    Option(
        "normalize",
        str,
        "none",
        "none | unit | relatif (influence, ekfac, kfac); explicit, never implied.",
        choices=("none", "unit", "relatif"),
    ),
    Option(
        "checkpoints",
        str,
        None,
        "Checkpoint(s) to score: an id (repeat for several), 'last' or 'all' (the mean over "
        "checkpoints). Default: the method's (last; tracin/trak: all; ekfac/kfac: the bases').",
        multiple=True,
        metavar="ID",
        renamed_from=("checkpoint",),
    ),
    Option(
        "damping",
        str,
        None,
        "Relative damping: λ = damping × trace(H)/min(n, dim) of the curvature block it damps "
        "(default: the method's, 1 for influence/trak/datainf, 0.1 for ekfac/kfac), or 'auto': "
        "read off the fitted curvature's spectrum; see --damping-mode.",
        metavar="NUMBER|auto",
        load=_damping_value,
    ),
    Option(
        "damping_share",
        float,
        None,
        "With --damping auto: the share of its directions the damped curvature resolves "
        "(default: the method's, 0.08 for influence/trak/datainf on the Fisher, 0.4 on the model "
        "Hessian, 0.5 of at most n for ekfac/kfac on K-FAC factors, 0.9 on an eigen basis, "
        "0.01 there when the spectrum is concentrated); a share given is kept on every spectrum.",
        metavar="SHARE",
    ),
    Option(
        "damping_mode",
        str,
        "relative",
        "relative (as above) | absolute (λ = damping itself).",
        choices=("relative", "absolute"),
    ),
    Option(
        "solver",
        str,
        "auto",
        "auto (exact when small enough, else cg) | exact | cg | lissa | arnoldi.",
        choices=("auto", "exact", "cg", "lissa", "arnoldi"),
    ),
    Option(
        "l2_regularization",
        float,
        None,
        "The final layer's L2 regularisation (representer points need it).",
        required=True,
    ),
    Option(
        "factors",
        Path,
        None,
        "Factors file from --fit-factors / KFACFactors.save, or the --basis file(s) of an "
        "eigen-projected store (repeat for one per checkpoint).",
        multiple=True,
        metavar="FILE",
        load=_load_factors,
        required=True,
        label="fitted factors",
    ),
    Option(
        "fisher",
        Path,
        None,
        "A --gradient fisher store of the training data; its statistics give the curvature "
        "(true Fisher). Default: the training store's.",
        load=_open_store,
        label="Fisher store",
    ),
    Option(
        "query_rank",
        int,
        None,
        "Score with rank-R preconditioned queries (all queries at once, one pass over the "
        "training store; pays on wide modules). Default: exact.",
        minimum=1,
    ),
    Option("block_size", int, 4096, "Rows per block (bounds memory).", minimum=1),
):
    register_option(_option)


# ---- the estimators -----------------------------------------------------------------------


def estimator_class(module: str, name: str) -> Callable[..., Estimator]:
    """A builder that imports ``infscope.attribution.<module>.<name>`` when first called (so
    reading the registry loads no estimator, nor torch)."""

    def build(*args: Any, **options: Any) -> Estimator:
        return getattr(importlib.import_module(f"infscope.attribution.{module}"), name)(
            *args, **options
        )

    build.__qualname__ = name
    return build


_COMMON = ("checkpoints", "block_size")
_DAMPED = ("damping", "damping_share", "damping_mode")
register_estimator(
    "dot",
    estimator_class("gradient_similarity", "GradientSimilarity"),
    summary="gradient dot product at one checkpoint",
    options=("normalize", *_COMMON),
)
register_estimator(
    "cosine",
    estimator_class("gradient_similarity", "GradientSimilarity"),
    summary="cosine similarity of gradients at one checkpoint",
    options=_COMMON,
    fixed={"normalize": "unit"},
)
register_estimator(
    "tracin",
    estimator_class("gradient_similarity", "TracIn"),
    summary="TracIn-CP: learning-rate-weighted dot products over checkpoints",
    options=("normalize", *_COMMON),
)
register_estimator(
    "influence",
    estimator_class("influence", "InfluenceFunction"),
    summary="influence functions (Fisher or given curvature, damped inverse)",
    options=("normalize", "checkpoints", *_DAMPED, "solver", "fisher", "block_size"),
)
register_estimator(
    "trak",
    estimator_class("influence", "TRAK"),
    summary="TRAK over margin gradients",
    options=("checkpoints", *_DAMPED, "solver", "block_size"),
)
register_estimator(
    "datainf",
    estimator_class("datainf", "DataInf"),
    summary="DataInf's closed-form per-layer inverse",
    options=("checkpoints", *_DAMPED, "block_size"),
)
register_estimator(
    "representer",
    estimator_class("representer", "RepresenterPoints"),
    summary="representer points of the final layer",
    options=("l2_regularization", *_COMMON),
)
_KFAC_OPTIONS = ("factors", "normalize", "checkpoints", *_DAMPED, "fisher", "query_rank")
register_estimator(
    "ekfac",
    estimator_class("kfac", "EKFAC"),
    summary="EK-FAC influence (per-module Kronecker factors, corrected eigenvalues)",
    options=(*_KFAC_OPTIONS, "block_size"),
)
register_estimator(
    "kfac",
    estimator_class("kfac", "EKFAC"),
    summary="K-FAC influence (per-module Kronecker factors)",
    options=(*_KFAC_OPTIONS, "block_size"),
    fixed={"correct_eigenvalues": False},
)

#: the registered estimator names
METHODS = tuple(ESTIMATORS)
