"""Load a model and its task for the CLI: a Hugging Face directory or a Python factory."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from infscope.errors import InputError
from infscope.tasks import HFCausalLMTask, HFSequenceClassificationTask, Task

TASK_KINDS = ("hf-seqcls", "hf-causal-lm", "factory")


def load_function(spec: str, option: str = "--train-fn") -> Any:
    """``package.module:function`` → the function (importable from ``sys.path``)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise InputError(f"{option} must be 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"cannot import module {module_name!r}: {err}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise InputError(f"module {module_name!r} has no function {name!r}")
    return function


def load_model_and_task(
    model: str,
    task: str,
    *,
    text_fields: tuple[str, ...] = ("text",),
    label_field: str = "label",
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    max_length: int = 128,
    measurement: str | None = None,
) -> tuple[nn.Module, Task]:
    """``task="factory"``: ``model`` is ``package.module:function`` returning ``(model, task)``.
    Otherwise ``model`` is a local ``transformers`` directory, or a PEFT adapter directory (it holds
    ``adapter_config.json``), loaded offline."""
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
    if task == "hf-seqcls":
        loaded = _load(path, is_adapter, transformers.AutoModelForSequenceClassification)
        return loaded, HFSequenceClassificationTask(
            tokenizer, text_fields, label_field, max_length, measurement
        )
    loaded = _load(path, is_adapter, transformers.AutoModelForCausalLM)
    return loaded, HFCausalLMTask(
        tokenizer, prompt_field, completion_field, max_length, measurement
    )


def _tokenizer(path: Path, is_adapter: bool) -> Any:
    import transformers

    source = path
    if is_adapter and not (path / "tokenizer_config.json").is_file():
        import peft

        source = Path(peft.PeftConfig.from_pretrained(str(path)).base_model_name_or_path)
    return transformers.AutoTokenizer.from_pretrained(str(source))


def _load(path: Path, is_adapter: bool, auto_class: Any) -> nn.Module:
    if not is_adapter:
        return auto_class.from_pretrained(str(path))
    import peft

    peft_class = {
        "AutoModelForSequenceClassification": peft.AutoPeftModelForSequenceClassification,
        "AutoModelForCausalLM": peft.AutoPeftModelForCausalLM,
    }[auto_class.__name__]
    return peft_class.from_pretrained(str(path), is_trainable=True)
