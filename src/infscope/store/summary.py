"""A store's projection and task descriptions (``spec.projection``, ``spec.task``, JSON) as a few
readable lines.

The description records everything needed to reproduce the features (seeds, chunk sizes, cache
limits, the block layout); a reader wants the kind, the width, the seed, the basis and where each
module sits. ``infscope store info`` prints these lines.
"""

from __future__ import annotations

from typing import Any

from infscope.errors import InputError
from infscope.store.layout import BlockLayout

#: modules listed one by one before the rest are counted
SHOWN_MODULES = 8


def _basis(projection: dict[str, Any]) -> str:
    basis = projection.get("basis")
    fisher = projection.get("fisher")
    which = f", {fisher} Fisher" if fisher else ""
    if isinstance(basis, list):
        return f" on {len(basis)} bases, one per checkpoint{which}"
    return f" on basis {str(basis)[:12]}{which}" if basis else ""


def projection_lines(projection: dict[str, Any]) -> list[str]:
    """``projection: kronecker, 14 features (dim 16 asked), seed 0`` and, when the projection
    keeps modules apart, ``modules (rows x cols): 0 4x2, 2 3x2``."""
    kind = str(projection.get("kind", "?"))
    width = projection.get("feature_dim")
    parts = [f"{width:,} features" if isinstance(width, int) else "features"]
    dim = projection.get("dim")
    factors = projection.get("factor_dims")
    if factors:
        parts[0] += f" (factor dims {factors[0]} x {factors[1]})"
    elif isinstance(dim, int) and dim != width:
        parts[0] += f" (dim {dim:,} asked)"
    elif dim == "auto":
        parts[0] += " (dim chosen from the spectrum)"
    if kind == "identity":
        parts[0] += " (exact gradients)"
    else:
        parts.append(f"seed {projection.get('seed', 0)}")
    if kind == "sjlt":
        parts.append(f"{projection.get('sjlt_nonzeros', 1)} nonzero(s) per coordinate")
    lines = [f"projection: {kind}{_basis(projection)}, {', '.join(parts)}"]
    lines += budget_lines(projection.get("budget"))
    blocks = projection.get("blocks")
    if blocks:
        try:
            layout = BlockLayout.parse(blocks)
        except InputError as err:
            return [*lines, f"modules: unreadable layout ({err})"]
        shown = [f"{b.module} {b.rows}x{b.cols}" for b in layout.blocks[:SHOWN_MODULES]]
        more = len(layout.blocks) - len(shown)
        lines.append(
            "modules (rows x cols): " + ", ".join(shown) + (f", … {more} more" if more else "")
        )
    elif projection.get("ranks"):
        lines.append("modules: each checkpoint has its own rank layout (one basis each)")
    return lines


def budget_lines(budget: Any) -> list[str]:
    """What ``dim="auto"`` chose, per basis: the features kept and the share of the curvature's
    effective dimension they hold, with a warning line when that share is low."""
    if not budget:
        return []
    chosen = budget if isinstance(budget, list) else [budget]
    if not all(isinstance(c, dict) for c in chosen):
        return ["budget: unreadable"]
    dims = ", ".join(f"{int(c.get('dim', 0)):,}" for c in chosen)
    kept = [float(c.get("kept_share", 0.0)) for c in chosen]
    shares = ", ".join(f"{k:.1%}" for k in kept)
    lines = [
        f"budget: k = {dims} chosen from the spectrum, keeping {shares} of the curvature's "
        f"effective dimension (target {float(chosen[0].get('target_share', 0)):.0%})"
    ]
    if any(c.get("low") for c in chosen):
        remedy = (
            "refit the basis with a larger sketch_rank or max_exact_dim"
            if any(c.get("low_at_full_rank", True) for c in chosen)
            else "a larger dim keeps more (the whole basis holds enough)"
        )
        lines.append(
            f"warning: the projection keeps only {min(kept):.0%} of the effective dimension; "
            + remedy
        )
    return lines


def task_line(task: dict[str, Any]) -> str:
    """``task: HFSequenceClassificationTask, measurement loss, max_length 128``."""
    rest = {k: v for k, v in task.items() if k != "task"}
    described = ", ".join(
        f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in rest.items()
    )
    return f"task: {task.get('task', '?')}" + (f", {described}" if described else "")
