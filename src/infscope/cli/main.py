"""The ``infscope`` command line: features → score → top, and a one-command demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from infscope.cli import options
from infscope.cli.config import save_config_to
from infscope.cli.evaluate import app as evaluate_app
from infscope.cli.output import Commands, console, progress, warn
from infscope.cli.prune import prune
from infscope.cli.select import select
from infscope.cli.store import app as store_app
from infscope.errors import InputError
from infscope.terminal import printable

app = typer.Typer(
    help=(
        "infscope: which training examples matter, for what. Extract per-example gradient "
        "features, score training examples against queries, and inspect the most helpful and "
        "harmful ones. Positive scores mean a training example helps (lowers the query's loss)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=Commands,
)


@app.command()
def features(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Argument(help="Examples: .jsonl/.json/.csv/.parquet with an 'id' field.")
    ],
    model: Annotated[
        str,
        typer.Option(
            help="HF model or PEFT adapter directory, or module:function for --task factory."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Feature store directory (resumed if it exists)."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Weights (.safetensors of the whole model, e.g. `infscope unlearn`'s "
            "model.safetensors) loaded into --model before extraction."
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="hf-seqcls | hf-causal-lm | factory.")] = "hf-seqcls",
    checkpoint: Annotated[
        str, typer.Option(help="Name of this model state in the store.")
    ] = "final",
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate at this checkpoint (TracIn).")
    ] = None,
    gradient: Annotated[
        str,
        typer.Option(
            help="'loss' for training data, 'measurement' for queries, 'fisher' for the "
            "training data's sampled-label gradients (true-Fisher curvature: score --fisher)."
        ),
    ] = "loss",
    measurement: Annotated[
        str | None,
        typer.Option(help="Query measurement: loss, margin (classifiers), logprob (LMs)."),
    ] = None,
    projection: Annotated[
        str,
        typer.Option(
            help="kronecker | eigen (curvature-aware, for ekfac/kfac; needs --basis) | sjlt | "
            "gaussian | rademacher | identity."
        ),
    ] = "kronecker",
    dim: Annotated[
        int,
        typer.Option(
            min=0, help="Feature dimension k (ignored by identity; eigen: 0 = full rank)."
        ),
    ] = 4096,
    seed: Annotated[int, typer.Option(help="Projection seed.")] = 0,
    basis: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="eigen: the eigenbasis file, fitted on DATA and saved there when it does not "
            "exist yet (training data), read otherwise; repeat it with one file per checkpoint "
            "(each fitted first with --basis-only) to project every checkpoint on its own.",
        ),
    ] = None,
    basis_only: Annotated[
        bool,
        typer.Option(
            "--basis-only", help="Only fit the eigenbasis of this model into --basis; no store."
        ),
    ] = False,
    fisher: Annotated[
        str, typer.Option(help="eigen basis fitted here: empirical | true (sampled labels).")
    ] = "empirical",
    sample_seed: Annotated[
        int, typer.Option(help="Seed of sampled labels (--gradient fisher, --fisher true).")
    ] = 0,
    include: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="Glob of module names to track (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="Glob of module names to skip (repeatable)."),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TYPE", help="Layer types: Linear, Conv1D, Conv2d, Embedding, LayerNorm."
        ),
    ] = None,
    text_field: Annotated[
        list[str],
        typer.Option(metavar="FIELD", help="Text field(s); give two for sentence pairs."),
    ] = ["text"],  # noqa: B006
    label_field: Annotated[
        str, typer.Option(help="Label field: a class index, or a name of the model's label2id.")
    ] = "label",
    prompt_field: Annotated[str, typer.Option(help="Prompt field (hf-causal-lm).")] = "prompt",
    completion_field: Annotated[
        str, typer.Option(help="Completion field (hf-causal-lm).")
    ] = "completion",
    max_length: Annotated[
        int | None,
        typer.Option(
            min=1, help="Token limit per example (default: 128, or the model's if smaller)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 32,
    shard_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Examples per shard file (default: 1024, fewer for wide features)."
        ),
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 | float16 on disk.")] = "float32",
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: model's).")
    ] = None,
    worker: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="This worker's index (disjoint shards). Default: the torchrun rank, else 0.",
        ),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Workers sharing the store. Default: torchrun's world size (one process "
            "group: covariances and bases summed over ranks), else 1.",
        ),
    ] = None,
    fit_factors: Annotated[
        Path | None,
        typer.Option(help="Also fit K-FAC/EK-FAC factors and save them here (.safetensors)."),
    ] = None,
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
    from infscope.cli.models import load_model_and_task
    from infscope.data import ExampleSet
    from infscope.devices import resolve_device
    from infscope.gradients import GradientExtractor, ModuleSelection, ProjectionConfig
    from infscope.gradients.featurize import featurize
    from infscope.weights import load_weights

    if out is None and not basis_only:
        raise InputError("give --out, the feature store directory")
    from infscope.io import check_writable

    if out is not None:
        check_writable(out, directory=True)
    for path in [p for p in basis or [] if not p.exists()]:  # fitted and saved there
        check_writable(path, directory=False, option="--basis")
    if fit_factors is not None:
        check_writable(fit_factors, directory=False, option="--fit-factors")
    from infscope import distributed

    if worker is None and num_workers is None and distributed.init_from_environment():
        worker, num_workers = distributed.world()  # featurize shards and reduces by itself
        grouped = True
    else:
        worker, num_workers, grouped = worker or 0, num_workers or 1, False
    if not 0 <= worker < num_workers:
        raise InputError(f"--worker {worker} is not below --num-workers {num_workers}")
    target = resolve_device(device) if device else None
    examples = ExampleSet.from_file(data)
    loaded, task_obj = load_model_and_task(
        model,
        task,
        text_fields=tuple(text_field),
        label_field=label_field,
        prompt_field=prompt_field,
        completion_field=completion_field,
        max_length=max_length,
        measurement=measurement,
    )
    if weights is not None:
        load_weights(loaded, weights)
    selection = ModuleSelection(
        tuple(include) if include else None,
        tuple(exclude or ()),
        tuple(types) if types else None,
    )
    if target is not None:
        loaded.to(target)
    if projection == "eigen" or basis_only:
        from infscope.curvature import fit_or_load_bases

        bases, fitted = fit_or_load_bases(
            basis or [],
            GradientExtractor(loaded, task_obj, ProjectionConfig("identity", None), selection),
            examples,
            fit=gradient == "loss",
            fisher=fisher,
            sample_seed=sample_seed,
            batch_size=batch_size,
        )
        for path in fitted:
            console.print(f"eigenbasis ({fisher} Fisher) → {escape(str(path))}")
        if basis_only:
            save_config_to(ctx, basis[0].with_suffix(".config.yaml"))
            if not fitted:
                console.print(f"{escape(str(basis[0]))} exists: kept, not refitted")
            return
        config = ProjectionConfig("eigen", dim or None, seed=seed, basis=bases)
    else:
        if basis:
            raise InputError("--basis applies to --projection eigen only")
        config = ProjectionConfig(
            kind=projection, dim=None if projection == "identity" else dim, seed=seed
        )
    extractor = GradientExtractor(loaded, task_obj, config, selection, device=target)
    console.print(
        f"tracking {len(extractor.modules)} modules, {extractor.projector.gradient_dim:,} "
        f"parameters → {extractor.feature_dim} features ({projection})"
    )
    if fit_factors is not None and gradient != "loss":
        raise InputError("--fit-factors needs training (loss) gradients")
    # one process writing the whole store: the factors come from the same passes
    same_pass = fit_factors is not None and (num_workers == 1 or grouped)
    options = dict(
        gradient=gradient,
        learning_rate=learning_rate,
        batch_size=batch_size,
        shard_size=shard_size,
        dtype=dtype,
        worker=None if grouped else worker,
        num_workers=None if grouped else num_workers,
        sample_seed=sample_seed,
    )
    if same_pass:
        from infscope.curvature import featurize_with_covariances

        store, covariances = featurize_with_covariances(
            extractor, examples, out, checkpoint, **options
        )
    else:
        store = featurize(extractor, examples, out, checkpoint, **options)
    if fit_factors is not None:
        from infscope.curvature import KFACFactors

        if not store.is_complete(checkpoint):
            raise InputError("--fit-factors needs the complete store: run it with the last worker")
        if same_pass:
            factors = KFACFactors.from_covariances(covariances, store, checkpoint)
        else:
            factors = KFACFactors.fit(
                extractor, examples, store=store, checkpoint=checkpoint, batch_size=batch_size
            )
        factors.save(fit_factors)
        console.print(f"K-FAC/EK-FAC factors → {escape(str(fit_factors))}")
    # one file per checkpoint (and worker) of the store: each is a run of its own
    part = f".worker-{worker}-of-{num_workers}" if num_workers > 1 and not grouped else ""
    save_config_to(ctx, out / f"config.{checkpoint}{part}.yaml")
    written, expected = store.status()[checkpoint]
    console.print(
        f"[green]{escape(str(out))}[/]: checkpoint {checkpoint!r}, {written}/{expected} shards"
    )


@app.command()
def score(
    train: Annotated[Path, typer.Option(help="Training feature store.")],
    out: Annotated[Path, typer.Option(help="Directory for the scores (values.npy + scores.json).")],
    query: Annotated[
        Path | None, typer.Option(help="Query feature store; omit for self-influence.")
    ] = None,
    method: options.Method = "tracin",
    normalize: options.Normalize = "none",
    checkpoint: options.Checkpoint = None,
    damping: options.Damping = None,
    damping_mode: options.DampingMode = "relative",
    solver: options.Solver = "auto",
    l2_regularization: options.L2 = None,
    factors: options.Factors = None,
    fisher: options.Fisher = None,
    query_rank: options.QueryRank = None,
    block_size: options.BlockSize = 4096,
    device: Annotated[
        str | None,
        typer.Option(help="Run the query x train products in torch on this device (cuda, cuda:1)."),
    ] = None,
    allow_other_weights: Annotated[
        bool,
        typer.Option(
            "--allow-other-weights",
            help="Score queries extracted from other model weights than the training store "
            "(deliberate cross-model use; refused by default).",
        ),
    ] = False,
    table: Annotated[
        str,
        typer.Option(
            help="Also write OUT/scores.csv or .parquet (ids and scores, for a spreadsheet or "
            "pandas): csv | parquet | none."
        ),
    ] = "csv",
    top: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep only each query's TOP most helpful and harmful training examples, found "
            "while the score blocks stream past (the full matrix is never held): OUT/top.npz, "
            "top.json and a table of the rows.",
        ),
    ] = None,
) -> None:
    """Score training examples: query x train influence, or self-influence without --query.

    Writes OUT/values.npy and OUT/scores.json (read by top, evaluate, select, prune) and a
    table of ids and scores. Queries from other model weights than the training store are
    refused.

    \b
    Example:
      infscope score --train runs/train --query runs/test --method tracin \\
          --out runs/scores
    """
    from infscope.attribution.scores import TABLE_FORMATS
    from infscope.io import check_writable, write_table
    from infscope.store import FeatureStore

    check_writable(out, directory=True)
    if table not in TABLE_FORMATS:
        raise InputError(f"--table must be one of {', '.join(TABLE_FORMATS)}, got {table!r}")
    if top is not None and query is None:
        raise InputError("--top needs --query (self-influence is one value per example)")
    spec = options.estimator_spec(
        method,
        normalize,
        checkpoint,
        damping,
        damping_mode,
        solver,
        l2_regularization,
        factors,
        fisher,
        block_size,
        query_rank,
    )
    estimator = spec.build()
    train_store = FeatureStore.open(train)
    query_store = FeatureStore.open(query) if query else None
    progress(f"fitting {estimator.name} on {train_store.n_examples:,} training examples")
    estimator.to(device).fit(train_store)
    if top is not None:
        best = estimator.score_top(query_store, top, allow_other_weights=allow_other_weights)
        best.save(out)
        written = ["top.npz", "top.json"]
        if table != "none":
            rows = best.top_rows()
            write_table(out / f"top.{table}", {name: [r[name] for r in rows] for name in rows[0]})
            written.append(f"top.{table}")
        console.print(
            f"[green]{escape(str(out))}[/]: {estimator.name} top {best.k} of "
            f"{train_store.n_examples:,} for {query_store.n_examples:,} queries ({', '.join(written)})"
        )
        return
    if query_store is None:
        progress("self-influence")
        result = estimator.self_influence()
    else:
        result = estimator.score(query_store, allow_other_weights=allow_other_weights)
    result.save(out)
    written = ["values.npy", "scores.json"]
    if table != "none":
        path = out / f"scores.{table}"
        if result.write_table(path):
            written.append(path.name)
        else:
            warn(
                f"{path.name} not written: a {result.values.shape[0]:,} x "
                f"{result.values.shape[1]:,} matrix is too large for a table; `infscope top "
                f"{out} --out top.csv` writes the top examples per query"
            )
    console.print(
        f"[green]{escape(str(out))}[/]: {estimator.name} scores {tuple(result.values.shape)} "
        f"({', '.join(written)})"
    )


def _records(path: Path | None) -> dict[str, dict]:
    """Records of a data file by id (empty without one)."""
    if path is None:
        return {}
    from infscope.data import ExampleSet

    data = ExampleSet.from_file(path)
    return dict(zip(data.ids, data.examples))


def _warn_unmatched(path: Path | None, records: dict[str, dict], ids: list[str], what: str) -> None:
    """A warning when the data file lacks ids the table shows (their example cells stay empty)."""
    missing = [i for i in dict.fromkeys(ids) if i not in records]
    if path is None or not missing:
        return
    share = "none" if len(missing) == len(set(ids)) else f"{len(missing)} of {len(set(ids))}"
    warn(
        f"{path} holds {share} of the shown {what} ids (e.g. {missing[0]!r}), so their "
        "examples are not shown: give the data file the features were extracted from"
    )


def _shown(record: dict | None, fields: list[str]) -> str:
    """The fields of a record joined (the whole record, cut, when it has none of them)."""
    if record is None:
        return ""
    parts = [str(record[f]) for f in fields if f in record]
    return " | ".join(parts) if parts else json.dumps(record)[:200]


@app.command()
def top(
    scores: Annotated[Path, typer.Argument(help="Scores directory written by `infscope score`.")],
    k: Annotated[int, typer.Option(min=1, help="Examples per query and direction.")] = 5,
    train_data: Annotated[
        Path | None, typer.Option(help="Training data file, to print examples.")
    ] = None,
    query_data: Annotated[
        Path | None, typer.Option(help="Query data file, to print queries.")
    ] = None,
    field: Annotated[
        list[str], typer.Option(metavar="FIELD", help="Field(s) of the data files to print.")
    ] = ["text"],  # noqa: B006
    label_field: Annotated[
        str, typer.Option(help="Label field of --train-data (self-influence: given label).")
    ] = "label",
    max_queries: Annotated[int, typer.Option(min=1, help="Queries to show.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the rows shown (all fields) to this .csv or .parquet."),
    ] = None,
) -> None:
    """Print the k most helpful and most harmful training examples for each query.

    For self-influence (or a per-example score such as AUM), the k most suspicious examples in
    the score's own direction, with the given label and, when the training store recorded them,
    the label the model predicted.

    \b
    Example:
      infscope top runs/scores --k 5 --train-data train.jsonl \\
          --query-data test.jsonl
    """
    from infscope.attribution import SelfInfluence, load_scores
    from infscope.io import check_writable, write_table

    if out is not None:
        check_writable(out, directory=False)
    result = load_scores(scores)
    train, queries = _records(train_data), _records(query_data)
    if isinstance(result, SelfInfluence):
        rows = result.top_rows(k)
        predicted = result.recorded_predictions()
        for row in rows:
            record = train.get(row["train_id"])
            if record is not None and label_field in record:
                row["given"] = record[label_field]
            if predicted is not None:
                row["predicted"] = predicted[row["train_id"]]
            row["example"] = _shown(record, field)
        means = result.metadata.get("high_means")
        title = f"most suspicious by {result.method}" + (
            f" (high {result.method} = {means})" if means else ""
        )
        _warn_unmatched(train_data, train, [r["train_id"] for r in rows], "training")
        columns = ["rank", "train_id", "score", "given", "predicted", "example"]
        columns = [c for c in columns if any(c in row for row in rows)]
        _print_table(escape(title), columns, rows)
    else:
        rows = result.top_rows(k, max_queries)
        _warn_unmatched(train_data, train, [r["train_id"] for r in rows], "training")
        _warn_unmatched(query_data, queries, [r["query_id"] for r in rows], "query")
        for row in rows:
            row["example"] = _shown(train.get(row["train_id"]), field)
        for qid in dict.fromkeys(row["query_id"] for row in rows):
            title = f"query {qid}: {_shown(queries.get(qid), field)}"[:200]
            shown = [row for row in rows if row["query_id"] == qid]
            _print_table(
                escape(title), ["direction", "train_id", "score", "example"], shown, signed=True
            )
    if out is not None:
        names = list(dict.fromkeys(name for row in rows for name in row))
        write_table(out, {name: [row.get(name, "") for row in rows] for name in names})
        console.print(f"[green]{escape(str(out))}[/]: {len(rows)} rows")


def _print_table(title: str, columns: list[str], rows: list[dict], signed: bool = False) -> None:
    """Rows as a table; every value is data, never console markup, and its control and bidi
    characters are shown escaped (the file written by --out keeps them)."""
    table = Table(title=printable(title))
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if column == "score":
                value = f"{value:+.4g}" if signed else f"{value:.4g}"
            cells.append(escape(printable(value)))
        table.add_row(*cells)
    console.print(table)


@app.command()
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
    from infscope.cli.demo import DemoConfig, digit_art, run_demo

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


app.add_typer(evaluate_app, name="evaluate")
app.add_typer(store_app, name="store")
app.command()(prune)
app.command()(select)
from infscope.cli.audit import audit  # noqa: E402 (registered last: its own module)

app.command()(audit)
from infscope.cli.report import report  # noqa: E402 (registered last: its own module)

app.command()(report)
from infscope.cli.index import index, query  # noqa: E402 (registered last: its own module)

app.command()(index)
app.command()(query)
from infscope.cli.trees import trees  # noqa: E402 (registered last: its own module)

app.command()(trees)
from infscope.cli.unlearn import unlearn  # noqa: E402 (registered last: its own module)

app.command()(unlearn)

if __name__ == "__main__":
    app()
