"""What the ``eigen`` projection needs of a basis, declared beside the projection.

The eigen projection maps a module's per-example gradient ``M`` to ``Q_S,rᵀ M Q_A,r``: it needs,
per tracked module, the leading eigenvectors of the output-gradient and input-activation
covariances, and per basis a digest and the weights it was fit at. Fitting those bases is a model
pass over the training data and lives in :mod:`infscope.curvature` (whose
:class:`~infscope.curvature.eigenbasis.KroneckerBasis` satisfies :class:`Basis`); the projection
only reads them, so ``gradients`` does not depend on ``curvature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infscope.errors import InputError

__all__ = ["Basis", "ModuleBasisLike", "check_bases", "describe_bases"]


class ModuleBasisLike(Protocol):
    """One module's kept eigenvectors: ``s_vectors`` ``[rows, out_rank]`` and ``a_vectors``
    ``[cols, in_rank]`` (``None`` for a module without Kronecker structure, kept whole)."""

    name: str
    rows: int
    cols: int
    kronecker: bool
    s_vectors: np.ndarray | None
    a_vectors: np.ndarray | None

    @property
    def out_rank(self) -> int: ...

    @property
    def in_rank(self) -> int: ...

    @property
    def dim(self) -> int: ...


class Basis(Protocol):
    """A per-module eigenbasis the eigen projection projects onto."""

    modules: list[Any]  # ModuleBasisLike, in the tracked modules' order
    fisher: str
    fingerprints: tuple[str, ...]

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def feature_dim(self) -> int: ...

    @property
    def module_names(self) -> tuple[str, ...]: ...

    @property
    def digest(self) -> str: ...

    def truncate(self, budget: int | str | None, **rule: float) -> Basis: ...

    def check_modules(self, modules: list[Any]) -> None: ...


def check_bases(given: Any) -> list[Basis]:
    """A basis, or a sequence of them (one per checkpoint), as a list. Several must each belong
    to one checkpoint, all different, and cover the same modules. A path is refused: load it
    first (``infscope.curvature.KroneckerBasis.load``)."""
    bases = list(given) if isinstance(given, (list, tuple)) else [given]
    if not bases:
        raise InputError("no eigenbasis given")
    for basis in bases:
        if isinstance(basis, (str, Path)):
            raise InputError(
                f"the eigen projection takes a loaded basis, not the path {str(basis)!r}: "
                "KroneckerBasis.load(path) (infscope.curvature) reads it"
            )
        if not (hasattr(basis, "modules") and callable(getattr(basis, "truncate", None))):
            raise InputError(f"not an eigenbasis: {type(basis).__name__}")
    if len(bases) > 1:
        fingerprints = [b.fingerprint for b in bases]
        if None in fingerprints or len(set(fingerprints)) != len(bases):
            raise InputError(
                "eigenbases of several checkpoints must each be fit at one checkpoint's weights, "
                "and at different ones"
            )
        if len({b.module_names for b in bases}) != 1:
            raise InputError("the eigenbases were fit on different modules")
    return bases


def describe_bases(
    bases: Sequence[Basis], budget: int | str | None, **rule: float
) -> dict[str, Any]:
    """What a store records about the bases it was projected with (digests, not paths; with
    several, each checkpoint's own rank layout for ``budget``, ``rule`` the auto budget's
    shares)."""
    if len(bases) == 1:
        return {
            "basis": bases[0].digest,
            "fisher": bases[0].fisher,
            "basis_fingerprint": bases[0].fingerprint,
        }
    return {
        "basis": [b.digest for b in bases],
        "fisher": bases[0].fisher,
        "basis_fingerprint": [b.fingerprint for b in bases],
        "ranks": [[[m.out_rank, m.in_rank] for m in b.truncate(budget, **rule).modules] for b in bases],
    }
