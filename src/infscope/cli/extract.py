"""``infscope features``: extract a data set's gradient features into a store (and the curvature
that goes with them) — the CLI face of :class:`infscope.analysis.Analysis`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from infscope.cli.config import save_config_to
from infscope.cli.inputs import ModelOptions, ModuleOptions
from infscope.cli.options import option_groups
from infscope.cli.output import console
from infscope.errors import InputError


def parse_dim(value: Any) -> int | str:
    """``--dim``: a whole number ≥ 0, or ``auto``."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
        number = value
    else:
        try:
            number = int(str(value))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is neither a whole number nor 'auto'") from None
    if number != "auto" and number < 0:
        raise typer.BadParameter(f"{number} is below 0")
    return number


@dataclass(frozen=True)
class ProjectionOptions:
    """How gradients are projected; the eigen projection's basis and how it is fitted."""

    projection: Annotated[
        str | None,
        typer.Option(
            help="kronecker | eigen (curvature-aware, for ekfac/kfac; needs --basis) | sjlt | "
            "gaussian | rademacher | identity. Default: eigen for --task hf-causal-lm, "
            "else kronecker.",
            show_default=False,
        ),
    ] = None
    dim: Annotated[
        str | None,
        typer.Option(
            parser=parse_dim,
            metavar="K|auto",
            help="Feature dimension k (ignored by identity). eigen: 0 = full rank, 'auto' = "
            "chosen from the basis's spectrum (recorded in the store). Default: auto for "
            "eigen, 4096 otherwise.",
            show_default=False,
        ),
    ] = None
    seed: Annotated[int, typer.Option(help="Projection seed.")] = 0
    basis: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="eigen: the eigenbasis file, fitted on DATA and saved there when it does not "
            "exist yet (training data), read otherwise; repeat it with one file per checkpoint "
            "(each fitted first with --basis-only) to project every checkpoint on its own.",
        ),
    ] = None
    fisher: Annotated[
        str, typer.Option(help="eigen basis fitted here: empirical | true (sampled labels).")
    ] = "empirical"


@dataclass(frozen=True)
class ExtractionOptions:
    """What the store records and how the extraction runs."""

    checkpoint: Annotated[str, typer.Option(help="Name of this model state in the store.")] = (
        "final"
    )
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate at this checkpoint (TracIn).")
    ] = None
    gradient: Annotated[
        str,
        typer.Option(
            help="'loss' for training data, 'measurement' for queries, 'fisher' for the "
            "training data's sampled-label gradients (true-Fisher curvature: score --fisher)."
        ),
    ] = "loss"
    sample_seed: Annotated[
        int, typer.Option(help="Seed of sampled labels (--gradient fisher, --fisher true).")
    ] = 0
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 32
    shard_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Examples per shard file (default: 1024, fewer for wide features)."
        ),
    ] = None
    dtype: Annotated[str, typer.Option(help="float32 | float16 on disk.")] = "float32"
    worker: Annotated[
        int | None,
        typer.Option(
            min=0, help="This worker's index (disjoint shards). Default: the torchrun rank, else 0."
        ),
    ] = None
    num_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Workers sharing the store. Default: torchrun's world size (one process "
            "group: covariances and bases summed over ranks), else 1.",
        ),
    ] = None
    fit_factors: Annotated[
        Path | None,
        typer.Option(help="Also fit K-FAC/EK-FAC factors and save them here (.safetensors)."),
    ] = None


