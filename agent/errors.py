"""Errors of the agent.

    AgentError                   exit 1; the message is for a person
    ├── ConfigError              exit 2; bad flag, config file or state dir
    │   └── NotEnrolled          the state dir holds no enrollment
    ├── TransientError           exit 3; worth retrying later
    │   └── ControllerUnavailable   network down, controller stopped, timeout
    ├── Refused                  exit 4; the controller refused us (token, revoked)
    ├── Rejected                 exit 4; the controller called a request invalid
    └── CommandFailed            a subprocess failed; carries argv, code, output

gRPC errors are translated in `client` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    exit_code = 1


class ConfigError(AgentError):
    exit_code = 2


class NotEnrolled(ConfigError):
    pass


class TransientError(AgentError):
    exit_code = 3


class ControllerUnavailable(TransientError):
    pass


class Refused(AgentError):
    exit_code = 4


class Rejected(AgentError):
    """The controller answered that the request itself is invalid
    (INVALID_ARGUMENT): sending it again cannot help."""

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
