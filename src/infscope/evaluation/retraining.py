"""Counterfactual ground truth: retrain on chosen subsets of the training data and measure.

Both the linear datamodeling score (LDS) and leave-one-out (LOO) evaluation compare attribution
scores with what actually happens when a model is trained without some examples. This module runs
those retrainings: a user ``train_fn(train_indices, seed) -> measurements`` is called once per
subset (a boolean mask over the training set) and returns one loss-like measurement per query
(lower is better, the same measurement the scores explain).

Sign convention: a positive score ``tau(q, z)`` means training example ``z`` *lowers* query
``q``'s measurement. A datamodel therefore predicts ``m_q(S) ~ -sum_{z in S} tau(q, z)`` (up to a
constant), and removing a helpful example raises the measurement: ``m(without z) - m(all)``
correlates positively with ``tau(q, z)``.

With a ``cache_dir`` every finished subset is saved at once (``subset-00017.npz``, written
atomically, no pickle) next to a ``manifest.json`` fingerprinting the masks and seeds, so a killed
run that is started again with the same arguments trains only the subsets still missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from infscope.errors import InputError
from infscope.io import write_atomic

TrainFn = Callable[[np.ndarray, int], np.ndarray]
"""``train_fn(train_indices, seed) -> measurements``: train on ``train_indices`` (sorted positions
in the training set) with ``seed``, return a finite ``[n_query]`` array of loss-like measurements."""

MANIFEST = "manifest.json"
FORMAT = "infscope.retraining"


@dataclass(frozen=True)
class RetrainingOutcomes:
    """Measurements of models retrained on subsets: row ``i`` of ``outputs`` comes from a model
    trained on the examples where ``masks[i]`` is true, with seed ``seeds[i]``."""

    masks: np.ndarray  # bool [n_subsets, n_train]
    outputs: np.ndarray  # float64 [n_subsets, n_query]
    seeds: np.ndarray  # int64 [n_subsets]
    seconds: np.ndarray  # float64 [n_subsets], wall time of each train_fn call

    def __post_init__(self) -> None:
        m = self.masks.shape[0] if self.masks.ndim == 2 else -1
        if (
            self.masks.ndim != 2
            or self.outputs.ndim != 2
            or self.outputs.shape[0] != m
            or self.seeds.shape != (m,)
            or self.seconds.shape != (m,)
        ):
            raise InputError(
                f"inconsistent outcomes: masks {self.masks.shape}, outputs {self.outputs.shape}, "
                f"seeds {self.seeds.shape}, seconds {self.seconds.shape} (expected "
                f"[M, n_train], [M, n_query], [M], [M])"
            )

    @property
    def n_subsets(self) -> int:
        return int(self.masks.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.masks.shape[1])

    @property
    def n_query(self) -> int:
        return int(self.outputs.shape[1])


def _check_masks(masks: Any) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(
            f"masks must be a 2-D boolean array [n_subsets, n_train] with at least one row and "
            f"column, got shape {array.shape}"
        )
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer) or not np.isin(array, (0, 1)).all():
            raise InputError(f"masks must be boolean (or 0/1 integers), got dtype {array.dtype}")
        array = array.astype(bool)
    return np.ascontiguousarray(array)


def _check_seeds(seeds: Sequence[int] | None, n_subsets: int) -> np.ndarray:
    if seeds is None:
        return np.arange(n_subsets, dtype=np.int64)
    array = np.asarray(seeds)
    if array.shape != (n_subsets,):
        raise InputError(f"{array.size} seeds for {n_subsets} subsets: give one seed per subset")
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"seeds must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def masks_fingerprint(masks: np.ndarray) -> str:
    """SHA-256 of the mask bytes (row-major booleans); shape is recorded next to it."""
    return hashlib.sha256(np.ascontiguousarray(masks, dtype=bool).tobytes()).hexdigest()


class RetrainingRunner:
    """Call ``train_fn`` once per subset mask and collect its measurements, optionally cached.

    ``seeds`` gives the seed of each subset's training run (default ``0, 1, ..., M-1``); pass the
    same seed for every row to make the removed examples the only difference between runs.
    ``training_key`` names the training settings (``"lr=1e-3,epochs=3"``): a cache made with
    another key is refused instead of silently reused.
    """

    def __init__(
        self,
        train_fn: TrainFn,
        masks: np.ndarray,
        cache_dir: str | Path | None = None,
        seeds: Sequence[int] | None = None,
        training_key: str = "",
    ) -> None:
        if not callable(train_fn):
            raise InputError(f"train_fn must be callable, got {type(train_fn).__name__}")
        self.train_fn = train_fn
        self.masks = _check_masks(masks)
        self.seeds = _check_seeds(seeds, self.masks.shape[0])
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.training_key = str(training_key)
        if self.cache_dir is not None and self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise InputError(f"cache {self.cache_dir} exists and is not a directory")
        self._check_manifest()

    @property
    def n_subsets(self) -> int:
        return int(self.masks.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.masks.shape[1])

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "n_train": self.n_train,
            "num_subsets": self.n_subsets,
            "masks_sha256": masks_fingerprint(self.masks),
            "seeds": [int(s) for s in self.seeds],
            "training_key": self.training_key,
        }

    def _check_manifest(self) -> None:
        """Refuse to resume a cache made for other masks or seeds, naming what differs."""
        if self.cache_dir is None or not (self.cache_dir / MANIFEST).exists():
            return
        path = self.cache_dir / MANIFEST
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                f"{path} is unreadable ({err}); remove the cache to start over"
            ) from None
        new = self._manifest()
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise InputError(f"{path} is not an infscope retraining manifest")
        hint = "use another cache directory, or the original masks, seeds and training settings"
        old.setdefault("training_key", "")  # caches written before training keys existed
        for key in ("n_train", "num_subsets", "training_key"):
            if old.get(key) != new[key]:
                raise InputError(
                    f"cache {self.cache_dir} was made with {key}={old.get(key)!r}, not {new[key]!r}; {hint}"
                )
        if old.get("masks_sha256") != new["masks_sha256"]:
            raise InputError(
                f"cache {self.cache_dir} was made for different masks (sha256 "
                f"{str(old.get('masks_sha256'))[:12]}... vs {new['masks_sha256'][:12]}...); {hint}"
            )
        if old.get("seeds") != new["seeds"]:
            old_seeds = old.get("seeds") or []
            first = next(
                (i for i, (a, b) in enumerate(zip(old_seeds, new["seeds"])) if a != b),
                min(len(old_seeds), len(new["seeds"])),
            )
            raise InputError(
                f"cache {self.cache_dir} was made with different seeds (first difference at "
                f"subset {first}); {hint}"
            )

    def _subset_path(self, index: int) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"subset-{index:05d}.npz"

    def _load_subset(self, index: int) -> tuple[np.ndarray, float] | None:
        path = self._subset_path(index)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                mask, output = data["mask"], data["output"]
                seed, seconds = int(data["seed"]), float(data["seconds"])
        except (OSError, ValueError, KeyError) as err:
            raise InputError(
                f"{path} is unreadable ({err}); delete it to retrain subset {index}"
            ) from None
        if not np.array_equal(mask, self.masks[index]) or seed != int(self.seeds[index]):
            raise InputError(
                f"{path} holds a different mask or seed than subset {index}; delete it"
            )
        return output, seconds

    def _call(self, index: int, n_query: int | None) -> tuple[np.ndarray, float]:
        indices = np.flatnonzero(self.masks[index])
        start = time.perf_counter()
        raw = self.train_fn(indices, int(self.seeds[index]))
        seconds = time.perf_counter() - start
        try:
            output = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"train_fn returned {type(raw).__name__} for subset {index}, not an array of "
                f"measurements"
            ) from None
        if output.ndim != 1 or output.size == 0:
            raise InputError(
                f"train_fn returned shape {output.shape} for subset {index}; expected a 1-D "
                f"array with one measurement per query"
            )
        if n_query is not None and output.shape[0] != n_query:
            raise InputError(
                f"train_fn returned {output.shape[0]} measurements for subset {index} but "
                f"{n_query} for earlier subsets"
            )
        bad = ~np.isfinite(output)
        if bad.any():
            raise InputError(
                f"train_fn returned {int(bad.sum())} non-finite measurements for subset {index} "
                f"(queries {np.flatnonzero(bad)[:5].tolist()})"
            )
        return output, seconds

    def run(self, progress: bool = True) -> RetrainingOutcomes:
        """Train every subset not already in the cache; return all outcomes in mask order."""
        outputs: list[np.ndarray | None] = [None] * self.n_subsets
        seconds = np.zeros(self.n_subsets)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._check_manifest()  # the directory may have been filled since __init__
            if not (self.cache_dir / MANIFEST).exists():
                text = json.dumps(self._manifest()).encode()
                write_atomic(self.cache_dir / MANIFEST, lambda h: h.write(text))
            for i in range(self.n_subsets):
                loaded = self._load_subset(i)
                if loaded is not None:
                    outputs[i], seconds[i] = loaded
        done = [o for o in outputs if o is not None]
        n_query = done[0].shape[0] if done else None
        if any(o.shape != (n_query,) for o in done):
            raise InputError(f"cache {self.cache_dir} holds outputs of different lengths")
        with tqdm(
            total=self.n_subsets,
            initial=len(done),
            desc="retraining",
            unit="model",
            disable=not progress,
        ) as bar:
            for i in range(self.n_subsets):
                if outputs[i] is not None:
                    continue
                output, elapsed = self._call(i, n_query)
                n_query = output.shape[0]
                outputs[i], seconds[i] = output, elapsed
                if self.cache_dir is not None:
                    record = {
                        "mask": self.masks[i],
                        "output": output,
                        "seed": np.int64(self.seeds[i]),
                        "seconds": np.float64(elapsed),
                    }
                    write_atomic(self._subset_path(i), lambda h, r=record: np.savez(h, **r))
                bar.update(1)
        return RetrainingOutcomes(
            masks=self.masks.copy(),
            outputs=np.stack(outputs),  # type: ignore[arg-type]
            seeds=self.seeds.copy(),
            seconds=seconds,
        )


def random_subset_masks(n_train: int, num_subsets: int, alpha: float, seed: int) -> np.ndarray:
    """``[num_subsets, n_train]`` masks, each keeping exactly ``round(alpha * n_train)`` examples
    drawn uniformly without replacement (seeded, so the same arguments give the same masks)."""
    if int(n_train) != n_train or n_train < 2:
        raise InputError(f"n_train must be an integer >= 2, got {n_train}")
    if int(num_subsets) != num_subsets or num_subsets < 1:
        raise InputError(f"num_subsets must be a positive integer, got {num_subsets}")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    keep = int(round(alpha * n_train))
    if not 0 < keep < n_train:
        raise InputError(
            f"alpha={alpha} keeps {keep} of {n_train} training examples; subsets must keep at "
            f"least one example and drop at least one"
        )
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((int(num_subsets), int(n_train))), axis=1)
    masks = np.zeros((int(num_subsets), int(n_train)), dtype=bool)
    np.put_along_axis(masks, order[:, :keep], True, axis=1)
    return masks


def leave_one_out_masks(n_train: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row 0 keeps every example; row ``1 + j`` drops only ``indices[j]``."""
    if int(n_train) != n_train or n_train < 2:
        raise InputError(f"n_train must be an integer >= 2, got {n_train}")
    index = check_indices(indices, n_train)
    masks = np.ones((1 + index.size, int(n_train)), dtype=bool)
    masks[1 + np.arange(index.size), index] = False
    return masks


def check_indices(indices: Sequence[int] | np.ndarray, n_train: int) -> np.ndarray:
    """Validate training positions: 1-D, non-empty, integer, in range, no repeats."""
    index = np.asarray(indices)
    if index.ndim != 1 or index.size == 0:
        raise InputError(f"indices must be a non-empty 1-D sequence, got shape {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise InputError(f"indices must be integers, got dtype {index.dtype}")
    outside = index[(index < 0) | (index >= n_train)]
    if outside.size:
        raise InputError(
            f"indices {outside[:5].tolist()} are outside the training set [0, {n_train})"
        )
    values, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"indices repeat: {values[counts > 1][:5].tolist()}")
    return index.astype(np.int64)
