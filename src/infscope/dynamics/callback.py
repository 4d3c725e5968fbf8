"""Record training dynamics inside a Hugging Face ``Trainer``, from its own forward passes.

Usage::

    recorder = DynamicsRecorder()
    callback = DynamicsCallback(recorder)              # final_module="auto": the last nn.Linear
    args = TrainingArguments(..., remove_unused_columns=False)          # required: keeps "id"
    trainer = Trainer(
        model=model, args=args, train_dataset=train,   # each example has an "id" field
        data_collator=callback.data_collator(DataCollatorWithPadding(tokenizer)),
        callbacks=[callback],
    )
    trainer.train()
    scores = el2n(recorder, epoch=1)

How it works — no second pass: :meth:`DynamicsCallback.data_collator` wraps your collator so each
batch carries its example ids (and a copy of its labels) under private keys. At ``on_train_begin``
the callback registers, on the model, a forward pre-hook that removes those keys before the model
sees them and a forward hook that passes the logits the Trainer's ``compute_loss`` just computed,
with the ids and labels, to :meth:`DynamicsRecorder.record`; a hook on the final linear layer
(``final_module``) captures its input for the exact last-layer gradient norm. Only training-mode
forwards are recorded (evaluation passes are not); the epoch is the Trainer's epoch (0, 1, ...).
The hooks are removed at ``on_train_end``.

What you must set:

* ``TrainingArguments(remove_unused_columns=False)`` — otherwise the Trainer drops the ``id``
  column (it is not an argument of the model's ``forward``). The callback checks this.
* ``data_collator=callback.data_collator(your_collator)`` — the default collators drop string
  columns. Your examples need an ``id`` field (``id_field``), unique per example.

Labels are copied by the collator, so label smoothing or ``compute_loss_func`` (which take the
labels away from the model) still work. With several data-parallel processes each records the
examples it sees; save each (``output_dir`` gets a ``rank-<k>`` subfolder) and combine them with
:meth:`DynamicsRecorder.merge`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, default_data_collator

from infscope.dynamics.recorder import DynamicsRecorder
from infscope.errors import InputError

IDS_KEY = "infscope_example_ids"
LABELS_KEY = "infscope_labels"


class IdCollator:
    """Wraps a data collator: removes ``id_field`` from each example before collating, then adds
    the ids (as a list of strings) and a copy of the labels to the batch under private keys that
    :class:`DynamicsCallback` removes again before the model's forward."""

    def __init__(
        self,
        base: Callable[[list[Any]], Any] | None = None,
        id_field: str = "id",
        label_keys: Sequence[str] = ("labels", "label", "label_ids"),
    ) -> None:
        self.base = base or default_data_collator
        self.id_field = id_field
        self.label_keys = tuple(label_keys)

    def __call__(self, features: list[Any]) -> Any:
        ids: list[str] = []
        stripped: list[dict[str, Any]] = []
        for position, feature in enumerate(features):
            if not isinstance(feature, Mapping) or self.id_field not in feature:
                keys = sorted(feature) if isinstance(feature, Mapping) else type(feature).__name__
                raise InputError(
                    f"example {position} of the batch has no {self.id_field!r} field (it has "
                    f"{keys}): give every training example a unique id and set "
                    "TrainingArguments(remove_unused_columns=False) so the Trainer keeps it"
                )
            feature = dict(feature)
            value = feature.pop(self.id_field)
            if isinstance(value, torch.Tensor):
                value = value.item()
            ids.append(str(value))
            stripped.append(feature)
        batch = self.base(stripped)
        for key in self.label_keys:
            if key in batch:
                batch[LABELS_KEY] = batch[key]
                break
        batch[IDS_KEY] = ids
        return batch


