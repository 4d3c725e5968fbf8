"""One way to draw a figure to a file: headless (Agg), closed afterwards, format from the suffix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def saved_figure(
    path: str | Path, figsize: tuple[float, float] = (6.4, 4.2), grid: tuple[int, int] = (1, 1)
) -> Iterator[Any]:
    """Yield a matplotlib axis (an array of axes for a ``grid`` of rows x columns other than
    1 x 1); on exit the figure is laid out, saved to ``path`` (PNG, SVG, PDF by suffix) and
    closed, also when drawing failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(*grid, figsize=figsize)
    try:
        yield axis
        figure.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)
