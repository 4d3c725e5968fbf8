"""DynamicsRecorder: keyed by id, shuffle-safe, strict about duplicates, exact gradient norms,
atomic no-pickle persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from infscope.dynamics import DynamicsRecorder
from infscope.errors import InputError
from tests.dynamics.table import IDS, random_records, table_recorder

FIELDS = ("loss", "probs", "margin", "correct", "grad_norm", "recorded", "labels")


def assert_same(a, b):
    assert a.ids == b.ids and a.epochs == b.epochs
    for name in FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0)


def test_table_values_are_recorded_exactly():
    arrays = table_recorder().to_arrays()
    assert arrays.ids == IDS and arrays.epochs == [0, 1, 2] and arrays.num_classes == 3
    np.testing.assert_allclose(arrays.correct_prob[0], [0.5, 0.25, 0.8])
    np.testing.assert_allclose(arrays.loss[2], -np.log([0.25, 0.2, 0.1]))
    assert arrays.correct.tolist() == [[1, 0, 1], [0, 1, 1], [0, 0, 0]]
    np.testing.assert_allclose(arrays.margin[1], np.log([0.5, 2.0, 8.0]))
    assert arrays.recorded.all()


def test_shuffled_multi_epoch_recording_equals_ordered():
    logits, labels, features = random_records(n=10, epochs=3)
    ids = [f"ex{i}" for i in range(10)]
    ordered = DynamicsRecorder()
    shuffled = DynamicsRecorder()
    generator = np.random.default_rng(1)
    for epoch in range(3):
        ordered.record(
            ids, torch.tensor(logits[epoch]), labels, epoch, torch.tensor(features[epoch])
        )
        perm = generator.permutation(10)
        for batch in np.array_split(perm, [3, 4, 8]):  # uneven batches
            shuffled.record(
                np.array(ids)[batch],
                torch.tensor(logits[epoch][batch]),
                torch.tensor(labels[batch]),
                epoch,
                features=torch.tensor(features[epoch][batch]),
            )
    assert shuffled.ids != ordered.ids  # first-seen order differs ...
    assert_same(ordered.to_arrays(ids), shuffled.to_arrays(ids))  # ... the records do not
    # and the first-seen order of the ordered run is the dataset order
    assert ordered.ids == ids


def test_recording_twice_in_an_epoch_names_the_id_and_stores_nothing():
    recorder = DynamicsRecorder()
    recorder.record(["a", "b"], torch.zeros(2, 2), [0, 1], 0)
    with pytest.raises(InputError, match="'b' was already recorded in epoch 0"):
        recorder.record(["c", "b"], torch.zeros(2, 2), [0, 1], 0)
    assert recorder.ids == ["a", "b"]  # 'c' was not stored either
    with pytest.raises(InputError, match="'d' appears twice in one batch"):
        recorder.record(["d", "d"], torch.zeros(2, 2), [0, 0], 1)
    recorder.record(["b", "a"], torch.zeros(2, 2), [1, 0], 1)  # a new epoch is fine
    recorder.record(["c"], torch.zeros(1, 2), [0], "final")  # so is a named checkpoint
    assert recorder.epochs == [0, 1, "final"]
    with pytest.raises(InputError, match="'a' has label 1 here but 0"):
        recorder.record(["a"], torch.zeros(1, 2), [1], 2)


@pytest.mark.parametrize(
    "args, match",
    [
        ((["a"], torch.zeros(1, 2, 3), [0], 0), r"shape \[batch, classes\]"),
        ((["a", "b"], torch.zeros(1, 2), [0], 0), "2 ids for a batch of 1"),
        ((["a"], torch.zeros(1, 2), [2], 0), r"labels must lie in \[0, 1\]"),
        ((["a"], torch.zeros(1, 2), [0], True), "epoch must be"),
        ((["a"], torch.zeros(1, 2), [0], 0.5), "epoch must be"),
        (("a", torch.zeros(1, 2), [0], 0), "not one string"),
    ],
)
def test_bad_input_is_refused(args, match):
    with pytest.raises(InputError, match=match):
        DynamicsRecorder().record(*args)


def test_to_arrays_rejects_unknown_ids():
    recorder = table_recorder()
    with pytest.raises(InputError, match="never recorded: 'zz'"):
        recorder.to_arrays(["a", "zz"])
    with pytest.raises(InputError, match="nothing was recorded"):
        DynamicsRecorder().to_arrays()


def test_persistence_round_trip(tmp_path):
    logits, labels, features = random_records(n=6, epochs=2)
    recorder = DynamicsRecorder(metadata={"seed": 3})
    ids = [f"id-{i}" for i in range(6)]
    recorder.record(ids, torch.tensor(logits[0]), labels, 0, torch.tensor(features[0]))
    recorder.record(ids[:4], torch.tensor(logits[1][:4]), labels[:4], "ckpt-final")  # 2 missing
    directory = recorder.save(tmp_path / "dyn")
    assert sorted(p.name for p in directory.iterdir()) == ["dynamics.json", "dynamics.npz"]
    loaded = DynamicsRecorder.load(directory)
    assert loaded.epochs == [0, "ckpt-final"] and loaded.metadata == {"seed": 3}
    assert_same(recorder.to_arrays(ids), loaded.to_arrays(ids))
    # loaded records keep refusing duplicates and accept new epochs
    with pytest.raises(InputError, match="already recorded"):
        loaded.record(ids[:1], torch.zeros(1, 4), labels[:1], 0)
    loaded.record(ids[4:], torch.zeros(2, 4), labels[4:], "ckpt-final")

    # a damaged arrays file is detected, not silently read
    npz = directory / "dynamics.npz"
    npz.write_bytes(npz.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(InputError, match="does not match"):
        DynamicsRecorder.load(directory)
    meta = json.loads((directory / "dynamics.json").read_text())
    (directory / "dynamics.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(InputError, match="not an infscope dynamics file"):
        DynamicsRecorder.load(directory)
    with pytest.raises(InputError, match="no readable dynamics"):
        DynamicsRecorder.load(tmp_path / "nowhere")


def test_merge_combines_disjoint_recorders():
    logits, labels, _ = random_records(n=8, epochs=2)
    ids = [str(i) for i in range(8)]
    whole, left, right = DynamicsRecorder(), DynamicsRecorder(), DynamicsRecorder()
    for epoch in range(2):
        whole.record(ids, torch.tensor(logits[epoch]), labels, epoch)
        left.record(ids[:5], torch.tensor(logits[epoch][:5]), labels[:5], epoch)
        right.record(ids[5:], torch.tensor(logits[epoch][5:]), labels[5:], epoch)
    assert_same(whole.to_arrays(ids), DynamicsRecorder.merge([right, left]).to_arrays(ids))
    with pytest.raises(InputError, match="recorded twice in epoch 0"):
        DynamicsRecorder.merge([left, left])


def test_watched_final_layer_gives_the_exact_last_layer_gradient_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    recorder = DynamicsRecorder()
    with recorder.watch(model, "2"):
        logits = model(x)  # the training forward
        F.cross_entropy(logits, y).backward()  # training goes on as usual
        recorder.record(range(6), logits, y, 0)
    assert recorder._watch is None  # the context manager removed the hook
    final = model[2]
    expected = []
    for i in range(6):  # one backward per example: the exact per-example gradient
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append(torch.cat([final.weight.grad.flatten(), final.bias.grad]).norm().item())
    np.testing.assert_allclose(recorder.to_arrays().grad_norm[:, 0], expected, rtol=1e-5)

    # without a bias the 1 is dropped
    nobias = nn.Linear(5, 3, bias=False)
    recorder = DynamicsRecorder()
    recorder.watch(nobias, "")
    logits = nobias(x)
    recorder.record(range(6), logits, y, 0)
    nobias.zero_grad()
    F.cross_entropy(nobias(x[:1]), y[:1]).backward()
    assert recorder.to_arrays().grad_norm[0, 0] == pytest.approx(
        nobias.weight.grad.norm().item(), rel=1e-5
    )


def test_watching_a_module_that_does_not_produce_the_logits_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 3))
    recorder = DynamicsRecorder()
    recorder.watch(model, "0")  # right shape, wrong values
    with pytest.raises(InputError, match="is not the recorded logits"):
        recorder.record(range(2), model(torch.randn(2, 5)), [0, 1], 0)
    recorder.watch(model, "2")
    with pytest.raises(InputError, match="did not run since the last record"):
        recorder.record(range(2), torch.zeros(2, 3), [0, 1], 0)
    with pytest.raises(InputError, match="is a Tanh"):
        recorder.watch(model, "1")
    with pytest.raises(InputError, match="no module named"):
        recorder.watch(model, "head")
