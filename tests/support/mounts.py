"""Read-only and full filesystems for tests, as root: a read-only bind
mount of a directory, and a small tmpfs filled to the last byte.

Both are mounted in the test's own mount namespace and unmounted when the
context ends. Where mounting is not possible (not root, no CAP_SYS_ADMIN),
the test skips with the reason: chmod cannot make a directory read-only
for root, so there is nothing else to test with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*argv: str) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(argv)}): {done.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30, check=True)


def _require_root() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only or full filesystem needs root and mount(8)")


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory``, read-only (a read-only bind mount over itself)."""
    _require_root()
    _mount("--bind", str(directory), str(directory))
    try:
        _mount("-o", "remount,ro,bind", str(directory))
        yield directory
    finally:
        _umount(directory)


@contextmanager
def full_copy(source: Path, where: Path, size: str = "2m") -> Iterator[Path]:
    """A copy of the directory ``source`` on a tmpfs of ``size`` mounted at
    ``where``, the rest of it filled: every write that needs a new block
    fails with ENOSPC."""
    _require_root()
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    try:
        copy = where / source.name
        shutil.copytree(source, copy, symlinks=True)
        fill(where / "filler")
        yield copy
    finally:
        _umount(where)


def fill(path: Path) -> None:
    """Grow ``path`` until its filesystem has no block left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
