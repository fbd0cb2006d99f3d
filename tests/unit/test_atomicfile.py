"""fleetpatch.atomicfile.write_atomic: the old content or the new, and
never a device, a FIFO or a socket renamed over."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from fleetpatch.atomicfile import write_atomic


def test_a_file_is_replaced_with_its_mode_and_nothing_left_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    write_atomic(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_what_is_not_a_regular_file_is_not_renamed_over(tmp_path: Path) -> None:
    """As root, `--out /dev/full` left a regular file where the device was."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    device_link = tmp_path / "null"
    device_link.symlink_to("/dev/null")  # followed: a character device
    for path, kind in ((fifo, "a FIFO"), (device_link, "a character device")):
        with pytest.raises(OSError, match="not a regular file: not replaced") as refused:
            write_atomic(path, b"data")
        assert refused.value.errno == errno.EINVAL
        assert refused.value.strerror == f"it is {kind}, not a regular file: not replaced"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert device_link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]  # no temp file


def test_a_link_to_a_file_or_to_nothing_is_replaced_as_before(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("kept")
    for name, to in (("link", "target"), ("dangling", "nowhere")):
        (tmp_path / name).symlink_to(tmp_path / to)
        write_atomic(tmp_path / name, b"new")
        assert not (tmp_path / name).is_symlink()
        assert (tmp_path / name).read_bytes() == b"new"
    assert (tmp_path / "target").read_text() == "kept"


def test_a_directory_that_takes_no_file_is_named_by_the_file_meant(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "server.key"
    with pytest.raises(FileNotFoundError) as refused:
        write_atomic(missing, b"key")
    assert refused.value.filename == str(missing)