@option_groups
def features(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Argument(help="Examples: .jsonl/.json/.csv/.parquet with an 'id' field.")
    ],
    model: ModelOptions,
    modules: ModuleOptions,
    projection: ProjectionOptions,
    run: ExtractionOptions,
    out: Annotated[Path | None, typer.Option(help="Feature store directory (resumed).")] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Weights (.safetensors of the whole model, e.g. `infscope unlearn`'s "
            "model.safetensors) loaded into --model before extraction."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: model's).")] = None,
    basis_only: Annotated[
        bool, typer.Option("--basis-only", help="Only fit the eigenbasis into --basis; no store.")
    ] = False,
) -> None:
    """Extract projected per-example gradients of DATA into a resumable feature store.

    Re-run the same command after a crash: finished shards are kept. Warns about weights the
    model directory lacks (initialised on load), slow projections and checkpoints that repeat
    another's weights. --weights explains other weights of the same model (an unlearned one).

    \b
    Example:
      infscope features train.jsonl --model runs/model --out runs/train \\
          --learning-rate 2e-5
    """
    from infscope import distributed
    from infscope.analysis import Analysis
    from infscope.data import ExampleSet
    from infscope.weights import load_weights

    if run.worker is None and run.num_workers is None:
        distributed.init_from_environment()  # under torchrun: bases and stores over the ranks
    if out is None and not basis_only:
        raise InputError("give --out, the feature store directory")
    kind, dim = _projection(projection, model.task, basis_only)
    _check_outputs(out, projection.basis, run.fit_factors)
    examples = ExampleSet.from_file(data)
    network, task = model.load()
    if weights is not None:
        load_weights(network, weights)
    analysis = Analysis(
        network, task, projection=kind, dim=dim, seed=projection.seed,
        modules=modules.selection(), device=device,
    )  # fmt: skip
    fitted = []
    if kind == "eigen":
        options = {"fisher": projection.fisher, "sample_seed": run.sample_seed}
        fit = run.gradient == "loss"
        fitted = analysis.use_bases(
            projection.basis or [], examples, fit=fit, batch_size=run.batch_size, **options
        )
        for path in fitted:
            console.print(f"eigenbasis ({projection.fisher} Fisher) → {escape(str(path))}")
    if basis_only:
        save_config_to(ctx, projection.basis[0].with_suffix(".config.yaml"))
        if not fitted:
            console.print(f"{escape(str(projection.basis[0]))} exists: kept, not refitted")
        return
    _extract(ctx, analysis, examples, out, run, kind)


def _projection(
    options: ProjectionOptions, task: str, basis_only: bool
) -> tuple[str, int | str | None]:
    """The projection kind and ``dim`` the options ask for, with the defaults filled in: a
    causal LM gets the eigen projection (it needs ``--basis``), whose budget is chosen from the
    spectrum (``auto``); a random projection gets 4096 features; eigen ``0`` is full rank."""
    kind = "eigen" if basis_only else options.projection
    if kind is None:
        kind = "eigen" if task == "hf-causal-lm" else "kronecker"
        if kind == "eigen" and not options.basis:
            raise InputError(
                "a causal LM is projected on its K-FAC eigenbasis by default: give --basis FILE "
                "(fitted on the training data and saved there the first time), or --projection "
                "kronecker"
            )
    if options.basis and kind != "eigen":
        raise InputError("--basis applies to --projection eigen only")
    dim = options.dim
    if dim is None:
        return kind, "auto" if kind == "eigen" else 4096
    if dim == "auto" and kind != "eigen":
        raise InputError("--dim auto applies to --projection eigen only")
    return kind, (dim or None) if kind == "eigen" else dim


def _check_outputs(out: Path | None, basis: list[Path] | None, factors: Path | None) -> None:
    """Every path the run will write is writable, before any model is loaded."""
    from infscope.io import check_writable

    if out is not None:
        check_writable(out, directory=True)
    for path in [p for p in basis or [] if not p.exists()]:  # fitted and saved there
        check_writable(path, directory=False, option="--basis")
    if factors is not None:
        check_writable(factors, directory=False, option="--fit-factors")


def _extract(ctx, analysis, examples, out: Path, run: ExtractionOptions, kind: str) -> None:
    """Extract the store (and factors) and report what was written."""
    from infscope import distributed

    extractor = analysis.extractor
    console.print(
        f"tracking {len(extractor.modules)} modules, {extractor.projector.gradient_dim:,} "
        f"parameters → {extractor.feature_dim} features ({kind})"
    )
    store = analysis.extract(
        examples, out, run.checkpoint, gradient=run.gradient, fit_factors=run.fit_factors,
        worker=run.worker, num_workers=run.num_workers, learning_rate=run.learning_rate,
        batch_size=run.batch_size, shard_size=run.shard_size, dtype=run.dtype,
        sample_seed=run.sample_seed,
    )  # fmt: skip
    if run.fit_factors is not None:
        console.print(f"K-FAC/EK-FAC factors → {escape(str(run.fit_factors))}")
    grouped = run.worker is None and run.num_workers is None and distributed.world()[1] > 1
    workers = run.num_workers or 1
    # one file per checkpoint (and independent worker) of the store: each is a run of its own
    part = f".worker-{run.worker or 0}-of-{workers}" if workers > 1 and not grouped else ""
    save_config_to(ctx, out / f"config.{run.checkpoint}{part}.yaml")
    written, expected = store.status()[run.checkpoint]
    console.print(
        f"[green]{escape(str(out))}[/]: checkpoint {run.checkpoint!r}, {written}/{expected} shards"
    )
