"""Command-line options shared by the commands that build an estimator (score, index), declared
once: each is an ``Annotated`` type, and :func:`estimator_spec` turns their values into the
library's :class:`~infscope.attribution.registry.EstimatorSpec`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Method = Annotated[
    str,
    typer.Option(
        help="dot | cosine | tracin | influence | trak | datainf | representer | ekfac | kfac."
    ),
]
Normalize = Annotated[
    str, typer.Option(help="none | unit | relatif (influence); explicit, never implied.")
]
Checkpoint = Annotated[
    str | None,
    typer.Option(help="Checkpoint id (default: last; tracin/trak: all); 'all' averages influence."),
]
Damping = Annotated[
    float | None,
    typer.Option(
        help="Damping, the same meaning for every method: relative to trace(H)/min(n, dim) of "
        "the curvature block it damps (default: the method's, 1 for influence/trak/datainf, 0.1 "
        "for ekfac/kfac); see --damping-mode."
    ),
]
DampingMode = Annotated[str, typer.Option(help="relative (as above) | absolute (λ itself).")]
Solver = Annotated[
    str,
    typer.Option(
        help="influence/trak: auto (exact when small enough, else cg) | exact | cg | lissa | "
        "arnoldi."
    ),
]
L2 = Annotated[float | None, typer.Option(help="representer: the final layer's L2 regularisation.")]
Factors = Annotated[
    list[Path] | None,
    typer.Option(
        metavar="FILE",
        help="ekfac/kfac: factors file from --fit-factors / KFACFactors.save, or the --basis "
        "file(s) of an eigen-projected store (repeat for one per checkpoint).",
    ),
]
Fisher = Annotated[
    Path | None,
    typer.Option(
        help="ekfac/kfac/influence: a --gradient fisher store of the training data; its "
        "statistics give the curvature (true Fisher). Default: the training store's."
    ),
]
BlockSize = Annotated[int, typer.Option(min=1, help="Rows per block (bounds memory).")]
QueryRank = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="ekfac/kfac: score with rank-R preconditioned queries (all queries at once, one "
        "pass over the training store; pays on wide modules). Default: exact.",
    ),
]


def estimator_spec(
    method: str,
    normalize: str,
    checkpoint: str | None,
    damping: float | None,
    damping_mode: str,
    solver: str,
    l2_regularization: float | None,
    factors: list[Path] | None,
    fisher: Path | None,
    block_size: int,
    query_rank: int | None = None,
):
    """The :class:`EstimatorSpec` of the shared options (paths made absolute, so the spec
    means the same from any working directory)."""
    from infscope.attribution.registry import EstimatorSpec

    return EstimatorSpec(
        method=method,
        normalize=normalize,
        checkpoint=checkpoint,
        damping=damping,
        damping_mode=damping_mode,
        solver=solver,
        l2_regularization=l2_regularization,
        factors=tuple(str(Path(f).absolute()) for f in factors or ()),
        block_size=block_size,
        fisher=None if fisher is None else str(Path(fisher).absolute()),
        query_rank=query_rank,
    )
