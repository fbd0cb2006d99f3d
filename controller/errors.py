"""Errors of the controller and the admin CLI.

    FleetpatchError                 exit 1; the message is for a person
    ├── UsageError                  exit 2; bad input on the command line or in a file
    │   └── DataDirError            the data dir is missing, not initialised, or unreadable
    ├── ControllerUnavailable       exit 3; transient: the controller cannot be reached
    │   ├── Overloaded              the controller sheds load: retry after a delay
    │   └── StoreUnavailable        its database cannot be reached: retry after a delay
    ├── Refused                     exit 4; authentication or permission refused
    │   └── TokenRefused            an enrollment token that is unknown, expired, used up, revoked
    ├── NotFound                    exit 5; no such host, token, campaign
    ├── Conflict                    exit 6; the request contradicts the current state
    │   └── AlreadyExists           something of that name exists and differs (gRPC ALREADY_EXISTS)
    └── TrustFailure                exit 7; TLS trust fails: the server's certificate does not
                                    verify against our CA, or it refuses ours (configuration:
                                    retrying cannot help)

Lower-layer errors (grpc.RpcError, sqlite3.Error, OSError) are translated at
exactly one boundary each: `admin_client` for the CLI, `servicers` for RPCs;
psycopg's connection errors in controller/store/postgres.py.
"""

from __future__ import annotations

# The admin CLI's exit codes, as every command's --help ends with them and
# the README's table lists them. A verb asked for a state that already holds
# succeeds (pausing a paused campaign, revoking a revoked host or token); a
# verb that cannot reach its state from the current one is a conflict (6).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success, also when what was asked already holds (pausing a paused campaign)"),
    (1, "error"),
    (2, "bad usage or input (an option, a campaign file, the data dir)"),
    (3, "the controller cannot be reached or is busy: retry later"),
    (4, "refused: authentication or permission"),
    (5, "not found: no such host, token, campaign or release"),
    (6, "conflicts with the current state (resuming a completed campaign)"),
    (
        7,
        "TLS trust fails: wrong CA, or a certificate the controller refuses "
        "(configuration: do not retry)",
    ),
)


class FleetpatchError(Exception):
    exit_code = 1


class UsageError(FleetpatchError):
    exit_code = 2


class DataDirError(UsageError):
    pass


class ControllerUnavailable(FleetpatchError):
    exit_code = 3


class Overloaded(ControllerUnavailable):
    """Too much at once, from one peer or from all (gRPC RESOURCE_EXHAUSTED);
    ``retry_after``: seconds the caller should wait before trying again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(ControllerUnavailable):
    """The controller's database cannot be reached (PostgreSQL down, failing
    over, unreachable): gRPC UNAVAILABLE with ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(FleetpatchError):
    exit_code = 4


class TokenRefused(Refused):
    pass


class NotFound(FleetpatchError):
    exit_code = 5


class Conflict(FleetpatchError):
    exit_code = 6


class AlreadyExists(Conflict):
    pass


class TrustFailure(FleetpatchError):
    """A configuration error, not an outage: the controller at the address
    is not the one our CA vouches for, or it does not accept our
    certificate. Its own exit code, so that automation stops retrying."""

    exit_code = 7
