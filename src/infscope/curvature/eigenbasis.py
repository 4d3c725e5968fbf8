"""Kronecker eigenbases of the training curvature, fitted in each module's full space: the basis
of infscope's curvature-aware projection.

A random Kronecker projection ``P_out M P_inᵀ`` keeps ``k_out`` random mixtures of a module's
outputs; on a language-model head with thousands of outputs that discards most of the curvature,
and EK-FAC fitted on such features inverts ``(P F Pᵀ + λ)⁻¹`` instead of ``P (F + λ)⁻¹ Pᵀ``. Here
each tracked module's K-FAC factors — the input-activation covariance ``A = E[a aᵀ]`` and the
output-gradient covariance ``S = E[g gᵀ]`` over the positions the loss sees — are accumulated in
the module's full space in one pass, and eigendecomposed. Projecting a per-example gradient onto
the leading eigenvectors, ``Q_S,rᵀ M Q_A,r`` (``r_out × r_in`` per module), keeps the directions
that carry the curvature; EK-FAC in that basis is a diagonal rescaling, and at full rank it *is*
unprojected EK-FAC (the eigenbases are orthogonal).

* **Bounded memory.** A factor side up to ``max_exact_dim`` is summed exactly (float64) and
  eigendecomposed with ``eigh`` (in float32 above 1,024, keeping float32 eigenvectors: the
  precision the projection applies them at, at half the time and memory). A wider side (an LM
  head with 50k outputs) is sketched in the same pass — ``Y = S Ω`` with a seeded Gaussian ``Ω``
  of ``sketch_rank`` columns — and its leading eigenpairs recovered by the single-pass Nyström
  method (Tropp, Yurtsever, Udell & Cevher 2017), so memory is ``side × sketch_rank`` instead of
  ``side²``. The exact trace is kept either way, so the share of the spectrum a rank captures is
  known.
* **Budget by spectrum mass.** :meth:`KroneckerBasis.truncate` splits a total budget ``k`` over
  modules greedily by the curvature mass each added row or column captures,
  ``trace_m × F_S(r_out) × F_A(r_in)`` (``F`` the captured fraction of a factor's eigenvalue sum,
  ``trace_m = mean_i ‖M_i‖²`` the module's share of the Fisher trace), instead of evenly.
* **Fisher.** ``fisher="empirical"`` differentiates the training loss at the observed labels,
  ``"true"`` at labels drawn from the model (seeded): kronfluence's default.

Modules without Kronecker structure (LayerNorm) are kept whole. Fit with
:func:`~infscope.curvature.basis_fit.fit_kronecker_basis` (the model pass lives there),
save/load with :meth:`KroneckerBasis.save` / :meth:`KroneckerBasis.load` (safetensors, validated;
no pickle), project with ``ProjectionConfig(kind="eigen", basis=...)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from infscope.curvature.budget import allocate_ranks, choose_budget
from infscope.errors import InputError
from infscope.gradients.basis import check_bases
from infscope.gradients.modules import TrackedModule
from infscope.io import write_atomic

FORMAT = "infscope.kronecker_basis"
VERSION = 1
FISHER_KINDS = ("empirical", "true")

__all__ = ["FISHER_KINDS", "KroneckerBasis", "ModuleBasis", "as_bases"]


@dataclass(frozen=True)
class ModuleBasis:
    """One module's leading eigenpairs (descending) of ``S`` and ``A`` and its Fisher trace.

    ``s_vectors`` is ``[rows, r_out]`` and ``a_vectors`` ``[cols, r_in]``; ``s_total`` and
    ``a_total`` are the exact traces of ``S`` and ``A`` (so the share a rank captures is known
    even when a side was sketched). A module without Kronecker structure has no vectors and is
    kept whole.
    """

    name: str
    rows: int
    cols: int
    kronecker: bool
    trace: float
    tokens: int = 0
    s_values: np.ndarray | None = None
    s_vectors: np.ndarray | None = None
    s_total: float = 0.0
    a_values: np.ndarray | None = None
    a_vectors: np.ndarray | None = None
    a_total: float = 0.0

    @property
    def out_rank(self) -> int:
        return self.s_vectors.shape[1] if self.kronecker else 1

    @property
    def in_rank(self) -> int:
        return self.a_vectors.shape[1] if self.kronecker else self.rows * self.cols

    @property
    def dim(self) -> int:
        """Features this module contributes."""
        return self.out_rank * self.in_rank

    def captured(self, side: str, rank: int) -> float:
        """Share of the factor's eigenvalue sum held by its ``rank`` leading eigenvalues."""
        return float(self._captured_shares[side][rank])

    @cached_property
    def _captured_shares(self) -> dict[str, np.ndarray]:
        """Per side, the share held by the leading ``0 … rank`` eigenvalues (the budget's greedy
        layout reads it once per added row or column)."""
        shares = {}
        for side, values, total in (
            ("out", self.s_values, self.s_total),
            ("in", self.a_values, self.a_total),
        ):
            cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
            shares[side] = cumulative / total if total > 0 else np.zeros_like(cumulative)
        return shares

    def truncated(self, out_rank: int, in_rank: int) -> ModuleBasis:
        if not self.kronecker:
            return self
        return replace(
            self,
            s_values=self.s_values[:out_rank],
            s_vectors=self.s_vectors[:, :out_rank],
            a_values=self.a_values[:in_rank],
            a_vectors=self.a_vectors[:, :in_rank],
        )


