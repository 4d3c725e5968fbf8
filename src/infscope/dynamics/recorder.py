"""Record training dynamics per example id and per epoch, from the forward pass training already does.

A :class:`DynamicsRecorder` takes the logits a training step computed (plus the example ids and
labels of the batch) and keeps, for every example and every epoch (or named checkpoint):

* ``loss`` — cross-entropy ``logsumexp(z) - z_y``;
* ``probs`` — the predicted class probabilities ``softmax(z)``;
* ``correct_prob`` — ``p_y`` (derived from ``probs``);
* ``margin`` — ``z_y - max_{c != y} z_c`` (positive when the example is classified correctly);
* ``correct`` — ``argmax z == y``;
* ``grad_norm`` — optionally, the norm of the per-example loss gradient with respect to the final
  linear layer's weight and bias, ``||p - onehot(y)|| * ||[h, 1]||`` where ``h`` is the final
  layer's input. For cross-entropy on the output of a final ``nn.Linear`` this is **exact**:
  ``dL/dW = (p - e_y) h^T`` and ``dL/db = p - e_y``, so the Frobenius norm of ``[dL/dW | dL/db]``
  factorises (without a bias the ``1`` is dropped). It is the gradient of the example's *own*
  loss — not of the batch mean, which divides it by the batch size — and it excludes every
  earlier layer and any weight decay.

Nothing is recomputed: call :meth:`DynamicsRecorder.record` with the logits of the step's own forward
pass (they are detached inside). Records made during epoch ``e`` therefore see the model as it was
when each batch was trained on — the usual cost-free choice (and exactly Toneva et al.'s
"presentation" for forgetting events). For end-of-epoch snapshots, record from a separate
evaluation pass instead; the API is the same.

Storage is keyed by example id, so shuffled batches and any number of epochs are fine. An example
may be missing from an epoch (its values are NaN in :meth:`DynamicsRecorder.to_arrays`); recording
the same id twice in one epoch is an error that names the id. Saved as ``.npz`` + JSON (no pickle),
each file written atomically, the JSON last and holding the ``.npz`` checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infscope.dynamics.arrays import (
    DynamicsArrays,
    EpochKey,
    as_ids,
    as_labels,
    epoch_key,
    last_layer_grad_norm,
    per_example_dynamics,
)
from infscope.errors import InputError
from infscope.io import write_atomic

FORMAT = "infscope.dynamics"
VERSION = 1
ARRAYS_FILE = "dynamics.npz"
META_FILE = "dynamics.json"

class _EpochBuffer:
    """Rows recorded in one epoch, appended batch by batch."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.chunks: dict[str, list[np.ndarray]] = {
            k: [] for k in ("loss", "probs", "margin", "correct", "grad_norm")
        }
        self._cache: dict[str, np.ndarray] | None = None

    def append(self, ids: list[str], values: dict[str, np.ndarray]) -> None:
        for i in ids:
            self.index[i] = len(self.ids)
            self.ids.append(i)
        for key, chunk in self.chunks.items():
            chunk.append(values[key])
        self._cache = None

    def arrays(self, num_classes: int) -> dict[str, np.ndarray]:
        if self._cache is None:
            if self.ids:
                self._cache = {k: np.concatenate(v) for k, v in self.chunks.items()}
                # keep one chunk: later appends concatenate less
                self.chunks = {k: [v] for k, v in self._cache.items()}
            else:
                self._cache = {
                    "loss": np.zeros(0),
                    "probs": np.zeros((0, num_classes)),
                    "margin": np.zeros(0),
                    "correct": np.zeros(0, dtype=bool),
                    "grad_norm": np.zeros(0),
                }
        return self._cache