def _find_final_linear(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise InputError(
            "the model has no nn.Linear for the last-layer gradient norm; pass final_module=None"
        )
    return names[-1]


class DynamicsCallback(TrainerCallback):
    """Feeds a :class:`DynamicsRecorder` during ``Trainer.train()`` from the training forward passes.

    ``final_module``: the name of the final ``nn.Linear`` whose input gives the exact last-layer
    gradient norm (``"auto"``: the last ``nn.Linear`` the model registers — ``classifier`` for BERT
    classifiers, ``classifier.out_proj`` for RoBERTa — checked against the logits at the first
    step; ``None``: record no gradient norms). ``output_dir``: save the recorder there after every
    epoch and at the end of training (atomically).
    """

    def __init__(
        self,
        recorder: DynamicsRecorder | None = None,
        final_module: str | None = "auto",
        output_dir: str | Path | None = None,
        id_field: str = "id",
    ) -> None:
        self.recorder = recorder if recorder is not None else DynamicsRecorder()
        self.final_module = final_module
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.id_field = id_field
        self.epoch: int | None = None
        self._handles: list[Any] = []
        self._watch: Any = None
        self._pending: tuple[Any, Any] | None = None
        self._save_dir: Path | None = None

    def data_collator(self, base: Callable[[list[Any]], Any] | None = None) -> IdCollator:
        """``base`` (default: ``transformers.default_data_collator``) wrapped to carry example ids."""
        return IdCollator(base, self.id_field)

    # -- hooks ---------------------------------------------------------------------------------
    def _pre_forward(
        self, module: nn.Module, args: tuple, kwargs: dict[str, Any]
    ) -> tuple[tuple, dict[str, Any]]:
        if IDS_KEY in kwargs or LABELS_KEY in kwargs:
            kwargs = dict(kwargs)
            self._pending = (kwargs.pop(IDS_KEY, None), kwargs.pop(LABELS_KEY, None))
        else:
            self._pending = None
        return args, kwargs

    def _post_forward(
        self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any
    ) -> None:
        pending, self._pending = self._pending, None
        if not module.training or self.epoch is None:
            return  # evaluation / prediction passes are not training dynamics
        if pending is None or pending[0] is None:
            raise InputError(
                "a training batch reached the model without example ids: pass "
                "data_collator=callback.data_collator(your_collator) to the Trainer and set "
                "TrainingArguments(remove_unused_columns=False)"
            )
        ids, labels = pending
        if labels is None:
            labels = kwargs.get("labels")
        if labels is None:
            raise InputError("the training batch has no labels to record dynamics against")
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, Mapping):
            logits = output.get("logits")
        if logits is None:
            raise InputError("the model output has no 'logits' to record")
        self.recorder.record(ids, logits, labels, self.epoch)

    def _attach(self, model: nn.Module) -> None:
        self.remove_hooks()
        self._handles.append(model.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._post_forward, with_kwargs=True))
        if self.final_module is not None:
            name = _find_final_linear(model) if self.final_module == "auto" else self.final_module
            self._watch = self.recorder.watch(model, name)

    def remove_hooks(self) -> None:
        """Remove the model hooks (done at the end of training; call it after a crash)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._watch is not None:
            self._watch.remove()
            self._watch = None

    # -- Trainer events ------------------------------------------------------------------------
    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: nn.Module = None, **kwargs: Any
    ):
        if getattr(args, "remove_unused_columns", False):
            raise InputError(
                "DynamicsCallback needs TrainingArguments(remove_unused_columns=False): otherwise "
                f"the Trainer drops the {self.id_field!r} column before it reaches the collator"
            )
        if model is None:
            raise InputError("the Trainer passed no model to the callback")
        if self.output_dir is not None:
            world = int(getattr(args, "world_size", 1) or 1)
            rank = int(getattr(args, "process_index", 0) or 0)
            self._save_dir = self.output_dir / f"rank-{rank}" if world > 1 else self.output_dir
        self._attach(model)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        # state.epoch is the whole epoch number here (or the fraction reached when resuming mid-epoch)
        self.epoch = math.floor((state.epoch or 0.0) + 1e-6)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self._save()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self.remove_hooks()
        self.epoch = None
        self._save()

    def _save(self) -> None:
        if self._save_dir is not None and self.recorder.num_classes is not None:
            self.recorder.save(self._save_dir)
