"""What the commands that run a model read: ``--model`` and how its task is built, and which of
its layers are tracked — each an option group (:func:`~infscope.cli.options.option_groups`)
declared once for ``features`` and ``unlearn``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from infscope.gradients import ModuleSelection


@dataclass(frozen=True)
class ModelOptions:
    """The model and its task (:func:`infscope.tasks.loading.load_model_and_task`)."""

    model: Annotated[
        str,
        typer.Option(
            help="HF model or PEFT adapter directory, or module:function for --task factory."
        ),
    ]
    task: Annotated[str, typer.Option(help="hf-seqcls | hf-causal-lm | factory.")] = "hf-seqcls"
    text_field: Annotated[
        list[str],
        typer.Option(metavar="FIELD", help="Text field(s); give two for sentence pairs."),
    ] = ("text",)  # type: ignore[assignment]
    label_field: Annotated[
        str, typer.Option(help="Label field: a class index, or a name of the model's label2id.")
    ] = "label"
    prompt_field: Annotated[str, typer.Option(help="Prompt field (hf-causal-lm).")] = "prompt"
    completion_field: Annotated[
        str, typer.Option(help="Completion field (hf-causal-lm).")
    ] = "completion"
    max_length: Annotated[
        int | None,
        typer.Option(
            min=1, help="Token limit per example (default: 128, or the model's if smaller)."
        ),
    ] = None
    measurement: Annotated[
        str | None,
        typer.Option(help="Query measurement: loss, margin (classifiers), logprob (LMs)."),
    ] = None

    def load(self) -> tuple[Any, Any]:
        """``(model, task)``."""
        from infscope.tasks.loading import load_model_and_task

        return load_model_and_task(
            self.model,
            self.task,
            text_fields=tuple(self.text_field),
            label_field=self.label_field,
            prompt_field=self.prompt_field,
            completion_field=self.completion_field,
            max_length=self.max_length,
            measurement=self.measurement,
        )


@dataclass(frozen=True)
class ModuleOptions:
    """Which layers are tracked (:class:`~infscope.gradients.ModuleSelection`)."""

    include: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="Glob of module names to track (repeatable)."),
    ] = None
    exclude: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB", help="Glob of module names to skip (repeatable)."),
    ] = None
    types: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TYPE", help="Layer types: Linear, Conv1D, Conv2d, Embedding, LayerNorm."
        ),
    ] = None

    def selection(self) -> ModuleSelection:
        from infscope.gradients import ModuleSelection

        return ModuleSelection(
            tuple(self.include) if self.include else None,
            tuple(self.exclude or ()),
            tuple(self.types) if self.types else None,
        )
