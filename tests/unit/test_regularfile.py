"""fleetpatch.regularfile: a settings or state file is read only when it is
a regular file, and a FIFO in its place never blocks the reader."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fleetpatch import regularfile


def test_a_regular_file_reads_through_a_symlink_too(tmp_path):
    target = tmp_path / "settings.toml"
    target.write_bytes(b"[agent]\n" * 20_000)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert regularfile.read(target) == b"[agent]\n" * 20_000
    assert regularfile.read_text(link) == "[agent]\n" * 20_000
    assert regularfile.exists(link)


@pytest.mark.parametrize("name", ["missing", "dangling", "under-a-file/x"])
def test_nothing_there_is_missing(tmp_path, name):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "under-a-file").write_text("")
    assert not regularfile.exists(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        regularfile.read(tmp_path / name)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _dev_null(path: Path) -> None:
    path.symlink_to("/dev/null")


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_fifo, "a FIFO"),
        (_directory, "a directory"),
        (_dev_null, "a character device"),
        (_socket, "a socket"),
    ],
)
def test_anything_else_is_refused_saying_what_it_is_without_blocking(tmp_path, make, kind):
    path = tmp_path / "agent.toml"
    make(path)
    for look in (regularfile.exists, regularfile.read, regularfile.read_text):
        with pytest.raises(regularfile.NotRegularFile) as refused:
            look(path)
        assert str(refused.value) == f"{path} is not a regular file (it is {kind})"
        assert refused.value.kind == kind
        assert refused.value.path == path


@pytest.mark.timeout(20)
def test_a_fifo_put_there_after_the_look_is_refused_too(tmp_path, monkeypatch):
    """The open descriptor is judged again: a path swapped between the look
    and the open is refused, never waited on."""
    path = tmp_path / "agent.toml"
    path.write_text("")
    looked = regularfile.exists

    def then_swap(p: Path) -> bool:
        found = looked(p)
        p.unlink()
        os.mkfifo(p)
        return found

    monkeypatch.setattr(regularfile, "exists", then_swap)
    with pytest.raises(regularfile.NotRegularFile, match=r"it is a FIFO"):
        regularfile.read(path)


def test_an_unreadable_file_is_an_os_error(tmp_path):
    """Run as a user the file is not readable for: as root (CI), the check
    runs in a child as nobody, since root reads anything."""
    tmp_path.chmod(0o755)
    path = tmp_path / "key.pem"
    path.write_text("secret")
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):
            regularfile.read(path)
        return
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to read as nobody")
    probe = (
        "import sys; from pathlib import Path; from fleetpatch import regularfile\n"
        "try:\n    regularfile.read(Path(sys.argv[1]))\n"
        "except PermissionError:\n    sys.exit(0)\nsys.exit(1)\n"
    )
    proto = Path(regularfile.__file__).resolve().parents[1]
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-c", probe, str(path)],
        env={"PYTHONPATH": str(proto)}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
