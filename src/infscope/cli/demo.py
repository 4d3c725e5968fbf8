"""``infscope demo``: what helped and hurt real predictions, on built-in data (the library part is
:mod:`infscope.demo`; this prints it)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer

from infscope.cli.output import console


def demo(
    flip_fraction: Annotated[
        float, typer.Option(help="Fraction of training labels flipped.")
    ] = 0.1,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 30,
    queries: Annotated[int, typer.Option(min=1, help="Test predictions to explain.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the split, flips and training.")] = 0,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="torch threads (1: tiny matrices gain nothing from more, and a busy "
            "machine loses a lot).",
        ),
    ] = 1,
) -> None:
    """Show what helped and hurt real predictions: no arguments, no downloads.

    Trains a small MLP on scikit-learn's bundled digits with some labels flipped, prints the
    training images that most helped and hurt a few test predictions (TracIn), and how well
    self-influence finds the flipped labels.

    \b
    Example:
      infscope demo --flip-fraction 0.2
    """
    from infscope.demo import DemoConfig, digit_art, run_demo

    config = DemoConfig(flip_fraction=flip_fraction, epochs=epochs, seed=seed, threads=threads)
    config.validate()
    console.print(
        f"[bold]infscope demo[/]: MLP on 8x8 digits, {flip_fraction:.0%} of training labels "
        f"flipped, TracIn over {epochs // config.checkpoint_every} checkpoints, "
        f"{config.projection.kind} projection (k={config.projection.dim})"
    )
    result = run_demo(config)
    console.print(f"test accuracy {result.test_accuracy:.1%}\n")
    helpful, helpful_scores = result.scores.top(3)
    harmful, harmful_scores = result.scores.top(3, harmful=True)
    # explain misclassified test points first (the interesting ones), then correct ones
    wrong = np.flatnonzero(result.test_predictions != result.test_labels)
    right = np.flatnonzero(result.test_predictions == result.test_labels)
    for q in np.concatenate([wrong[: (queries + 1) // 2], right])[:queries]:
        query_tile = (
            f"test {q}",
            f"true {result.test_labels[q]}, pred {result.test_predictions[q]}",
            digit_art(result.test_images[q]),
        )
        for indices, values, word in (
            (helpful, helpful_scores, "helps"),
            (harmful, harmful_scores, "hurts"),
        ):
            tiles = [query_tile] + [
                (
                    f"{word} {v:+.3g}",
                    f"label {result.train_labels[i]}{' FLIPPED' if result.flipped[i] else ''}",
                    digit_art(result.train_images[i]),
                )
                for i, v in zip(indices[q], values[q])
            ]
            for line in range(10):
                cells = [t[line] if line < 2 else t[2][line - 2] for t in tiles]
                console.print("   ".join(f"{c:<16}" for c in cells), markup=False, soft_wrap=True)
            console.print()
    flipped = int(result.flipped.sum())
    console.print(
        f"[bold]mislabel detection[/] by self-influence: AUC {result.auc:.3f} "
        f"({flipped} flipped of {len(result.flipped)}; random = 0.5)"
    )
    for fraction, found in result.found_at.items():
        console.print(
            f"  inspecting the top {fraction:.0%} finds {found:.0%} of flipped labels (random: {fraction:.0%})"
        )

