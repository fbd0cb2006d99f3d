"""Reading a file that must be a regular file, without ever blocking.

A settings or state file replaced by a FIFO would hang whoever reads it
(`open` waits for a writer, `read` for data); one replaced by a directory,
a device or a socket reads as an error or as nothing, and a caller that
asked `Path.is_file()` first takes it for a file that is missing. Here a
path is looked at once, following symlinks (a settings file linked from
elsewhere is fine; one linked to /dev/null is not a file of settings):
missing (FileNotFoundError), a regular file (read), or anything else
(`NotRegularFile`, saying what it is). The file is opened O_NONBLOCK and
judged again by `fstat` on the open descriptor, so a path swapped between
the look and the open is refused too, never waited on.

Callers say what the file is and what to do about it; this module knows
only paths.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, for a message: "a directory"."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class NotRegularFile(Exception):
    """A path that exists and is not a regular file; ``kind`` says what it is."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is not a regular file (it is {kind})")
        self.path = path
        self.kind = kind


def exists(path: Path) -> bool:
    """True when ``path`` is a regular file, False when nothing is there (a
    dangling symlink included). Raises NotRegularFile when something else
    is, OSError when it cannot be looked at (permissions)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False  # a parent is a file: nothing can be there
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, kind(mode))
    return True


def read(path: Path) -> bytes:
    """The bytes of the regular file ``path``. Raises NotRegularFile when it
    is anything else (never blocking on a FIFO), FileNotFoundError when it
    is missing, another OSError when it cannot be read."""
    # Looked at before it is opened: opening a device may do something.
    if not exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a FIFO's odd cousins) put there since
            raise NotRegularFile(path, kind(os.stat(path).st_mode)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, kind(mode))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    """`read`, decoded as UTF-8; UnicodeDecodeError when it is not."""
    return read(path).decode()