class _Watch:
    """A forward hook that keeps the latest input (and output) of the final layer."""

    def __init__(self, recorder: DynamicsRecorder, module: nn.Module, name: str) -> None:
        if not isinstance(module, nn.Linear):
            raise InputError(
                f"the final module {name!r} is a {type(module).__name__}; the last-layer gradient "
                "norm is exact only for an nn.Linear that outputs the logits"
            )
        self.recorder = recorder
        self.name = name
        self.bias = module.bias is not None
        self.features: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.features = args[0].detach() if args else None
        self.output = output.detach() if isinstance(output, torch.Tensor) else None

    def take(self, logits: torch.Tensor) -> torch.Tensor:
        features, output = self.features, self.output
        self.features = self.output = None
        if features is None or output is None:
            raise InputError(
                f"the watched final module {self.name!r} did not run since the last record; "
                "record the logits of the forward pass that just ran"
            )
        if (
            features.ndim != 2
            or output.shape != logits.shape
            or not torch.allclose(
                output.to(logits.device, torch.float64),
                logits.detach().to(torch.float64),
                rtol=1e-4,
                atol=1e-5,
            )
        ):
            raise InputError(
                f"the output of the watched module {self.name!r} (shape {tuple(output.shape)}) is "
                f"not the recorded logits (shape {tuple(logits.shape)}): watch the nn.Linear that "
                "produces the logits (e.g. 'classifier'), or record without a final module"
            )
        return features

    def remove(self) -> None:
        self.handle.remove()
        if self.recorder._watch is self:
            self.recorder._watch = None

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class DynamicsRecorder:
    """Per-example, per-epoch loss, probabilities, margin, correctness and last-layer gradient norm.

    Plain training loop::

        recorder = DynamicsRecorder()
        recorder.watch(model, "classifier")           # optional: last-layer gradient norms
        for epoch in range(n_epochs):
            for batch in loader:                      # batch["id"]: the examples' ids
                logits = model(batch["inputs"])
                loss = F.cross_entropy(logits, batch["labels"])
                recorder.record(batch["id"], logits, batch["labels"], epoch)
                loss.backward(); optimizer.step(); optimizer.zero_grad()
        recorder.save("runs/dynamics")
        arrays = recorder.to_arrays(train.ids)       # dense [n_examples, n_epochs] arrays

    ``final_layer_bias`` says whether explicitly passed ``features`` feed a final layer with a bias
    (a watched module knows its own).
    """

    def __init__(
        self, metadata: dict[str, Any] | None = None, final_layer_bias: bool = True
    ) -> None:
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.final_layer_bias = final_layer_bias
        self._epochs: dict[EpochKey, _EpochBuffer] = {}
        self._labels: dict[str, int] = {}
        self._num_classes: int | None = None
        self._watch: _Watch | None = None

    # -- recording -----------------------------------------------------------------------------
    def watch(self, model: nn.Module, module_name: str) -> _Watch:
        """Capture the input of ``model``'s final ``nn.Linear`` (named ``module_name``) with a forward
        hook, so :meth:`record` adds the exact last-layer gradient norm. Returns a handle (also a
        context manager) whose ``remove()`` detaches the hook."""
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise InputError(f"the model has no module named {module_name!r}") from None
        if self._watch is not None:
            self._watch.remove()
        self._watch = _Watch(self, module, module_name)
        return self._watch

    def record(
        self,
        ids: Any,
        logits: torch.Tensor,
        labels: Any,
        epoch: EpochKey,
        features: torch.Tensor | None = None,
    ) -> None:
        """Record one batch: ``ids`` ``[B]``, the step's ``logits`` ``[B, C]``, ``labels`` ``[B]``.

        ``features`` — the final linear layer's input ``[B, d]`` — adds the last-layer gradient
        norm; without it the watched module's captured input is used (if :meth:`watch` was called).
        Raises :class:`~infscope.errors.InputError` (recording nothing) if an id was already
        recorded in this epoch, appears twice in the batch, or its label differs from an earlier one.
        """
        key = epoch_key(epoch)
        if not isinstance(logits, torch.Tensor):
            logits = torch.as_tensor(np.asarray(logits))
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise InputError(
                f"logits must have shape [batch, classes] with at least 2 classes, got "
                f"{tuple(logits.shape)}"
            )
        n, num_classes = logits.shape
        if self._num_classes is not None and num_classes != self._num_classes:
            raise InputError(
                f"logits have {num_classes} classes but earlier records have {self._num_classes}"
            )
        batch_ids = as_ids(ids, n)
        label_array = as_labels(labels, n, num_classes)
        bias = self.final_layer_bias
        if self._watch is not None:
            if features is None:
                features = self._watch.take(logits)
                bias = self._watch.bias
            else:  # explicit features win; drop the capture so it cannot go stale
                self._watch.features = self._watch.output = None
        if features is not None and (features.ndim != 2 or features.shape[0] != n):
            raise InputError(
                f"features (the final layer's input) must have shape [{n}, d], got "
                f"{tuple(features.shape)}"
            )
        # validate everything before storing anything
        buffer = self._epochs.get(key)
        seen: set[str] = set()
        for i, label in zip(batch_ids, label_array.tolist()):
            if i in seen:
                raise InputError(f"example id {i!r} appears twice in one batch (epoch {key!r})")
            seen.add(i)
            if buffer is not None and i in buffer.index:
                raise InputError(
                    f"example id {i!r} was already recorded in epoch {key!r}; each example can be "
                    "recorded once per epoch (use a new epoch or checkpoint name)"
                )
            if self._labels.get(i, label) != label:
                raise InputError(
                    f"example id {i!r} has label {label} here but {self._labels[i]} in an earlier record"
                )
        labels_t = torch.as_tensor(label_array, device=logits.device)
        values = per_example_dynamics(logits, labels_t)
        if features is not None:
            grad_norm = last_layer_grad_norm(values["probs"], labels_t, features, bias)
        else:
            grad_norm = torch.full((n,), float("nan"), dtype=torch.float64)
        values["grad_norm"] = grad_norm
        self._add(key, batch_ids, label_array, {k: v.cpu().numpy() for k, v in values.items()})

    def _add(
        self, key: EpochKey, ids: list[str], labels: np.ndarray, values: dict[str, np.ndarray]
    ) -> None:
        if self._num_classes is None:
            self._num_classes = int(values["probs"].shape[1])
        for i, label in zip(ids, labels.tolist()):
            self._labels.setdefault(i, int(label))
        self._epochs.setdefault(key, _EpochBuffer()).append(ids, values)

    # -- views ---------------------------------------------------------------------------------
    @property
    def epochs(self) -> list[EpochKey]:
        """Epochs/checkpoints in the order they were first recorded (chronological in training)."""
        return list(self._epochs)

    @property
    def ids(self) -> list[str]:
        """Every recorded id, in the order first seen."""
        return list(self._labels)

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    def labels(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """The recorded label of each id."""
        ids = self.ids if ids is None else as_ids(ids)
        self._check_known(ids)
        return np.asarray([self._labels[i] for i in ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return (
            f"DynamicsRecorder({len(self)} examples, epochs={self.epochs}, "
            f"num_classes={self._num_classes})"
        )

    def _check_known(self, ids: list[str]) -> None:
        unknown = [i for i in ids if i not in self._labels]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise InputError(
                f"{len(unknown)} ids were never recorded: {shown} (ids are compared as strings)"
            )

    def to_arrays(
        self, ids_order: Any = None, epochs: Sequence[EpochKey] | None = None
    ) -> DynamicsArrays:
        """Dense ``[n_examples, n_epochs]`` arrays (``probs``: ``[n, E, C]``), rows in ``ids_order``
        (a sequence of ids or an :class:`~infscope.data.ExampleSet`; default: first-seen order),
        columns in ``epochs`` (default: :attr:`epochs`). Missing records are NaN."""
        if self._num_classes is None:
            raise InputError("nothing was recorded yet")
        if ids_order is None:
            ids = self.ids
        else:
            ids = as_ids(getattr(ids_order, "ids", ids_order))
            if len(set(ids)) != len(ids):
                raise InputError("ids_order contains duplicate ids")
            self._check_known(ids)
        keys = self.epochs if epochs is None else [epoch_key(e) for e in epochs]
        for key in keys:
            if key not in self._epochs:
                raise InputError(f"epoch {key!r} was not recorded; recorded epochs: {self.epochs}")
        n, e, c = len(ids), len(keys), self._num_classes
        row = {i: r for r, i in enumerate(ids)}
        out = {
            "loss": np.full((n, e), np.nan),
            "probs": np.full((n, e, c), np.nan),
            "margin": np.full((n, e), np.nan),
            "correct": np.full((n, e), np.nan),
            "grad_norm": np.full((n, e), np.nan),
        }
        recorded = np.zeros((n, e), dtype=bool)
        for col, key in enumerate(keys):
            buffer = self._epochs[key]
            data = buffer.arrays(c)
            pairs = [(row[i], k) for k, i in enumerate(buffer.ids) if i in row]
            if not pairs:
                continue
            rows, src = (np.asarray(x, dtype=np.int64) for x in zip(*pairs))
            recorded[rows, col] = True
            for name, target in out.items():
                target[rows, col] = data[name][src]
        return DynamicsArrays(
            ids=ids,
            epochs=keys,
            labels=np.asarray([self._labels[i] for i in ids], dtype=np.int64),
            recorded=recorded,
            metadata=dict(self.metadata),
            **out,
        )

    # -- combining -----------------------------------------------------------------------------
    @classmethod
    def merge(cls, recorders: Iterable[DynamicsRecorder]) -> DynamicsRecorder:
        """One recorder holding the records of several (e.g. one per data-parallel process).
        Recording the same id in the same epoch in two of them is an error."""
        merged = cls()
        for recorder in recorders:
            merged.metadata.update(recorder.metadata)
            arrays = recorder.to_arrays()
            for col, key in enumerate(arrays.epochs):
                rows = np.flatnonzero(arrays.recorded[:, col])
                ids = [arrays.ids[r] for r in rows]
                merged._check_insert(key, ids, arrays.labels[rows])
                merged._add(key, ids, arrays.labels[rows], arrays.column(rows, col))
        return merged

    def _check_insert(self, key: EpochKey, ids: list[str], labels: np.ndarray) -> None:
        buffer = self._epochs.get(key)
        for i, label in zip(ids, labels.tolist()):
            if buffer is not None and i in buffer.index:
                raise InputError(f"example id {i!r} is recorded twice in epoch {key!r}")
            if self._labels.get(i, label) != label:
                raise InputError(f"example id {i!r} has two different labels")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``dynamics.npz`` (arrays) then ``dynamics.json`` (ids, epochs, checksum), each
        atomically: a directory whose JSON reads is complete."""
        if self._num_classes is None:
            raise InputError("nothing was recorded yet: there is nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = self.to_arrays()
        payload = {
            "labels": arrays.labels,
            "loss": arrays.loss,
            "probs": arrays.probs,
            "margin": arrays.margin,
            "correct": arrays.correct,
            "grad_norm": arrays.grad_norm,
            "recorded": arrays.recorded,
        }
        buffer = io.BytesIO()
        np.savez(buffer, **payload)
        raw = buffer.getvalue()
        write_atomic(directory / ARRAYS_FILE, lambda h: h.write(raw))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "ids": arrays.ids,
            "epochs": arrays.epochs,
            "num_classes": self._num_classes,
            "arrays_sha256": hashlib.sha256(raw).hexdigest(),
            "metadata": self.metadata,
        }
        write_atomic(directory / META_FILE, lambda h: h.write(json.dumps(meta).encode()))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DynamicsRecorder:
        """Read what :meth:`save` wrote (never unpickles)."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            raw = (directory / ARRAYS_FILE).read_bytes()
        except (OSError, ValueError) as err:
            raise InputError(f"{directory} holds no readable dynamics records ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"{directory / META_FILE} is not an infscope dynamics file")
        if meta.get("version") != VERSION:
            raise InputError(
                f"{directory}: unsupported dynamics format version {meta.get('version')}"
            )
        if hashlib.sha256(raw).hexdigest() != meta.get("arrays_sha256"):
            raise InputError(
                f"{directory / ARRAYS_FILE} does not match {META_FILE} (an interrupted save?)"
            )
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = DynamicsArrays(
                ids=[str(i) for i in meta["ids"]],
                epochs=[epoch_key(e) for e in meta["epochs"]],
                labels=data["labels"],
                loss=data["loss"],
                probs=data["probs"],
                margin=data["margin"],
                correct=data["correct"],
                grad_norm=data["grad_norm"],
                recorded=data["recorded"],
            )
        n, e = len(arrays.ids), len(arrays.epochs)
        if arrays.recorded.shape != (n, e) or arrays.probs.shape != (n, e, meta["num_classes"]):
            raise InputError(f"{directory}: array shapes do not match the ids and epochs")
        recorder = cls(metadata=meta.get("metadata") or {})
        recorder._num_classes = int(meta["num_classes"])
        for col, key in enumerate(arrays.epochs):
            rows = np.flatnonzero(arrays.recorded[:, col])
            ids = [arrays.ids[r] for r in rows]
            recorder._add(key, ids, arrays.labels[rows], arrays.column(rows, col))
        return recorder