class KroneckerBasis:
    """Per-module eigenbases of the K-FAC factors, fit at one set of weights (see the module
    docstring). Build with :func:`fit_kronecker_basis`; cut to a feature budget with
    :meth:`truncate`; the :attr:`digest` identifies it in the stores it projects."""

    def __init__(
        self,
        modules: list[ModuleBasis],
        fisher: str,
        fingerprints: tuple[str, ...],
        n_examples: int,
        settings: dict[str, Any],
    ) -> None:
        self.modules = list(modules)
        self.fisher = fisher
        #: the weights it was fit at: one checkpoint, or the several its factors average over
        self.fingerprints = tuple(fingerprints)
        self.n_examples = int(n_examples)
        self.settings = dict(settings)  # how it was fit (sketching, seed)
        self._digest: str | None = None
        #: the auto budget's choice per rule shares (the basis does not change once built)
        self._budgets: dict[tuple[float | None, float | None], Any] = {}

    @property
    def fingerprint(self) -> str | None:
        """The weights' fingerprint when fit at one checkpoint (``None`` for several)."""
        return self.fingerprints[0] if len(self.fingerprints) == 1 else None

    @property
    def feature_dim(self) -> int:
        return sum(m.dim for m in self.modules)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    @property
    def digest(self) -> str:
        """SHA-256 over the metadata and every array: what a store records as its basis."""
        if self._digest is None:
            digest = hashlib.sha256(json.dumps(self._metadata(), sort_keys=True).encode())
            for name, array in sorted(self._arrays().items()):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def check_modules(self, modules: list[TrackedModule]) -> None:
        """Raise unless ``modules`` are the ones this basis was fit on (names and shapes)."""
        ours = [(m.name, m.rows, m.cols, m.kronecker) for m in self.modules]
        theirs = [(m.name, m.n_rows, m.n_cols, m.supports_kronecker) for m in modules]
        if ours != theirs:
            raise InputError(
                f"the eigenbasis was fit on other modules: {[o[0] for o in ours]} with shapes "
                f"{[o[1:3] for o in ours]}, the extractor tracks {[t[0] for t in theirs]} with "
                f"{[t[1:3] for t in theirs]}; fit it with the same model and module selection"
            )

    # ---- budget ----------------------------------------------------------------------------

    def allocate(self, budget: int) -> list[tuple[int, int]]:
        """``(r_out, r_in)`` per module for at most ``budget`` features: whole blocks for
        non-Kronecker modules, then greedy growth of the Kronecker blocks by the curvature mass
        an added row or column captures per added feature, ``trace_m × F_S(r_out) × F_A(r_in)``."""
        return allocate_ranks(self, budget)

    def truncate(
        self,
        budget: int | str | None,
        *,
        share: float | None = None,
        damping_share: float | None = None,
    ) -> KroneckerBasis:
        """The basis cut to at most ``budget`` features (:meth:`allocate`); ``None`` or a budget
        at or above :attr:`feature_dim` keeps everything; ``"auto"`` chooses the budget from the
        spectrum (:func:`~infscope.curvature.budget.choose_budget`) and records the choice —
        the kept share of the effective dimension, the damping it was judged at — in
        ``settings["budget"]``; ``share`` / ``damping_share`` override its rule's shares."""
        if budget == "auto":
            if (share, damping_share) not in self._budgets:
                self._budgets[share, damping_share] = choose_budget(self, share, damping_share)
            choice = self._budgets[share, damping_share]
            return self.truncate_to(choice.ranks, choice.dim, {"budget": choice.to_dict()})
        if budget is None or budget >= self.feature_dim:
            return self
        return self.truncate_to(self.allocate(budget), budget)

    def truncate_to(
        self,
        ranks: list[tuple[int, int]],
        budget: int | None = None,
        notes: dict[str, Any] | None = None,
    ) -> KroneckerBasis:
        """The basis cut to given ``(r_out, r_in)`` per module (``notes`` added to its
        settings)."""
        if ranks == [(m.out_rank, m.in_rank) for m in self.modules] and not notes:
            return self
        modules = [m.truncated(*r) for m, r in zip(self.modules, ranks)]
        settings = {**self.settings, "truncated_to": budget, **(notes or {})}
        return KroneckerBasis(modules, self.fisher, self.fingerprints, self.n_examples, settings)

    # ---- persistence -----------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fisher": self.fisher,
            "fingerprints": list(self.fingerprints),
            "n_examples": self.n_examples,
            "settings": self.settings,
            "modules": [
                {
                    "name": m.name,
                    "shape": [m.rows, m.cols],
                    "kronecker": m.kronecker,
                    "ranks": [m.out_rank, m.in_rank],
                    "trace": m.trace,
                    "tokens": m.tokens,
                    "s_total": m.s_total,
                    "a_total": m.a_total,
                }
                for m in self.modules
            ],
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for index, module in enumerate(self.modules):
            if module.kronecker:
                for name in ("s_values", "s_vectors", "a_values", "a_vectors"):
                    arrays[f"{index}.{name}"] = getattr(module, name)
        return arrays

    def save(self, path: str | Path) -> Path:
        """One safetensors file (the arrays as held: float32 eigenvectors of the sides fit in
        float32, float64 otherwise; JSON metadata), written atomically."""
        from safetensors.numpy import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: np.ascontiguousarray(v, dtype=np.float32 if v.dtype == np.float32 else np.float64)
            for k, v in self._arrays().items()
        }
        write_atomic(path, save(tensors, metadata={"infscope": json.dumps(self._metadata())}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KroneckerBasis:
        """Read and validate a file written by :meth:`save` (:class:`InputError` otherwise)."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no eigenbasis file at {path}")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                raw = (handle.metadata() or {}).get("infscope")
            tensors = load_file(str(path))
            meta = json.loads(raw) if raw is not None else None
        except Exception as exc:  # safetensors and json raise their own error types
            raise InputError(f"{path} is not a readable eigenbasis file: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{path} is not an infscope eigenbasis file")
        if meta.get("version") != VERSION:
            raise InputError(f"{path}: unsupported eigenbasis version {meta.get('version')!r}")
        try:
            modules, expected = [], set()
            for index, entry in enumerate(meta["modules"]):
                rows, cols = (int(x) for x in entry["shape"])
                r_out, r_in = (int(x) for x in entry["ranks"])
                fields: dict[str, Any] = {}
                if entry["kronecker"]:
                    shapes = {
                        "s_values": (r_out,),
                        "s_vectors": (rows, r_out),
                        "a_values": (r_in,),
                        "a_vectors": (cols, r_in),
                    }
                    for name, shape in shapes.items():
                        key = f"{index}.{name}"
                        expected.add(key)
                        array = tensors.get(key)
                        if array is None or array.shape != shape:
                            found = None if array is None else array.shape
                            raise InputError(f"array {key!r} has shape {found}, expected {shape}")
                        if array.dtype not in (np.float32, np.float64):
                            raise InputError(f"array {key!r} is {array.dtype}, not float32/64")
                        if not np.isfinite(array).all():
                            raise InputError(f"array {key!r} holds NaN or inf")
                        fields[name] = array
                modules.append(
                    ModuleBasis(
                        str(entry["name"]),
                        rows,
                        cols,
                        bool(entry["kronecker"]),
                        float(entry["trace"]),
                        int(entry["tokens"]),
                        s_total=float(entry["s_total"]),
                        a_total=float(entry["a_total"]),
                        **fields,
                    )
                )
            unknown = sorted(set(tensors) - expected)
            if unknown:
                raise InputError(f"unexpected arrays {unknown[:5]}")
            fisher = str(meta["fisher"])
            if fisher not in FISHER_KINDS:
                raise InputError(f"unknown fisher {fisher!r}")
            fingerprints = tuple(str(f) for f in meta["fingerprints"])
            return cls(modules, fisher, fingerprints, int(meta["n_examples"]), meta["settings"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: inconsistent eigenbasis file: {exc}") from None


def as_bases(basis: Any) -> list[KroneckerBasis]:
    """A basis, a saved basis's path, or a sequence of them (one per checkpoint) as a list of
    loaded bases. Several must each belong to one checkpoint, all different
    (:func:`~infscope.gradients.basis.check_bases`)."""
    given = list(basis) if isinstance(basis, (list, tuple)) else [basis]
    return check_bases(
        [b if isinstance(b, KroneckerBasis) or b is None else KroneckerBasis.load(b) for b in given]
    )
