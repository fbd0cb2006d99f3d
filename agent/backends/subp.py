"""Every subprocess the agent runs goes through `run`: an argv list (never a
shell), stdin closed, an explicit minimal environment, a timeout, and one
exception type on failure carrying what a person needs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import CommandFailed

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
    cwd: str | None = None,
) -> Result:
    """Run ``argv`` and return its result.

    Raises CommandFailed when the command is missing, times out, or (with
    ``check``) exits non-zero.
    """
    args = [str(a) for a in argv]
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env={**BASE_ENV, **(env or {})},
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    except FileNotFoundError:
        if cwd is not None and not os.path.isdir(cwd):
            raise CommandFailed(
                args, None, "", "", reason=f"cannot run in {cwd}: no such directory"
            ) from None
        raise CommandFailed(args, None, "", "", reason="is not installed") from None
    except OSError as exc:
        raise CommandFailed(args, None, "", "", reason=f"cannot be run: {exc.strerror}") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            args,
            None,
            _text(exc.stdout),
            _text(exc.stderr),
            reason=f"timed out after {timeout:.0f}s",
        ) from None
    result = Result(args, done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        raise CommandFailed(args, done.returncode, done.stdout, done.stderr)
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
