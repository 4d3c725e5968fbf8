"""``infscope unlearn``: remove the effect of some training examples from a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infscope.cli.output import console, progress

METHODS = ("newton", "finetune", "ascent")
WEIGHTS_NAME = "model.safetensors"
SUMMARY_NAME = "unlearn.json"


def read_ids(path: Path) -> list[str]:
    """Forget ids from ``.json`` (a list), ``.jsonl``/``.csv``/``.parquet`` (records with ``id``)
    or any other file (one id per line, blank lines skipped)."""
    import json

    from infscope.data import ExampleSet
    from infscope.errors import InputError

    if not path.is_file():
        raise InputError(f"no such forget-ids file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv", ".parquet"):
        return list(ExampleSet.from_file(path).ids)
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(values, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in values
        ):
            raise InputError(f"{path} must hold a JSON list of ids (strings or integers)")
        return [str(v) for v in values]
    return [line.strip() for line in text.splitlines() if line.strip()]


def unlearn(
    data: Annotated[
        Path,
        typer.Argument(
            help="Training examples the model was trained on (.jsonl/.json/.csv/.parquet, 'id')."
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="HF model directory, or module:function returning (model, task) for --task factory."
        ),
    ],
    forget: Annotated[
        Path,
        typer.Option(
            help="Ids to forget: one per line, a .json list, or .jsonl/.csv records with 'id'."
        ),
    ],
    out: Annotated[Path, typer.Option(help=f"Directory for {WEIGHTS_NAME} and {SUMMARY_NAME}.")],
    task: Annotated[str, typer.Option(help="hf-seqcls | hf-causal-lm | factory.")] = "hf-seqcls",
    weights: Annotated[
        Path | None,
        typer.Option(help="Trained weights (.safetensors) to load into the model first."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="newton (influence step) | finetune (on the rest) | ascent (on the forget set)."
        ),
    ] = "newton",
    module: Annotated[
        list[str],
        typer.Option(
            help="Only update these modules (glob on names, repeatable), e.g. 'classifier'."
        ),
    ] = [],  # noqa: B006
    weight_decay: Annotated[
        float, typer.Option(help="L2 coefficient of training: mean loss + wd/2 |θ|².")
    ] = 0.0,
    damping: Annotated[
        float, typer.Option(help="Newton: damping added to the weight decay.")
    ] = 1e-3,
    form: Annotated[
        str,
        typer.Option(
            help="Newton: 'newton' (gradient of the rest) or 'influence' (forget set only)."
        ),
    ] = "newton",
    newton_steps: Annotated[int, typer.Option(help="Newton: steps.")] = 1,
    max_iter: Annotated[
        int, typer.Option(help="Newton: conjugate-gradient iterations per step.")
    ] = 100,
    tol: Annotated[
        float, typer.Option(help="Newton: conjugate-gradient relative residual.")
    ] = 1e-6,
    correction_steps: Annotated[
        int, typer.Option(help="Newton: SGD steps on the rest afterwards (gradient correction).")
    ] = 0,
    steps: Annotated[int, typer.Option(help="finetune / ascent: SGD steps.")] = 50,
    lr: Annotated[
        float, typer.Option(help="SGD learning rate (finetune, ascent, correction).")
    ] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Examples per pass (SGD: per step).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the SGD minibatches.")] = 0,
    text_field: Annotated[str, typer.Option(help="Text field (hf-seqcls).")] = "text",
    label_field: Annotated[str, typer.Option(help="Label field (hf-seqcls).")] = "label",
) -> None:
    """Remove the effect of the --forget examples from a model trained on DATA without
    retraining: a Newton (influence) step on the remaining data's objective, solved by conjugate
    gradient over Hessian-vector products, or a fine-tuning / gradient-ascent baseline. Writes the
    new weights (safetensors) and a JSON summary; the losses on the forget set and the rest,
    before and after, are in the summary.

    Example: infscope unlearn train.jsonl --task factory --model mymodels:trained
    --forget remove.txt --weight-decay 0.01 --out runs/unlearned
    """
    import hashlib
    import time

    from infscope.cli.models import load_model_and_task
    from infscope.data import ExampleSet
    from infscope.errors import InputError
    from infscope.gradients.losses import per_example_losses
    from infscope.io import check_writable, write_json
    from infscope.unlearning import (
        GradientConfig,
        NewtonConfig,
        ascent_unlearn,
        finetune_unlearn,
        forget_split,
        newton_unlearn,
    )
    from infscope.weights import load_weights

    check_writable(out, directory=True)
    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; choose from {METHODS}")
    examples = ExampleSet.from_file(data)
    ids = read_ids(forget)
    split = forget_split(examples, ids)
    network, task_object = load_model_and_task(
        model, task, text_fields=(text_field,), label_field=label_field
    )
    if weights is not None:
        load_weights(network, weights)
    modules = list(module) or None
    sgd = GradientConfig(
        steps=correction_steps if method == "newton" else steps,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
    )
    progress(f"unlearning {len(split.forget)} of {split.n_train} examples ({method})")
    started = time.perf_counter()
    if method == "newton":
        config = NewtonConfig(
            weight_decay=weight_decay,
            damping=damping,
            form=form,
            newton_steps=newton_steps,
            max_iter=max_iter,
            tol=tol,
            batch_size=batch_size,
            correction=sgd if correction_steps > 0 else None,
        )
        result = newton_unlearn(network, task_object, examples, ids, config, modules, progress=True)
    elif method == "finetune":
        result = finetune_unlearn(network, task_object, examples, ids, sgd, modules, progress=True)
    else:
        result = ascent_unlearn(network, task_object, examples, ids, sgd, modules, progress=True)
    seconds = time.perf_counter() - started
    progress("mean losses on the forget set and the rest, before and after")
    losses = {}
    for name, which in (("before", network), ("after", result.model)):
        for part in ("forget", "rest"):
            values = per_example_losses(which, task_object, getattr(split, part), batch_size)
            losses[f"{part}_{name}"] = float(values.mean())
    out.mkdir(parents=True, exist_ok=True)
    path = result.save(out / WEIGHTS_NAME)
    summary = {
        "method": method,
        "data": str(data),
        "forget_file": str(forget),
        "forget_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "weights_in": None if weights is None else str(weights),
        "weights_out": str(path),
        **result.info,
        "seconds": seconds,
        "mean_loss": losses,
    }
    write_json(out / SUMMARY_NAME, summary)
    console.print(
        f"forgot {len(split.forget)} of {split.n_train} examples by {method} in {seconds:.1f} s: "
        f"mean loss on them {losses['forget_before']:.4g} → {losses['forget_after']:.4g}, on the "
        f"rest {losses['rest_before']:.4g} → {losses['rest_after']:.4g}",
        markup=False,
    )
    console.print(f"wrote {path} and {out / SUMMARY_NAME}", markup=False)
