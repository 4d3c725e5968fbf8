"""Two CPU processes under torchrun (gloo) write a store byte-identical to one process's, fit
the same eigenbasis and K-FAC factors (sums over ranks, equal up to addition order), and a run
in which one rank's shards are missing resumes to the same store."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from infscope.curvature import KroneckerBasis
from tests.cli.conftest import features_args, invoke, write_jsonl


def _torchrun(cwd, *args) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "infscope.cli.main",
        *map(str, args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _shards(root):
    files = sorted(p for p in (root / "checkpoints").rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture
def data(project, monkeypatch):
    monkeypatch.chdir(project)  # relative paths, as a user types them
    rng = np.random.default_rng(1)
    records = [
        {"id": f"t{i}", "x": rng.standard_normal(4).round(3).tolist(), "label": i % 3}
        for i in range(37)
    ]
    write_jsonl(project / "big.jsonl", records)
    return project


def test_two_ranks_equal_one_process(runner, data):
    eigen = ("--projection", "eigen", "--dim", "0")
    one = features_args("big.jsonl", "one", *eigen, "--basis", "one.safetensors")
    result = invoke(runner, *one)
    assert result.exit_code == 0, result.output
    two = features_args("big.jsonl", "two", *eigen, "--basis", "two.safetensors")
    _torchrun(data, *two)
    assert _shards(data / "two") == _shards(data / "one")
    a, b = (KroneckerBasis.load(data / f"{n}.safetensors") for n in ("one", "two"))
    for x, y in zip(a.modules, b.modules):
        assert x.tokens == y.tokens and x.trace == pytest.approx(y.trace, rel=1e-12)
        if x.kronecker:  # compared as matrices: eigenvector signs may differ
            for values, vectors in (("s_values", "s_vectors"), ("a_values", "a_vectors")):
                left = (getattr(x, vectors) * getattr(x, values)) @ getattr(x, vectors).T
                right = (getattr(y, vectors) * getattr(y, values)) @ getattr(y, vectors).T
                np.testing.assert_allclose(left, right, rtol=1e-9, atol=1e-12)


def test_a_lost_rank_resumes_with_factors_from_both(runner, data):
    kronecker = ("--projection", "kronecker", "--dim", "16")
    one = features_args("big.jsonl", "one", *kronecker, "--fit-factors", "one.safetensors")
    assert invoke(runner, *one).exit_code == 0
    # rank 0 of 2 finished, rank 1 died before writing anything
    half = features_args("big.jsonl", "two", *kronecker, "--worker", "0", "--num-workers", "2")
    assert invoke(runner, *half).exit_code == 0
    _torchrun(
        data, *features_args("big.jsonl", "two", *kronecker, "--fit-factors", "two.safetensors")
    )
    assert _shards(data / "two") == _shards(data / "one")
    a, b = load_file(data / "one.safetensors"), load_file(data / "two.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-9, atol=1e-12, err_msg=name)
