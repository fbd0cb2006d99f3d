"""A scratch directory in RAM, for stores a test fills with many small
commits and whose durability it does not test.

SQLite in WAL mode fsyncs the log and the database at every checkpoint;
on this project's CI disk that is most of the time of a test that drives
the engine through a week of check-ins. On a tmpfs every fsync returns at
once and nothing else changes: the same SQLite, the same pragmas, the
same transactions. Where there is no tmpfs with room to spare, the
directory is made under the fallback (the test's tmp_path) instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RAM = Path("/dev/shm")
#: Free space the tmpfs must have to be used (a week of 120 hosts' check-ins
#: is a few MB).
ROOM = 256 * 1024 * 1024


def _ram_usable() -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        fs = os.statvfs(RAM)
    except OSError:
        return False
    on_tmpfs = any(m.split()[1:3] == [str(RAM), "tmpfs"] for m in mounts)
    return on_tmpfs and os.access(RAM, os.W_OK) and fs.f_bavail * fs.f_frsize >= ROOM


@contextmanager
def ram_dir(fallback: Path) -> Iterator[Path]:
    """A new empty directory, on /dev/shm when it is usable, else under
    ``fallback``; removed afterwards (the fallback's is left to pytest)."""
    if not _ram_usable():
        fallback.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix="ram-", dir=fallback))
        return
    made = Path(tempfile.mkdtemp(prefix="fleetpatch-test-", dir=RAM))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)
