"""``infscope store``: inspect a feature store, check every shard, add per-checkpoint facts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from infscope.cli.output import console, warn

app = typer.Typer(
    help="Inspect a feature store, verify its shards, and add facts such as learning rates.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

StoreArgument = Annotated[Path, typer.Argument(help="Feature store directory.")]


@app.command()
def info(store: StoreArgument) -> None:
    """What a store holds: examples, features, projection, task, and per checkpoint its learning
    rate, weights fingerprint and shards written.

    \b
    Example:
      infscope store info runs/train
    """
    from infscope.store import FeatureStore
    from infscope.store.summary import projection_lines, task_line

    opened = FeatureStore.open(store)
    spec = opened.spec
    size = sum(p.stat().st_size for p in opened.root.rglob("*") if p.is_file())
    console.print(
        f"[bold]{escape(str(store))}[/]: {opened.n_examples:,} examples x {spec.feature_dim:,} "
        f"{spec.dtype} features ({spec.gradient} gradients), {len(spec.modules)} modules, "
        f"{size / 2**20:.1f} MiB"
    )
    for line in projection_lines(spec.projection):
        console.print(escape(line), soft_wrap=True)
    console.print(escape(task_line(spec.task)), soft_wrap=True)
    table = Table(title="checkpoints")
    for column in ("checkpoint", "learning rate", "weights", "shards"):
        table.add_column(column)
    status = opened.status()
    for checkpoint in opened.checkpoints:
        written, expected = status[checkpoint.id]
        table.add_row(
            escape(checkpoint.id),
            "-" if checkpoint.learning_rate is None else f"{checkpoint.learning_rate:g}",
            (checkpoint.fingerprint or "-")[:12],
            f"{written}/{expected}" + ("" if written == expected else " (incomplete)"),
        )
    console.print(table)
    for group in opened.same_weights():
        warn(f"checkpoints {', '.join(group)} were extracted from identical weights")


@app.command()
def verify(store: StoreArgument) -> None:
    """Check every shard now: readable, the expected shape and dtype, its sha256 equal to the
    one recorded at writing, every value finite. Exit status 2 naming each bad shard.

    \b
    Example:
      infscope store verify runs/train
    """
    from infscope.store import FeatureStore

    opened = FeatureStore.open(store)
    opened.verify()
    status = opened.status()
    written = sum(w for w, _ in status.values())
    expected = sum(e for _, e in status.values())
    if written < expected:
        warn(f"{expected - written} of {expected} shards are not written yet (resume extraction)")
    console.print(
        f"[green]{escape(str(store))}[/]: {written} shards of {len(status)} checkpoint(s) intact"
    )


@app.command("set")
def set_facts(
    store: StoreArgument,
    checkpoint: Annotated[str, typer.Option(help="Checkpoint to amend.")],
    learning_rate: Annotated[
        float, typer.Option(help="Learning rate in effect at this checkpoint (TracIn's weight).")
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a learning rate recorded already.")
    ] = False,
) -> None:
    """Record a checkpoint's learning rate in an existing store, without re-extracting.

    \b
    Example:
      infscope store set runs/train --checkpoint epoch-3 --learning-rate 2e-5
    """
    from infscope.store import FeatureStore

    info = FeatureStore.open(store).set_learning_rate(checkpoint, learning_rate, replace=replace)
    console.print(
        f"[green]{escape(str(store))}[/]: checkpoint {info.id!r} learning rate "
        f"{info.learning_rate:g}"
    )
