"""Selectors by name, for the CLI and configs: ``build_selector("bids", seed=0, aggregate="max")``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from infscope.errors import InputError
from infscope.selection.alignment import TargetAligned
from infscope.selection.annotation import IDEAL, KMeansCentres, VoteK
from infscope.selection.bandit import ClusterBandit
from infscope.selection.base import Selector
from infscope.selection.basic import RandomSelection, SoftmaxSampling, Stratified, TopK
from infscope.selection.dsir import DSIR
from infscope.selection.similarity import ClusterMatch, TargetSimilarity
from infscope.selection.targeted import BIDS, LESS
from infscope.selection.transport import TAROT

SELECTORS: dict[str, Callable[..., Selector]] = {
    "top-k": TopK,
    "bottom-k": partial(TopK, bottom=True),
    "random": RandomSelection,
    "stratified": Stratified,
    "balanced": partial(Stratified, balanced=True),
    "softmax": SoftmaxSampling,
    "less": LESS,
    "bids": BIDS,
    "cluster-bandit": ClusterBandit,
    "tarot": TAROT,
    "dsir": DSIR,
    "similarity": TargetSimilarity,
    "cluster-match": ClusterMatch,
    "aligned-match": TargetAligned,
    "vote-k": VoteK,
    "ideal": IDEAL,
    "kmeans-centres": KMeansCentres,
}

# options that take Python callables: not settable from text
_CALLABLES = {"score_fn", "confidence", "within"}
# options of several types, checked by the selector itself (balance: true, false or a tolerance)
_SELF_CHECKED = {"balance"}


def selector_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts (besides ``seed``) and their defaults."""
    factory = _factory(name)
    target = factory.func if isinstance(factory, partial) else factory
    fixed = factory.keywords if isinstance(factory, partial) else {}
    params = inspect.signature(target).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in ("self", "seed", *fixed) and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def build_selector(
    name: str,
    seed: int = 0,
    stratify_by: str | None = None,
    balanced_strata: bool = False,
    **options: Any,
) -> Selector:
    """A selector by name with ``options`` (unknown options are a clear error). With
    ``stratify_by`` (a tag), it selects inside each group of that tag, the budget split in
    proportion to group size or, with ``balanced_strata``, equally (:class:`Stratified`)."""
    known = selector_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in known.items() if k not in _CALLABLES)
        raise InputError(f"{name} has no option {unknown}; its options: {listed or 'none'}")
    options = {key: _checked_option(name, key, value, known[key]) for key, value in options.items()}
    try:
        selector = _factory(name)(seed=seed, **options)
    except (TypeError, ValueError) as err:  # a value of the right type the selector refuses
        if isinstance(err, InputError):
            raise
        raise InputError(f"{name}: bad options {options} ({err})") from None
    if stratify_by is None:
        return selector
    return Stratified(by=stratify_by, balanced=balanced_strata, within=selector, seed=seed)


def _checked_option(name: str, key: str, value: Any, default: Any) -> Any:
    """An option's value, which must have its default's type (an integer where an int is
    expected — ``20.0`` becomes 20 —, a number where a float is); options whose default is
    ``None`` are checked by the selector."""
    if key in _CALLABLES or key in _SELF_CHECKED or default is None:
        return value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = numeric and float(value).is_integer()
    elif isinstance(default, float):
        ok = numeric
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(
            f"{name} option {key}={value!r} must be {type(default).__name__} like its default "
            f"{default!r}"
        )
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    return value


def _factory(name: str) -> Callable[..., Selector]:
    if name not in SELECTORS:
        raise InputError(f"unknown selection method {name!r}; choose from {', '.join(SELECTORS)}")
    return SELECTORS[name]


def register_selector(name: str, factory: Callable[..., Selector]) -> None:
    """Make ``name`` a selection method: ``factory(seed=..., **options)`` builds it (a
    :class:`Selector` subclass, or a ``functools.partial`` fixing some of its options); its
    keyword parameters are the options ``build_selector`` and ``infscope select --option``
    accept."""
    if name in SELECTORS:
        raise InputError(f"selection method {name!r} is already registered")
    SELECTORS[name] = factory
