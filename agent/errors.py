"""Errors of the agent.

    AgentError                   exit 1; the message is for a person
    ├── ConfigError              exit 2; bad flag, config file or state dir
    │   ├── NotEnrolled          the state dir holds no enrollment
    │   ├── StateDirError        a state file is damaged, missing, or cannot
    │   │                        be written (read-only, full, permissions)
    │   └── TrustError           exit 7; the controller's certificate does not
    │                            verify against --ca-cert (a wrong file, or not
    │                            the controller): configuration, never retried
    ├── TransientError           exit 3; worth retrying later
    │   ├── ControllerUnavailable   network down, controller stopped, timeout
    │   ├── Overloaded           the controller asked us to come back later
    │   ├── TooLarge             exit 4; a request or answer passed gRPC's size
    │   │                        limit on one side (RESOURCE_EXHAUSTED, but not
    │   │                        overload): a person must look; the service
    │   │                        keeps trying, with back-off, in case the
    │   │                        controller is mended
    │   └── (plain)              the controller cut a call off (CANCELLED, INTERNAL, ...)
    ├── Refused                  exit 4; the controller refused us (token, revoked)
    ├── Rejected                 exit 4; the controller called a request invalid
    └── CommandFailed            a subprocess failed; carries argv, code, output

gRPC errors are translated in `client` and nowhere else.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

# The agent CLI's exit codes, as every command's --help ends with them.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "error"),
    (2, "bad usage, settings or state dir, or not run as root: a person must act"),
    (3, "the controller cannot be reached or is overloaded: retry later"),
    (
        4,
        "refused by the controller (bad token, host revoked), or a message larger than "
        "the controller or this agent accepts (do not retry)",
    ),
    (
        7,
        "TLS trust fails: the controller's certificate does not verify against "
        "--ca-cert (configuration: do not retry)",
    ),
)


class AgentError(Exception):
    exit_code = 1


class ConfigError(AgentError):
    exit_code = 2


class NotEnrolled(ConfigError):
    pass


#: What a StateDirError about a damaged state file (the journal's too) says to do.
RESTORE = "restore it from a backup, or enroll this host again into an empty state dir"


class StateDirError(ConfigError):
    """A file of the state dir cannot be used; the message names it and
    says what to do. Restarting the agent cannot help (exit 2)."""


class TrustError(ConfigError):
    """TLS trust fails: a configuration error with an exit code of its own
    (the admin CLI's TrustFailure has the same), so automation tells it
    from an outage (3) and from a bad flag (2)."""

    exit_code = 7


class TransientError(AgentError):
    exit_code = 3


class ControllerUnavailable(TransientError):
    """The controller cannot be reached, or it cannot reach its database
    (UNAVAILABLE). ``retry_after``: the seconds it asked us to wait at
    least, when it answered at all and said; None otherwise."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(TransientError):
    """The controller is overloaded (RESOURCE_EXHAUSTED). ``retry_after``:
    the seconds it asked us to wait at least, None when it did not say."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(AgentError):
    exit_code = 4


class Rejected(AgentError):
    """The controller answered that the request itself is invalid
    (INVALID_ARGUMENT): sending it again cannot help."""

    exit_code = 4


class TooLarge(TransientError):
    """A message larger than gRPC's size limit of the side that refused it:
    this agent's request (the controller's limit) or the controller's
    answer (this agent's). Not overload, though gRPC says
    RESOURCE_EXHAUSTED. A command run by hand exits 4 (asking again at once
    cannot help); the service treats it as trouble to retry with back-off,
    never as a reason to stop: a controller bug that sent every host an
    answer too large must not leave a fleet of stopped agents once it is
    mended."""

    exit_code = 4


class CommandFailed(AgentError):
    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        reason: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        what = reason or f"exited with {returncode}"
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"{self.argv[0]} {what}" + (f": {tail}" if tail else ""))


# What a person does about a state dir that cannot be written, by errno.
_ADVICE = {
    errno.EROFS: "the state dir is on a read-only filesystem: remount it read-write",
    errno.ENOSPC: "no space left on the state dir's filesystem: free some space",
    errno.EDQUOT: "the disk quota of the state dir's filesystem is used up: free some space",
    errno.EACCES: "permission denied: run as root, and check the state dir's owner and modes",
    errno.EPERM: "not permitted: run as root, and check the file's attributes (lsattr)",
    errno.EIO: "input/output error: check the disk (dmesg)",
}
# SQLite says the same in words.
_SQLITE_ERRNO = {
    "readonly database": errno.EROFS,
    "database or disk is full": errno.ENOSPC,
    "disk i/o error": errno.EIO,
    "unable to open database file": errno.EACCES,
}
STORAGE_ERRNOS = frozenset(_ADVICE)


def storage_error(path: Path, exc: OSError | sqlite3.Error) -> StateDirError | None:
    """The one-line error for a state file that cannot be read or written
    because of where it lives (read-only, full, permissions, I/O), naming
    the file and what to do; None when ``exc`` is something else."""
    if isinstance(exc, OSError):
        code = exc.errno
    else:
        text = str(exc).lower()
        code = next((c for words, c in _SQLITE_ERRNO.items() if words in text), None)
    if code in (errno.EACCES, errno.EIO, errno.ENOSPC, errno.EROFS):
        # SQLite says "unable to open" or "disk I/O error" for a read-only
        # or full filesystem alike: ask the filesystem which it is.
        code = _filesystem_errno(path.parent) or code
    advice = _ADVICE.get(code) if code is not None else None
    if advice is None:
        return None
    verb = "write" if code in (errno.EROFS, errno.ENOSPC, errno.EDQUOT) else "use"
    return StateDirError(f"cannot {verb} {path}: {advice}")


LOW_SPACE = 1 << 20  # bytes; less than this free is a full disk to SQLite


def _filesystem_errno(directory: Path) -> int | None:
    """EROFS when ``directory`` is on a read-only mount, ENOSPC when its
    filesystem is (nearly) full for us, else None."""
    try:
        fs = os.statvfs(directory)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    blocks = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use reserved blocks
    if blocks * fs.f_frsize < LOW_SPACE:
        return errno.ENOSPC
    return None
