"""Load a model and its task by name: a local Hugging Face directory (or PEFT adapter), or a
Python factory ``module:function`` returning ``(model, task)`` — what ``infscope features`` and
``infscope unlearn`` take as ``--model``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infscope.errors import InfscopeWarning, InputError
from infscope.functions import load_function
from infscope.tasks.base import Task
from infscope.tasks.huggingface import HFCausalLMTask, HFSequenceClassificationTask

TASK_KINDS = ("hf-seqcls", "hf-causal-lm", "factory")


#: token limit per example when none is given (or the model's, when smaller)
DEFAULT_MAX_LENGTH = 128
#: seed of weights a model directory lacks (a head initialised on load): the same every load
INIT_SEED = 0


def load_model_and_task(
    model: str,
    task: str,
    *,
    text_fields: tuple[str, ...] = ("text",),
    label_field: str = "label",
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    max_length: int | None = None,
    measurement: str | None = None,
) -> tuple[nn.Module, Task]:
    """``task="factory"``: ``model`` is ``package.module:function`` returning ``(model, task)``.
    Otherwise ``model`` is a local ``transformers`` directory, or a PEFT adapter directory (it holds
    ``adapter_config.json``), loaded offline. Weights the directory lacks (a classification head
    on a base model) are initialised with a fixed seed, so every load gives the same model, and
    reported with an :class:`~infscope.errors.InfscopeWarning`. ``max_length`` must fit the
    model's positions (default: :data:`DEFAULT_MAX_LENGTH`, or the model's limit if smaller)."""
    if task not in TASK_KINDS:
        raise InputError(f"unknown task {task!r}; choose from {TASK_KINDS}")
    if task == "factory":
        built = load_function(model, "--model")()
        if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[1], Task)):
            raise InputError(f"{model} must return (model, task)")
        if measurement is not None and measurement != built[1].measurement_name:
            raise InputError(
                f"--measurement {measurement!r} cannot change the task that {model} builds (its "
                f"measurement is {built[1].measurement_name!r}); set it in the factory"
            )
        return built
    path = Path(model)
    if not path.is_dir():
        raise InputError(f"model directory not found: {path} (models are loaded offline)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    is_adapter = (path / "adapter_config.json").is_file()
    if is_adapter:
        import peft

        base = peft.PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        if not base or not Path(base).is_dir():
            raise InputError(
                f"adapter {path} names base model {base!r}, which is not a local directory; "
                f"set base_model_name_or_path in adapter_config.json"
            )
    tokenizer = _tokenizer(path, is_adapter)
    auto_class = (
        transformers.AutoModelForSequenceClassification
        if task == "hf-seqcls"
        else transformers.AutoModelForCausalLM
    )
    loaded = _load(path, is_adapter, auto_class)
    max_length = _max_length(loaded, tokenizer, max_length)
    if task == "hf-seqcls":
        label2id = dict(getattr(loaded.config, "label2id", None) or {})
        return loaded, HFSequenceClassificationTask(
            tokenizer, text_fields, label_field, max_length, measurement, label2id
        )
    return loaded, HFCausalLMTask(
        tokenizer, prompt_field, completion_field, max_length, measurement
    )


def _max_length(model: nn.Module, tokenizer: Any, max_length: int | None) -> int:
    """The token limit: a positive count within the model's position embeddings (and the
    tokenizer's limit) — the forward pass fails on longer examples — or by default
    :data:`DEFAULT_MAX_LENGTH` capped at them."""
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise InputError(f"--max-length must be a positive number of tokens, got {max_length!r}")
    config = model.config
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    offset = (
        2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    )
    positions = [int(p) - offset for p in limits if isinstance(p, int) and p > 0]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10**7:
        positions.append(tokenizer_limit)
    limit = min(positions) if positions else None
    if max_length is None:
        return DEFAULT_MAX_LENGTH if limit is None else min(DEFAULT_MAX_LENGTH, limit)
    if limit is not None and max_length > limit:
        raise InputError(
            f"--max-length {max_length} exceeds the {limit} token positions this model takes "
            "(its config.json / tokenizer); use at most that"
        )
    return max_length


def _tokenizer(path: Path, is_adapter: bool) -> Any:
    import transformers

    source = path
    if is_adapter and not (path / "tokenizer_config.json").is_file():
        import peft

        source = Path(peft.PeftConfig.from_pretrained(str(path)).base_model_name_or_path)
    return transformers.AutoTokenizer.from_pretrained(str(source))


def _load(path: Path, is_adapter: bool, auto_class: Any) -> nn.Module:
    """The model of a directory (or the base model and a PEFT adapter), weights missing from
    the files initialised with :data:`INIT_SEED` and reported."""
    source = path
    if is_adapter:
        import peft

        source = Path(peft.PeftConfig.from_pretrained(str(path)).base_model_name_or_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model, info = auto_class.from_pretrained(str(source), output_loading_info=True)
    fresh = sorted(
        set(info.get("missing_keys", ()))
        | {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())}
    )
    if is_adapter:
        import peft

        model = peft.PeftModel.from_pretrained(model, str(path), is_trainable=True)
        # weights the adapter saves (its modules_to_save, e.g. the head) are not random
        saved = [
            name
            for name, module in model.base_model.model.named_modules()
            if type(module).__name__ == "ModulesToSaveWrapper"
        ]
        fresh = [k for k in fresh if not any(k.startswith(f"{name}.") for name in saved)]
    if fresh:
        shown = ", ".join(fresh[:4]) + (" ..." if len(fresh) > 4 else "")
        warnings.warn(
            f"{source} lacks {len(fresh)} weight(s) of this model ({shown}): they were "
            f"initialised at random (seed {INIT_SEED}, the same on every load), so features and "
            "scores explain an untrained part — fine-tune the model (e.g. its classification "
            "head) and save it first (examples/text_classifier in the infscope repository shows "
            "how)",
            InfscopeWarning,
            stacklevel=2,
        )
    return model
