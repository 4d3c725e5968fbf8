"""A store's projection and task, as readable lines."""

from __future__ import annotations

from infscope.store.summary import SHOWN_MODULES, projection_lines, task_line


def _blocks(n):
    return [{"module": f"layer.{i}", "shape": [4, 2], "kronecker": True} for i in range(n)]


def test_kronecker_names_kind_width_asked_dim_seed_and_modules():
    projection = {
        "kind": "kronecker", "dim": 16, "feature_dim": 14, "seed": 3, "sjlt_nonzeros": 1,
        "factor_dims": None, "basis": None, "cache_bytes": 1, "chunk_elements": 2,
        "blocks": _blocks(2),
    }  # fmt: skip
    assert projection_lines(projection) == [
        "projection: kronecker, 14 features (dim 16 asked), seed 3",
        "modules (rows x cols): layer.0 4x2, layer.1 4x2",
    ]


def test_identity_sjlt_and_eigen_read_as_what_they_are():
    assert projection_lines({"kind": "identity", "dim": None, "feature_dim": 67}) == [
        "projection: identity, 67 features (exact gradients)"
    ]
    sjlt = {"kind": "sjlt", "dim": 4096, "feature_dim": 4096, "seed": 0, "sjlt_nonzeros": 4}
    assert projection_lines(sjlt) == [
        "projection: sjlt, 4,096 features, seed 0, 4 nonzero(s) per coordinate"
    ]
    eigen = {"kind": "eigen", "dim": 64, "feature_dim": 64, "seed": 0, "fisher": "empirical",
             "basis": ["abc", "def"], "ranks": [[[2, 2]], [[2, 2]]]}  # fmt: skip
    lines = projection_lines(eigen)
    assert (
        lines[0]
        == "projection: eigen on 2 bases, one per checkpoint, empirical Fisher, 64 features, seed 0"
    )
    assert "own rank layout" in lines[1]


def test_many_modules_are_counted_not_listed():
    lines = projection_lines(
        {"kind": "kronecker", "dim": 8, "feature_dim": 8, "blocks": _blocks(20)}
    )
    assert lines[1].endswith(f"… {20 - SHOWN_MODULES} more")


def test_task_line():
    assert (
        task_line({"task": "RecordTask", "measurement": "loss"})
        == "task: RecordTask, measurement loss"
    )
    line = task_line({"task": "HF", "text_fields": ["premise", "hypothesis"], "max_length": 128})
    assert line == "task: HF, text_fields premise, hypothesis, max_length 128"
