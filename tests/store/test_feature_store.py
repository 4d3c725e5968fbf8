"""Tests of the on-disk feature store: round trips, resume, crashes, workers and errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infscope.errors import (
    InputError,
    StoreCorruptError,
    StoreError,
    StoreIncompleteError,
    StoreMismatchError,
)
from infscope.store import CheckpointInfo, FeatureStore, StoreSpec

N, D, SHARD = 23, 6, 5  # 5 shards: 4 full, one of 3 rows


def make_ids(n: int = N) -> list[str]:
    return [f"ex{i}" for i in range(n)]


def make_features(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float64)


def make_spec(**kw) -> StoreSpec:
    base = dict(
        feature_dim=D,
        shard_size=SHARD,
        modules=("fc1", "fc2"),
        projection={"kind": "gaussian", "dim": D, "seed": 0},
        model="tiny-mlp",
    )
    base.update(kw)
    return StoreSpec(**base)


def fill(store: FeatureStore, cid: str, feats: np.ndarray) -> None:
    for start, stop in store.missing_shards(cid):
        store.write_shard(cid, start, feats[start:stop])


def store_files(root: Path) -> dict[str, bytes]:
    """All store files' bytes, hidden temp files excluded."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def write_full(root: Path, feats: np.ndarray, **spec_kw) -> FeatureStore:
    store = FeatureStore.create(root, make_ids(), make_spec(**spec_kw))
    store.add_checkpoint("ckpt-1", learning_rate=0.01, fingerprint="abc")
    fill(store, "ckpt-1", feats)
    return store


# ---- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    feats = make_features()
    store = write_full(tmp_path / "s", feats, dtype=dtype)
    assert store.is_complete() and store.is_complete("ckpt-1")
    assert store.status() == {"ckpt-1": (5, 5)}

    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.spec == store.spec and reopened.ids == make_ids()
    assert reopened.checkpoints == [CheckpointInfo("ckpt-1", 0.01, "abc")]
    got = reopened.features()
    assert got.dtype == np.float32 and got.shape == (N, D)
    np.testing.assert_array_equal(got, feats.astype(dtype).astype(np.float32))
    if dtype == "float16":  # really stored as fp16, not just cast on the way out
        assert not np.array_equal(got, feats.astype(np.float32))
    shard = np.load(reopened.shard_path("ckpt-1", 0), allow_pickle=False)
    assert shard.dtype == np.dtype(dtype) and shard.shape == (SHARD, D)
    reopened.verify()

    for block_size in (1, 3, 5, 7, 100):
        blocks = list(reopened.iter_blocks(block_size=block_size))
        assert [s for s, _ in blocks] == list(range(0, N, block_size))
        assert all(len(b) <= block_size and b.dtype == np.float32 for _, b in blocks)
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), got)


def test_torch_tensor_input_and_multiple_checkpoints(tmp_path):
    feats = make_features()
    store = FeatureStore.create(tmp_path, make_ids(), make_spec())
    store.add_checkpoint("a", learning_rate=0.1)
    store.add_checkpoint("b", learning_rate=0.05)
    for start, stop in store.shard_ranges():
        store.write_shard("a", start, torch.from_numpy(feats[start:stop]).to(torch.bfloat16))
        store.write_shard("b", start, torch.from_numpy(2 * feats[start:stop]))
    assert [c.id for c in store.checkpoints] == ["a", "b"]
    expected_a = torch.from_numpy(feats).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(store.features("a"), expected_a)
    np.testing.assert_array_equal(store.features("b"), (2 * feats).astype(np.float32))
    with pytest.raises(InputError, match="name the one"):
        store.features()


def test_spec_json_round_trip_and_validation():
    spec = make_spec(projection={"b": (1, 2), "a": {"x": 1.5}})
    assert spec.projection == {"a": {"x": 1.5}, "b": [1, 2]}  # canonical JSON form
    again = StoreSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and hash(again) == hash(spec)
    for kw, field_name in [
        ({"feature_dim": 0}, "feature_dim"),
        ({"shard_size": -1}, "shard_size"),
        ({"dtype": "float64"}, "dtype"),
        ({"gradient": "hessian"}, "gradient"),
        ({"projection": {"x": object()}}, "projection"),
    ]:
        with pytest.raises(InputError, match=field_name):
            make_spec(**kw)


