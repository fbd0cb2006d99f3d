"""Files written so that a crash leaves either the old or the new content."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from fleetpatch.regularfile import kind


def write_atomic(
    path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the dir.

    The file is created with ``mode`` from the start (a private key is never
    readable by others, not even for an instant). ``path`` (a symlink
    followed) must be absent or a regular file: a device, a FIFO or a
    socket is never renamed over (``--out /dev/full`` as root would have
    left a file where the device was); OSError (EINVAL) instead.
    """
    try:
        found = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        found = stat.S_IFREG
    if not stat.S_ISREG(found) and not stat.S_ISDIR(found):  # a directory: rename says so
        raise OSError(
            errno.EINVAL, f"it is {kind(found)}, not a regular file: not replaced", str(path)
        )
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # named for the file meant, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, mode)
        if owner is not None:  # (uid, gid), before the file takes its name
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
