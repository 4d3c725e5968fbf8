"""featurize(): stores that survive being killed, several workers, and errors that name examples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from infscope.data import ExampleSet
from infscope.errors import InputError, NonFiniteError, StoreMismatchError
from infscope.gradients import GradientExtractor, ProjectionConfig, model_fingerprint
from infscope.gradients.featurize import featurize
from infscope.store import FeatureStore
from infscope.tasks import ClassificationTask
from tests.gradients import resume_worker as rw

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(rw.__file__).resolve()
N_SHARDS = rw.N_EXAMPLES // rw.SHARD_SIZE


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store by relative path, hidden (temporary) files left out."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    }


def assert_same_store(a: Path, b: Path) -> None:
    files_a, files_b = store_files(a), store_files(b)
    assert sorted(files_a) == sorted(files_b)
    # store.json, ids.json, N_SHARDS shards, per-example losses and predicted labels, each of
    # the three with its checksum
    assert len(files_a) == 2 + 6 * N_SHARDS
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"


def shard_files(root: Path) -> list[Path]:
    folder = root / "checkpoints" / rw.CHECKPOINT
    return sorted(folder.glob("shard-*.npy")) if folder.is_dir() else []


def worker_env(slow: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(rw.SLOW_ENV, None)
    if slow:
        env[rw.SLOW_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    return env


def run_worker(root: Path, *args: str, slow: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(root), *args],
        cwd=REPO,
        env=worker_env(slow),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_killed_worker_resumes_to_a_byte_identical_store(tmp_path):
    root = tmp_path / "resumed"
    proc = run_worker(root, slow=True)
    deadline = time.monotonic() + 60
    try:
        while not shard_files(root):
            if proc.poll() is not None:
                pytest.fail(f"worker exited early ({proc.returncode}): {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("worker wrote no shard within 60 s")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    written = len(shard_files(root))
    assert 1 <= written < N_SHARDS
    store = FeatureStore.open(root)
    assert store.is_complete() is False
    assert store.status()[rw.CHECKPOINT] == (written, N_SHARDS)

    resumed = run_worker(root)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()
    assert FeatureStore.open(root).is_complete()

    reference = tmp_path / "reference"
    rw.run(reference)  # one uninterrupted run
    assert_same_store(root, reference)
    FeatureStore.open(root).verify()


def test_two_workers_in_turn_equal_one_worker(tmp_path):
    shared, single = tmp_path / "shared", tmp_path / "single"
    rw.run(shared, worker=0, num_workers=2)
    store = FeatureStore.open(shared)
    assert not store.is_complete()
    # worker 0 owns the even shards
    assert [p.name for p in shard_files(shared)] == [
        f"shard-{s:010d}-{s + rw.SHARD_SIZE:010d}.npy"
        for s in range(0, rw.N_EXAMPLES, 2 * rw.SHARD_SIZE)
    ]
    rw.run(shared, worker=1, num_workers=2)
    assert FeatureStore.open(shared).is_complete()
    rw.run(single)
    assert_same_store(shared, single)


def test_features_equal_direct_extraction(tmp_path):
    store = rw.run(tmp_path / "store")
    extractor = rw.build_extractor()
    examples = rw.build_examples()
    direct = torch.cat(
        [
            extractor.features(extractor.task.collate(examples[i : i + rw.BATCH_SIZE]))
            for i in range(0, len(examples), rw.BATCH_SIZE)
        ]
    ).numpy()
    assert store.ids == list(rw.build_ids())
    assert store.feature_dim == extractor.feature_dim
    np.testing.assert_array_equal(store.features(rw.CHECKPOINT), direct)
    info = store.checkpoint(rw.CHECKPOINT)
    assert info.learning_rate == rw.LEARNING_RATE
    assert store.spec.gradient == "loss"
    assert store.spec.projection["seed"] == 0 and store.spec.projection["dim"] == 32

    half = rw.run(tmp_path / "half", dtype="float16")
    assert np.load(shard_files(tmp_path / "half")[0]).dtype == np.float16
    np.testing.assert_allclose(half.features(rw.CHECKPOINT), direct, rtol=1e-3, atol=1e-4)


def test_shards_not_a_multiple_of_the_batch_size(tmp_path):
    """Batches stop at shard boundaries: a 7-example shard with batch size 3 still holds the
    features of exactly its own examples, whatever the batch layout."""
    store = rw.run(tmp_path / "store", shard_size=7, batch_size=3)
    extractor = rw.build_extractor()
    examples = rw.build_examples()
    one_by_one = torch.cat([extractor.features(extractor.task.collate([ex])) for ex in examples])
    np.testing.assert_allclose(store.features(), one_by_one.numpy(), rtol=1e-5, atol=1e-6)
    assert len(store.shard_ranges()) == 6


def test_measurement_gradients(tmp_path):
    extractor = rw.build_extractor()
    extractor.task = ClassificationTask(measurement="margin")
    store = featurize(
        extractor, rw.build_data(), tmp_path, "c", gradient="measurement", progress=False
    )
    assert store.spec.gradient == "measurement"
    examples = rw.build_examples()
    direct = extractor.features(extractor.task.collate(examples), "measurement")
    np.testing.assert_allclose(store.features(), direct.numpy(), rtol=1e-5, atol=1e-6)


def test_nan_loss_names_the_example_and_writes_no_shard_for_it(tmp_path):
    bad = 13  # in shard [8, 16), batch [12, 16)
    examples = rw.build_examples()
    x, y = examples[bad]
    examples[bad] = (torch.full_like(x, float("nan")), y)
    data = ExampleSet(examples, rw.build_ids())
    with pytest.raises(NonFiniteError) as info:
        featurize(
            rw.build_extractor(), data, tmp_path, "c", shard_size=8, batch_size=4, progress=False
        )
    assert "ex-13" in str(info.value)
    assert info.value.ids == ["ex-13"]
    store = FeatureStore.open(tmp_path)
    folder = tmp_path / "checkpoints" / "c"
    assert store.shard_path("c", 0).exists()  # the shard before was written
    assert not store.shard_path("c", 8).exists()
    assert not store.shard_path("c", 8).with_suffix(".sha256").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    assert store.missing_shards("c") == [(8, 16), (16, 24), (24, 32), (32, 40)]


@pytest.mark.parametrize("change", [{"seed": 1}, {"dim": 16}, {"kind": "sjlt"}])
def test_resume_with_another_projection_is_refused(tmp_path, change):
    rw.run(tmp_path)
    before = store_files(tmp_path)
    with pytest.raises(StoreMismatchError, match="projection"):
        featurize(
            rw.build_extractor(**change),
            rw.build_data(),
            tmp_path,
            rw.CHECKPOINT,
            shard_size=rw.SHARD_SIZE,
            learning_rate=rw.LEARNING_RATE,
            progress=False,
        )
    assert store_files(tmp_path) == before


def test_resume_with_other_ids_or_weights_is_refused(tmp_path):
    rw.run(tmp_path, worker=0, num_workers=2)
    before = store_files(tmp_path)
    ids = list(rw.build_ids())
    ids[5] = "renamed"
    with pytest.raises(StoreMismatchError, match="ids"):
        featurize(
            rw.build_extractor(),
            ExampleSet(rw.build_examples(), tuple(ids)),
            tmp_path,
            rw.CHECKPOINT,
            shard_size=rw.SHARD_SIZE,
            learning_rate=rw.LEARNING_RATE,
            progress=False,
        )
    with pytest.raises(StoreMismatchError, match="shard_size"):
        rw.run(tmp_path, worker=1, num_workers=2, shard_size=4)
    with pytest.raises(StoreMismatchError, match="learning_rate"):
        rw.run(tmp_path, worker=1, num_workers=2, learning_rate=0.5)
    # the same checkpoint name with other weights
    model = rw.build_model()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        featurize(
            rw.build_extractor(model=model),
            rw.build_data(),
            tmp_path,
            rw.CHECKPOINT,
            shard_size=rw.SHARD_SIZE,
            learning_rate=rw.LEARNING_RATE,
            progress=False,
        )
    assert store_files(tmp_path) == before


def test_model_with_scalar_buffers(tmp_path):
    """BatchNorm's 0-dim ``num_batches_tracked`` buffer must not break the model fingerprint."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))
    extractor = GradientExtractor(model, ClassificationTask(), ProjectionConfig("sjlt", dim=16))
    store = featurize(extractor, rw.build_data(), tmp_path, "c", shard_size=16, progress=False)
    assert store.is_complete()
    fingerprint = store.checkpoint("c").fingerprint
    model[1].num_batches_tracked += 1
    assert model_fingerprint(model) != fingerprint


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "float64"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"worker": 2, "num_workers": 2}, "worker"),
        ({"gradient": "params"}, "gradient"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        featurize(rw.build_extractor(), rw.build_data(), tmp_path, "c", progress=False, **kwargs)


def test_bad_example_errors_name_the_batch_ids(tmp_path):
    """A task's InputError about 'example 1' of a batch is given the dataset ids of the batch."""

    class PickyTask(ClassificationTask):
        def collate(self, examples):
            for i, (x, _) in enumerate(examples):
                if x.isnan().any():
                    raise InputError(f"example {i} is unusable")
            return super().collate(examples)

    examples = rw.build_examples()
    examples[21] = (torch.full((8,), float("nan")), examples[21][1])
    extractor = rw.build_extractor()
    extractor.task = PickyTask()
    data = ExampleSet(examples, rw.build_ids())
    with pytest.raises(InputError) as info:
        featurize(extractor, data, tmp_path, "c", shard_size=8, batch_size=4, progress=False)
    message = str(info.value)
    assert "example 1 is unusable" in message
    assert "20..23" in message and "ex-21" in message
    assert FeatureStore.open(tmp_path).missing_shards("c") == [(16, 24), (24, 32), (32, 40)]


def test_store_records_the_task_and_refuses_another(tmp_path):
    model, data = rw.build_model(), rw.build_data()
    featurize(
        GradientExtractor(model, ClassificationTask(), ProjectionConfig(kind="sjlt", dim=16)),
        data,
        tmp_path / "s",
        progress=False,
    )
    assert FeatureStore.open(tmp_path / "s").spec.task["measurement"] == "loss"
    margin = GradientExtractor(
        model, ClassificationTask("margin"), ProjectionConfig(kind="sjlt", dim=16)
    )
    with pytest.raises(StoreMismatchError, match="task"):
        featurize(margin, data, tmp_path / "s", gradient="loss", progress=False)


def test_store_records_per_example_losses(tmp_path):
    store = rw.run(tmp_path / "store")
    extractor, examples = rw.build_extractor(), rw.build_examples()
    x = torch.stack([e[0] for e in examples])
    y = torch.stack([e[1] for e in examples])
    expected = extractor.task.train_loss(extractor.model, (x, y)).detach().double().numpy()
    np.testing.assert_allclose(store.losses(rw.CHECKPOINT), expected, rtol=1e-6)


def test_slow_or_shrunken_projections_are_warned_about(tmp_path, monkeypatch):
    """Before: a dense projection costing hours per thousand examples started without a word."""
    from infscope.errors import InfscopeWarning
    from infscope.gradients import featurize as module

    monkeypatch.setattr(module, "DENSE_COST_WARNING", 1000)
    with pytest.warns(InfscopeWarning, match="multiply-adds per example"):
        featurize(
            rw.build_extractor(kind="gaussian"), rw.build_data(), tmp_path / "g", progress=False
        )
    with pytest.warns(InfscopeWarning, match="gives 195 features, not the 4,096 asked"):
        featurize(rw.build_extractor(dim=4096), rw.build_data(), tmp_path / "k", progress=False)


def test_a_checkpoint_repeating_anothers_weights_is_warned_about(tmp_path):
    from infscope.errors import InfscopeWarning

    extractor, data = rw.build_extractor(), rw.build_data()
    featurize(extractor, data, tmp_path, "a", progress=False)
    with pytest.warns(InfscopeWarning, match="same model weights as 'a'"):
        featurize(extractor, data, tmp_path, "b", progress=False)


def test_predicted_labels_are_recorded_from_the_same_pass(tmp_path):
    store = rw.run(tmp_path)
    model = rw.build_model()
    x = torch.stack([x for x, _ in rw.build_examples()])
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    np.testing.assert_array_equal(store.predictions(rw.CHECKPOINT), expected)