# ---- resume ---------------------------------------------------------------------------------


def test_resume_is_byte_identical(tmp_path):
    feats = make_features()
    write_full(tmp_path / "oneshot", feats)

    root = tmp_path / "resumed"
    first = FeatureStore.create(root, make_ids(), make_spec())
    first.add_checkpoint("ckpt-1", learning_rate=0.01, fingerprint="abc")
    first.write_shard("ckpt-1", 0, feats[0:5])
    first.write_shard("ckpt-1", 10, feats[10:15])
    assert not first.is_complete()

    second = FeatureStore.create(root, make_ids(), make_spec())  # "restart"
    second.add_checkpoint("ckpt-1", learning_rate=0.01, fingerprint="abc")  # idempotent
    assert second.missing_shards("ckpt-1") == [(5, 10), (15, 20), (20, 23)]
    assert second.status() == {"ckpt-1": (2, 5)}
    fill(second, "ckpt-1", feats)
    assert second.missing_shards("ckpt-1") == []
    assert store_files(root) == store_files(tmp_path / "oneshot")


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from infscope.store import FeatureStore

    root, block_at = sys.argv[1], int(sys.argv[2])
    feats = np.random.default_rng(0).standard_normal(({n}, {d}))
    store = FeatureStore.open(root)
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        # Hang while the shard starting at ``block_at`` sits, complete, in its temp file.
        if str(dst).endswith("shard-%010d-%010d.npy" % (block_at, block_at + {shard})):
            print("blocked", flush=True)
            time.sleep(120)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    for start, stop in store.missing_shards("ckpt-1"):
        store.write_shard("ckpt-1", start, feats[start:stop])
        time.sleep(0.01)
    """
).format(n=N, d=D, shard=SHARD)


def test_killed_writer_leaves_an_incomplete_store_that_resumes_identically(tmp_path):
    feats = make_features()
    write_full(tmp_path / "oneshot", feats)

    root = tmp_path / "killed"
    store = FeatureStore.create(root, make_ids(), make_spec())
    store.add_checkpoint("ckpt-1", learning_rate=0.01, fingerprint="abc")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(root), "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "blocked", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    folder = root / "checkpoints" / "ckpt-1"
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f".shard-0000000010-0000000015.npy.{proc.pid}-")
    assert store.status() == {"ckpt-1": (2, 5)}  # shards 0 and 5 were written before the kill
    assert not store.is_complete() and not store.is_complete("ckpt-1")
    with pytest.raises(StoreIncompleteError, match="2 of 5 shards"):
        store.features()
    with pytest.raises(StoreIncompleteError):
        store.iter_blocks()
    store.verify()  # what exists is sound

    resumed = FeatureStore.create(root, make_ids(), make_spec())
    assert resumed.missing_shards("ckpt-1") == [(10, 15), (15, 20), (20, 23)]
    fill(resumed, "ckpt-1", np.random.default_rng(0).standard_normal((N, D)))
    assert resumed.is_complete()
    assert store_files(root) == store_files(tmp_path / "oneshot")


def test_workers_get_disjoint_shards_covering_everything(tmp_path):
    store = FeatureStore.create(tmp_path, make_ids(), make_spec(shard_size=2))  # 12 shards
    store.add_checkpoint("c")
    parts = [set(store.missing_shards("c", worker=w, num_workers=3)) for w in range(3)]
    assert set().union(*parts) == set(store.shard_ranges()) and len(store.shard_ranges()) == 12
    assert all(not (parts[i] & parts[j]) for i in range(3) for j in range(i + 1, 3))
    assert parts[1] == {(2, 4), (8, 10), (14, 16), (20, 22)}  # shard i -> worker i % 3
    store.write_shard("c", 2, make_features()[2:4])
    assert store.missing_shards("c", worker=1, num_workers=3) == [(8, 10), (14, 16), (20, 22)]
    with pytest.raises(InputError, match="worker"):
        store.missing_shards("c", worker=3, num_workers=3)


# ---- errors -----------------------------------------------------------------------------------


def test_bad_ids(tmp_path):
    with pytest.raises(InputError, match="empty dataset"):
        FeatureStore.create(tmp_path, [], make_spec())
    with pytest.raises(InputError, match=r"'ex1' appears at positions 1 and 3"):
        FeatureStore.create(tmp_path, ["ex0", "ex1", "ex2", "ex1"], make_spec())
    with pytest.raises(InputError, match="strings"):
        FeatureStore.create(tmp_path, ["a", 2], make_spec())
    assert not (tmp_path / "store.json").exists()


def test_recreate_with_different_settings_names_the_fields(tmp_path):
    FeatureStore.create(tmp_path, make_ids(), make_spec())
    with pytest.raises(StoreMismatchError) as info:
        FeatureStore.create(
            tmp_path, make_ids(), make_spec(projection={"kind": "srht"}, dtype="float16")
        )
    message = str(info.value)
    assert "projection" in message and "dtype" in message and "feature_dim" not in message
    ids = make_ids()
    ids[3] = "other"
    with pytest.raises(StoreMismatchError, match='position 3: "ex3" vs "other"'):
        FeatureStore.create(tmp_path, ids, make_spec())
    with pytest.raises(StoreMismatchError, match="stored 23 ids, given 22"):
        FeatureStore.create(tmp_path, make_ids(22), make_spec())


def test_bad_writes_leave_nothing_behind(tmp_path):
    store = FeatureStore.create(tmp_path, make_ids(), make_spec(dtype="float16"))
    store.add_checkpoint("c")
    feats = make_features()
    with pytest.raises(InputError, match="shape"):
        store.write_shard("c", 0, feats[0:4])
    with pytest.raises(InputError, match="shape"):
        store.write_shard("c", 20, feats[20:23, :5])
    for start in (3, 25, -5):
        with pytest.raises(InputError, match="shard start"):
            store.write_shard("c", start, feats[0:5])

    bad = feats[5:10].copy()
    bad[2, 1] = np.nan
    bad[4, 0] = np.inf
    with pytest.raises(InputError, match="2 of 5 rows") as info:
        store.write_shard("c", 5, bad)
    assert "ex7" in str(info.value)  # the first bad example, named by id
    huge = feats[5:10].copy()
    huge[3, 3] = 1e6  # finite, but not in float16
    with pytest.raises(InputError, match=r"overflow float16 .*'ex8'"):
        store.write_shard("c", 5, huge)
    assert list((tmp_path / "checkpoints" / "c").iterdir()) == []


def test_unknown_and_bad_checkpoints(tmp_path):
    store = FeatureStore.create(tmp_path, make_ids(), make_spec())
    with pytest.raises(StoreError, match="no checkpoints"):
        store.features()
    assert not store.is_complete()  # no checkpoint registered: never "complete"
    store.add_checkpoint("c", learning_rate=0.1)
    with pytest.raises(StoreError, match=r"unknown checkpoint 'd'.*known: 'c'"):
        store.write_shard("d", 0, make_features()[:5])
    with pytest.raises(StoreError, match="unknown checkpoint"):
        store.missing_shards("d")
    for bad in ("../x", "..", ".", "a/b", ""):
        with pytest.raises(InputError, match="bad checkpoint id"):
            store.add_checkpoint(bad)
    assert not (tmp_path / "x").exists()
    with pytest.raises(StoreMismatchError, match="learning_rate"):
        store.add_checkpoint("c", learning_rate=0.2)
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        store.add_checkpoint("c", learning_rate=0.1, fingerprint="zzz")
    assert store.add_checkpoint("c", learning_rate=0.1) == CheckpointInfo("c", 0.1)


def test_checkpoint_registered_by_another_process_is_seen(tmp_path):
    a = FeatureStore.create(tmp_path, make_ids(), make_spec())
    b = FeatureStore.create(tmp_path, make_ids(), make_spec())
    a.add_checkpoint("c1")
    b.add_checkpoint("c2")  # re-reads store.json first, so c1 survives
    assert [c.id for c in FeatureStore.open(tmp_path).checkpoints] == ["c1", "c2"]
    assert a.checkpoint("c2").id == "c2"


def test_corrupt_shards_are_reported_by_name(tmp_path):
    store = write_full(tmp_path, make_features())
    truncated = store.shard_path("ckpt-1", 5)
    truncated.write_bytes(truncated.read_bytes()[:-7])
    with pytest.raises(StoreCorruptError, match=truncated.name):
        store.verify()
    with pytest.raises(StoreCorruptError, match=truncated.name):
        store.features()
    with pytest.raises(StoreCorruptError, match=truncated.name):
        list(store.iter_blocks(block_size=4))

    store = write_full(tmp_path / "flip", make_features())
    flipped = store.shard_path("ckpt-1", 10)
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0xFF  # in the data: only the checksum can tell
    flipped.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=rf"{flipped.name}.*sha256 mismatch"):
        store.verify()
    data[:6] = b"garble"  # in the magic: unreadable
    flipped.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=flipped.name):
        store.features()

    store = write_full(tmp_path / "wrongdtype", make_features())
    path = store.shard_path("ckpt-1", 0)
    np.save(path, make_features()[0:5])  # float64: a readable but wrong shard
    with pytest.raises(StoreCorruptError, match=rf"{path.name}: dtype float64"):
        store.features()


def test_garbled_metadata(tmp_path):
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "nothing")
    write_full(tmp_path, make_features())
    meta = tmp_path / "store.json"
    good = meta.read_bytes()

    meta.write_bytes(good[: len(good) // 2])
    with pytest.raises(StoreCorruptError, match="store.json"):
        FeatureStore.open(tmp_path)
    with pytest.raises(StoreCorruptError, match="store.json"):
        FeatureStore.create(tmp_path, make_ids(), make_spec())

    doc = json.loads(good)
    for key, value in [("version", 99), ("n_examples", 22), ("spec", {"dtype": "float32"})]:
        meta.write_text(json.dumps({**doc, key: value}))
        with pytest.raises(StoreCorruptError):
            FeatureStore.open(tmp_path)
    meta.write_text(json.dumps({k: v for k, v in doc.items() if k != "checkpoints"}))
    with pytest.raises(StoreCorruptError, match="checkpoints"):
        FeatureStore.open(tmp_path)

    meta.write_bytes(good)
    (tmp_path / "ids.json").write_text("[1, 2")
    with pytest.raises(StoreCorruptError, match="ids.json"):
        FeatureStore.open(tmp_path)


# ---- integrity on read, recoverable metadata ------------------------------------------------


def test_reads_check_each_shard_checksum_once_per_process(tmp_path, monkeypatch):
    """A bit flip in a shard's data is caught by a plain read (not only by verify()), naming the
    shard; an intact store is hashed once per process, then read from the cache."""
    store = write_full(tmp_path, make_features())
    flipped = store.shard_path("ckpt-1", 10)
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0x10
    flipped.write_bytes(bytes(data))
    reader = FeatureStore.open(tmp_path)
    with pytest.raises(StoreCorruptError, match=rf"{flipped.name}.*sha256 mismatch"):
        reader.features()
    with pytest.raises(StoreCorruptError, match=flipped.name):
        list(reader.iter_blocks(block_size=4))

    fresh = write_full(tmp_path / "fresh", make_features())
    fresh.features()
    calls = []
    from infscope.store import feature_store

    original = feature_store.check_shard
    monkeypatch.setattr(feature_store, "check_shard", lambda *a: calls.append(a) or original(*a))
    FeatureStore.open(tmp_path / "fresh").features()
    assert calls == []  # verified already in this process
    fresh.verify()  # verify() always re-checks
    assert len(calls) == 5


def test_random_access_maps_each_shard_once_and_sees_a_changed_file(tmp_path, monkeypatch):
    """rows() keeps its shards mapped between calls (candidate re-scoring reads a few rows of
    every shard per query), yet a shard changed on disk afterwards is read and checked anew."""
    store = write_full(tmp_path, make_features())
    opened = []
    original = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: opened.append(a[0]) or original(*a, **k))
    picks = np.array([0, 7, 12, 19, 3])
    first = store.rows("ckpt-1", picks)
    np.testing.assert_array_equal(store.rows("ckpt-1", picks[::-1]), first[::-1])
    assert len(opened) == len(set(opened)) == 4  # the shards of rows 0-4, 5-9, 10-14, 15-19
    np.testing.assert_allclose(first, make_features()[picks], rtol=1e-6)
    flipped = store.shard_path("ckpt-1", 10)
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0x10
    flipped.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=rf"{flipped.name}.*sha256 mismatch"):
        store.rows("ckpt-1", picks)


def test_missing_checksum_and_non_finite_rows_name_the_shard_and_examples(tmp_path):
    store = write_full(tmp_path, make_features())
    store.shard_path("ckpt-1", 0).with_suffix(".sha256").unlink()
    with pytest.raises(StoreCorruptError, match=r"shard-0000000000-0000000005.*checksum file"):
        store.features()

    store = write_full(tmp_path / "inf", make_features())
    path = store.shard_path("ckpt-1", 5)
    rows = np.load(path)
    rows[2, 1] = np.inf  # written around write_shard's checks, checksum made to match
    np.save(path, rows)
    from infscope.io import sha256_file

    path.with_suffix(".sha256").write_text(sha256_file(path) + "\n")
    with pytest.raises(StoreCorruptError, match=r"non-finite.*'ex7'"):
        FeatureStore.open(tmp_path / "inf").features()
    with pytest.raises(StoreCorruptError, match="ex7"):
        store.verify()


def test_loss_and_prediction_sidecars_are_checksummed(tmp_path):
    """A changed .losses / .predictions file is an error naming it, on read and in verify();
    a store written before sidecar checksums (no .sha256 beside them) still reads."""
    feats = make_features()
    losses, labels = np.linspace(0.1, 2.0, N), np.arange(N) % 3
    store = FeatureStore.create(tmp_path, make_ids(), make_spec())
    store.add_checkpoint("c", fingerprint="f")
    for start, stop in store.missing_shards("c"):
        store.write_shard("c", start, feats[start:stop], losses=losses[start:stop],
                          predictions=labels[start:stop])
    np.testing.assert_array_equal(store.losses("c"), losses)
    np.testing.assert_array_equal(store.predictions("c"), labels)
    target = store.shard_path("c", 5).with_suffix(".losses")
    assert target.with_name(target.name + ".sha256").exists()
    doctored = np.load(target)
    doctored[1] = 99.0  # a plausible value: only the checksum can tell
    np.save(target.with_suffix(".tmp.npy"), doctored)
    target.with_suffix(".tmp.npy").replace(target)
    with pytest.raises(StoreCorruptError, match=rf"{target.name}.*sha256 mismatch"):
        store.losses("c")
    with pytest.raises(StoreCorruptError, match=target.name):
        store.verify()
    np.testing.assert_array_equal(store.predictions("c"), labels)  # the other sidecar is sound

    for checksum in (tmp_path / "checkpoints" / "c").glob("*.losses.sha256"):
        checksum.unlink()  # as a store of an earlier version
    assert store.losses("c")[6] == 99.0


def test_learning_rate_added_later_without_re_extraction(tmp_path):
    store = FeatureStore.create(tmp_path, make_ids(), make_spec())
    store.add_checkpoint("a", fingerprint="f1")
    fill(store, "a", make_features())
    before = store_files(tmp_path / "checkpoints")
    assert store.set_learning_rate("a", 0.05) == CheckpointInfo("a", 0.05, "f1")
    assert FeatureStore.open(tmp_path).checkpoint("a").learning_rate == 0.05
    assert store_files(tmp_path / "checkpoints") == before  # shards untouched
    store.set_learning_rate("a", 0.05)  # the same rate again: nothing to refuse
    with pytest.raises(StoreMismatchError, match="replace"):
        store.set_learning_rate("a", 0.1)
    store.set_learning_rate("a", 0.1, replace=True)
    assert FeatureStore.open(tmp_path).checkpoint("a").learning_rate == 0.1
    with pytest.raises(StoreError, match="unknown checkpoint"):
        store.set_learning_rate("nope", 0.1)
    with pytest.raises(InputError, match="learning_rate"):
        store.set_learning_rate("a", float("nan"))


def test_checkpoints_with_the_same_weights_are_reported(tmp_path):
    store = FeatureStore.create(tmp_path, make_ids(), make_spec())
    for cid, fingerprint in (("a", "w1"), ("b", "w2"), ("c", "w1"), ("d", None), ("e", "w1")):
        store.add_checkpoint(cid, fingerprint=fingerprint)
    assert store.same_weights() == [["a", "c", "e"]]


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    edits=st.dictionaries(
        st.sampled_from(["format", "version", "spec", "n_examples", "checkpoints"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-2, 30),
            st.text(max_size=3),
            st.lists(
                st.dictionaries(
                    st.sampled_from(["id", "learning_rate", "fingerprint", "x"]),
                    st.one_of(st.text(max_size=3), st.floats(), st.none()),
                    max_size=3,
                ),
                max_size=2,
            ),
            st.dictionaries(
                st.sampled_from(
                    ["feature_dim", "dtype", "gradient", "shard_size", "modules", "bogus"]
                ),
                st.one_of(st.integers(-1, 9), st.text(max_size=3), st.none()),
                max_size=3,
            ),
        ),  # fmt: skip
        max_size=3,
    )
)
def test_any_store_metadata_opens_or_fails_cleanly(tmp_path_factory, edits):
    root = tmp_path_factory.mktemp("store")
    write_full(root, make_features())
    doc = json.loads((root / "store.json").read_text())
    (root / "store.json").write_text(json.dumps({**doc, **edits}))
    try:
        store = FeatureStore.open(root)
        for checkpoint in store.checkpoints:
            store.features(checkpoint.id)
    except StoreError:
        return


def test_random_access_returns_repeated_rows_in_the_order_asked(tmp_path):
    store = write_full(tmp_path, make_features())
    picks = np.array([19, 3, 3, 0, 12, 19, 7, 0])
    np.testing.assert_allclose(store.rows("ckpt-1", picks), make_features()[picks], rtol=1e-6)


def test_a_shard_deleted_after_the_store_was_found_complete_still_fails_its_read(tmp_path):
    """Random reads list the shard folder only until the store is found complete (at 10⁷ rows
    the listing cost 1.6 ms a read); a shard removed after that fails where it is read."""
    store = write_full(tmp_path, make_features())
    store.rows("ckpt-1", [0, 12])
    path = store.shard_path("ckpt-1", 15)
    path.unlink()
    np.testing.assert_allclose(store.rows("ckpt-1", [3]), make_features()[[3]], rtol=1e-6)
    with pytest.raises(StoreIncompleteError, match="missing"):
        store.rows("ckpt-1", [16])
    with pytest.raises(StoreIncompleteError, match="4 of 5 shards"):  # a fresh handle lists it
        FeatureStore.open(tmp_path).rows("ckpt-1", [3])


def mapped_files(root: Path) -> set[str]:
    """Files under ``root`` this process has memory-mapped now (Linux: /proc/self/maps)."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in lines if str(root.resolve()) in line}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_a_sequential_pass_leaves_no_shard_mapped_random_reads_keep_theirs(tmp_path):
    """Before: every shard a pass read stayed mapped (up to 4,096), so a pass over a store held
    all of it in the process's resident memory — 2.8 GB for a three-checkpoint EK-FAC fit whose
    one checkpoint needs 0.95 GB. Random reads (index re-scoring) keep theirs for the next."""
    root = tmp_path / "s"
    feats = make_features()
    write_full(root, feats)
    store = FeatureStore.open(root)
    blocks = [block for _, block in store.iter_blocks(block_size=4)]
    np.testing.assert_allclose(np.concatenate(blocks), feats.astype(np.float32))
    assert mapped_files(root) == set()
    store.rows("ckpt-1", [0, 7, 8])
    assert len(mapped_files(root)) == 2  # shards [0, 5) and [5, 10)
    for _ in store.iter_blocks(block_size=4):  # a pass also drops the maps reads kept
        pass
    assert mapped_files(root) == set()
