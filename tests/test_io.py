"""check_writable: an output path that cannot be written is found before any work, and nothing
is left behind by the check."""

from __future__ import annotations

import os

import pytest

from infscope.errors import InputError
from infscope.io import check_writable


def test_a_new_folder_or_file_below_a_writable_folder_passes_and_nothing_is_created(tmp_path):
    check_writable(tmp_path / "runs" / "deep" / "out", directory=True)
    check_writable(tmp_path / "runs" / "top.csv", directory=False)
    check_writable(tmp_path, directory=True)
    assert list(tmp_path.iterdir()) == []  # no folder made, no probe left


def test_a_path_below_a_file_is_an_error_naming_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="a-file is a file, not a folder"):
        check_writable(blocker / "sub" / "out", directory=True)


def test_an_existing_file_where_a_folder_is_wanted_and_the_reverse(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="--out .*f is a file; it must be a folder"):
        check_writable(tmp_path / "f", directory=True)
    with pytest.raises(InputError, match="--json .* is a folder; it must be a file"):
        check_writable(tmp_path, directory=False, option="--json")
    check_writable(tmp_path / "f", directory=False)  # an existing file is replaced: fine


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_an_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot be written"):
            check_writable(locked / "out", directory=True)
    finally:
        locked.chmod(0o700)


def test_a_failing_probe_is_an_error_naming_the_folder_and_reason(tmp_path, monkeypatch):
    """A read-only file system (or a full disk) fails the probe file, for root too."""

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("infscope.io.tempfile.mkstemp", refuse)
    with pytest.raises(InputError, match=r"out cannot be written: .*: Read-only file system"):
        check_writable(tmp_path / "out", directory=True)
