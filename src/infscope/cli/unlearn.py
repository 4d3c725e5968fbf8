"""``infscope unlearn``: remove the effect of some training examples from a trained model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from infscope.cli.inputs import ModelOptions
from infscope.cli.options import option_groups
from infscope.cli.output import console, progress, warn

METHODS = ("newton", "finetune", "ascent")  # infscope.unlearning.METHODS, without loading torch
WEIGHTS_NAME = "model.safetensors"
SUMMARY_NAME = "unlearn.json"


@dataclass(frozen=True)
class UnlearnOptions:
    """How the forget set is removed: the method and its settings."""

    method: Annotated[
        str,
        typer.Option(
            help="newton (influence step) | finetune (on the rest) | ascent (on the forget set)."
        ),
    ] = "newton"
    weight_decay: Annotated[
        float, typer.Option(help="L2 coefficient of training: mean loss + wd/2 |θ|².")
    ] = 0.0
    ridge: Annotated[
        float,
        typer.Option(
            help="Newton: absolute shift of the Hessian on top of the weight decay "
            "(λ = weight decay + ridge; not the relative --damping of score)."
        ),
    ] = 1e-3
    damping: Annotated[float | None, typer.Option(hidden=True, help="Deprecated: --ridge.")] = None
    form: Annotated[
        str,
        typer.Option(
            help="Newton: 'newton' (gradient of the rest) or 'influence' (forget set only)."
        ),
    ] = "newton"
    newton_steps: Annotated[int, typer.Option(help="Newton: steps.")] = 1
    max_iter: Annotated[
        int, typer.Option(help="Newton: conjugate-gradient iterations per step.")
    ] = 100
    tol: Annotated[float, typer.Option(help="Newton: conjugate-gradient relative residual.")] = (
        1e-6
    )
    correction_steps: Annotated[
        int, typer.Option(help="Newton: SGD steps on the rest afterwards (gradient correction).")
    ] = 0
    steps: Annotated[int, typer.Option(help="finetune / ascent: SGD steps.")] = 50
    lr: Annotated[
        float, typer.Option(help="SGD learning rate (finetune, ascent, correction).")
    ] = 0.1
    batch_size: Annotated[int, typer.Option(help="Examples per pass (SGD: per step).")] = 64
    seed: Annotated[int, typer.Option(help="Seed of the SGD minibatches.")] = 0

    def configs(self):
        """``(NewtonConfig, GradientConfig)`` of these settings."""
        from infscope.unlearning import GradientConfig, NewtonConfig

        ridge = self.ridge
        if self.damping is not None:
            warn("--damping is deprecated for unlearn; use --ridge (the same value)")
            ridge = self.damping
        newton = self.method == "newton"
        sgd = GradientConfig(
            steps=self.correction_steps if newton else self.steps, lr=self.lr,
            batch_size=self.batch_size, weight_decay=self.weight_decay, seed=self.seed,
        )  # fmt: skip
        config = NewtonConfig(
            weight_decay=self.weight_decay, ridge=ridge, form=self.form,
            newton_steps=self.newton_steps, max_iter=self.max_iter, tol=self.tol,
            batch_size=self.batch_size, correction=sgd if self.correction_steps > 0 else None,
        )  # fmt: skip
        return config, sgd


@option_groups
def unlearn(
    data: Annotated[
        Path,
        typer.Argument(
            help="Training examples the model was trained on (.jsonl/.json/.csv/.parquet, 'id')."
        ),
    ],
    model: ModelOptions,
    forget: Annotated[
        Path,
        typer.Option(
            help="Ids to forget: one per line, a .json list, or .jsonl/.csv records with 'id'."
        ),
    ],
    out: Annotated[Path, typer.Option(help=f"Directory for {WEIGHTS_NAME} and {SUMMARY_NAME}.")],
    run: UnlearnOptions,
    weights: Annotated[
        Path | None,
        typer.Option(help="Trained weights (.safetensors) to load into the model first."),
    ] = None,
    module: Annotated[
        list[str],
        typer.Option(
            help="Only update these modules (glob on names, repeatable), e.g. 'classifier'."
        ),
    ] = [],  # noqa: B006
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

    from infscope.data import ExampleSet, read_ids
    from infscope.errors import InputError
    from infscope.io import check_writable, write_json
    from infscope.unlearning import forget_split, mean_losses
    from infscope.unlearning import unlearn as unlearn_examples
    from infscope.weights import load_weights

    if run.method not in METHODS:
        raise InputError(f"unknown --method {run.method!r}; choose from {METHODS}")
    newton, sgd = run.configs()
    check_writable(out, directory=True)
    examples = ExampleSet.from_file(data)
    ids = read_ids(forget, "forget-ids")
    split = forget_split(examples, ids)
    network, task = model.load()
    if weights is not None:
        load_weights(network, weights)
    progress(f"unlearning {len(split.forget)} of {split.n_train} examples ({run.method})")
    started = time.perf_counter()
    result = unlearn_examples(
        network, task, examples, ids, run.method, newton=newton, gradient=sgd,
        modules=list(module) or None, progress=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    progress("mean losses on the forget set and the rest, before and after")
    losses = mean_losses(network, result.model, task, split, run.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    path = result.save(out / WEIGHTS_NAME)
    write_json(out / SUMMARY_NAME, {
        "method": run.method, "data": str(data), "forget_file": str(forget),
        "forget_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "weights_in": None if weights is None else str(weights), "weights_out": str(path),
        **result.info, "seconds": seconds, "mean_loss": losses,
    })  # fmt: skip
    outcome = _outcome(len(split.forget), split.n_train, run.method, seconds, losses)
    console.print(outcome, markup=False)
    console.print(f"wrote {path} and {out / SUMMARY_NAME}", markup=False)


def _outcome(n_forget: int, n_train: int, method: str, seconds: float, losses: dict) -> str:
    """One line: how many examples were forgotten, how, and the losses before and after."""
    return (
        f"forgot {n_forget} of {n_train} examples by {method} in {seconds:.1f} s: mean loss on "
        f"them {losses['forget_before']:.4g} → {losses['forget_after']:.4g}, on the rest "
        f"{losses['rest_before']:.4g} → {losses['rest_after']:.4g}"
    )
