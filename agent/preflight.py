"""The daemon's start-up check of its state dir, made in a child process.

Before it uses anything of its state dir, the agent checks all of it
(`service.check_state`): the settings, the pinned signing keys, and the key,
certificate and CA against each other, which takes the cryptography package.
The daemon must not load cryptography just for that: it would keep the
library's 10 MiB for as long as it runs (issue 18: at most 40 MiB idle),
and an idle daemon needs none of it (fleetpatch.certfields reads the
certificate's dates and the CAs' digest). So `fleetpatch-agent run` makes
the very same check in a short-lived child (`python -P -m agent.preflight
STATE_DIR [SETTINGS]`), which prints what it checked as JSON: the CA, key
and certificate, and the host id. The daemon goes on with exactly those
bytes, or raises the child's error as its own: same class, same message,
same exit code. Anything else (a bug: the child's traceback is on stderr)
stops the daemon with an error saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent import errors
from agent.errors import AgentError
from agent.statedir import AgentConfig, Credentials, StateDir

#: A check reads a few small files: minutes means a stuck disk.
TIMEOUT_SECONDS = 300.0


def check_state(state: StateDir) -> tuple[AgentConfig, Credentials]:
    """Everything of an enrolled state dir outside the journal, checked
    before any of it is used: settings, key and certificates, the pinned
    signing keys. Raises ConfigError (NotEnrolled, StateDirError) naming
    the file and what to do."""
    state.require_enrolled()
    config = state.config()
    credentials = state.credentials()
    state.trusted_signing_keys()
    state.key_status()
    return config, credentials


@dataclass(frozen=True)
class Checked:
    """A state dir checked (`check_state`), and the host it enrolled."""

    config: AgentConfig
    credentials: Credentials
    host_id: str


def in_process(state: StateDir) -> Checked:
    """`check_state` here, loading cryptography (the one-shot commands)."""
    config, credentials = check_state(state)
    return Checked(config, credentials, state.host_id())


def in_child(state: StateDir) -> Checked:
    """`check_state` in a child process (see the module); the settings are
    read again here (no cryptography in that), the credentials are the
    bytes the child checked. Raises the child's AgentError."""
    answer = _ask_child(state)
    credentials = Credentials(
        answer["ca_pem"].encode(), answer["key_pem"].encode(), answer["cert_pem"].encode()
    )
    return Checked(state.config(), credentials, answer["host_id"])


def _answer(state: StateDir) -> dict[str, str]:
    """What the child prints: the checked credentials and the host id, or
    the error's class, message and exit code."""
    try:
        checked = in_process(state)
    except AgentError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "exit_code": str(exc.exit_code)}
    return {
        "host_id": checked.host_id,
        "ca_pem": checked.credentials.ca_pem.decode("ascii"),
        "key_pem": checked.credentials.key_pem.decode("ascii"),
        "cert_pem": checked.credentials.cert_pem.decode("ascii"),
    }


def _ask_child(state: StateDir) -> dict[str, str]:
    argv = [sys.executable, "-P", "-m", "agent.preflight", str(state.path)]
    if state.settings is not None:
        argv.append(str(state.settings))
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"cannot check the state dir {state.path}: {exc}") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if done.returncode != 0 or not isinstance(answer, dict):
        raise AgentError(
            f"checking the state dir {state.path} failed (exit {done.returncode}; "
            "its error is above)"
        )
    if "error" in answer:
        raise _error(answer)
    return {str(k): str(v) for k, v in answer.items()}


def _error(answer: dict[str, str]) -> AgentError:
    """The child's error as the daemon's own: the same class where it is one
    of agent.errors taking a message alone, else an AgentError with the
    same exit code."""
    cls = getattr(errors, answer["error"], None)
    message = answer["message"]
    if isinstance(cls, type) and issubclass(cls, errors.ConfigError):
        return cls(message)
    error = AgentError(message)
    error.exit_code = int(answer.get("exit_code", AgentError.exit_code))
    return error


def main(argv: list[str]) -> int:
    state = StateDir(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None)
    json.dump(_answer(state), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
