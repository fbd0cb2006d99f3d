"""Rebooting the host, telling afterwards that it happened, and keeping
anyone from rebooting it in the middle of a package transaction.

- `FileValue(BOOT_ID_FILE)`: this boot's id (/proc/sys/kernel/random/boot_id by default;
  agent.toml [agent] boot_id_file points elsewhere for tests and the
  simulator). A different id after a restart means the host rebooted.
- `CommandRebooter`: asks for the reboot (`systemctl reboot` by default,
  agent.toml [agent] reboot_command), then waits for the shutdown to end
  the agent. If the host is still up after the timeout, the reboot did not
  happen and the caller says so.
- `Inhibitor`: wraps the package manager's mutating commands in
  `systemd-inhibit --what=shutdown:sleep --mode=block`, so that logind
  holds a shutdown (a person's, or another tool's) until the transaction
  is over. Without systemd-inhibit or logind it runs them as they are, and
  logs that once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from agent.backends import subp
from agent.errors import CommandFailed

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
KERNEL_RELEASE_FILE = Path("/proc/sys/kernel/osrelease")
DEFAULT_REBOOT_COMMAND = ("systemctl", "reboot")


class FileValue:
    """The stripped text of a file, read at each call ("" if unreadable):
    the boot id, the running kernel's release."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            log.warning("cannot read %s", self.path)
            return ""


class Rebooter(Protocol):
    def reboot(self) -> None:
        """Ask the host to reboot. Raises CommandFailed when it refuses."""

    def wait(self, timeout: timedelta) -> None:
        """Wait for the reboot to end this process; returns after
        ``timeout`` if it has not (the reboot did not happen)."""


class CommandRebooter:
    def __init__(
        self,
        argv: Sequence[str] = DEFAULT_REBOOT_COMMAND,
        run: Runner = subp.run,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not argv:
            raise ValueError("the reboot command is empty")
        self._argv = list(argv)
        self._run = run
        self._sleep = sleep

    def reboot(self) -> None:
        log.warning("asking for a reboot: %s", " ".join(self._argv))
        self._run(self._argv, timeout=120)

    def wait(self, timeout: timedelta) -> None:
        # The shutdown will SIGTERM us. The journal already says REBOOT, so
        # dying at once is the plan; a handler that lets the current step
        # finish (the daemon's) would only hold the shutdown up.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        deadline = time.monotonic() + timeout.total_seconds()
        while (left := deadline - time.monotonic()) > 0:
            self._sleep(min(left, 1.0))


_MUTATING = {
    "apt-get": ("install", "remove", "purge", "upgrade", "dist-upgrade", "full-upgrade"),
    "dpkg": ("--configure", "-i", "--install", "-r", "--remove", "-P", "--purge"),
    "dnf": ("install", "upgrade", "remove", "downgrade", "undo", "update", "distro-sync"),
}


def mutating(argv: Sequence[str]) -> bool:
    """Whether ``argv`` changes installed packages (simulations do not)."""
    verbs = _MUTATING.get(Path(str(argv[0])).name) if argv else None
    if not verbs or "-s" in argv or "--simulate" in argv or "--assumeno" in argv:
        return False
    return any(a in verbs for a in argv[1:])


class Inhibitor:
    """A subp-compatible runner that holds a logind shutdown inhibitor lock
    around every mutating package-manager command."""

    def __init__(
        self,
        run: Runner = subp.run,
        why: str = "installing updates",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._run = run
        self._why = why
        self._env = env
        self._usable: bool | None = None

    def usable(self) -> bool:
        """Whether systemd-inhibit is installed and logind answers (asked once)."""
        if self._usable is None:
            try:
                done = self._run(["systemd-inhibit", "--list"], env=self._env, check=False,
                                 timeout=30)  # fmt: skip
                self._usable = done.returncode == 0
                why = done.stderr.strip() or f"exit {done.returncode}"
            except CommandFailed as exc:
                self._usable, why = False, str(exc)
            if not self._usable:
                log.warning(
                    "no shutdown inhibitor lock around package transactions (%s): "
                    "a reboot by someone else could interrupt one", why,
                )  # fmt: skip
        return self._usable

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> subp.Result:
        if mutating(argv) and self.usable():
            if self._env:
                kwargs["env"] = {**(kwargs.get("env") or {}), **self._env}
            argv = [
                "systemd-inhibit", "--what=shutdown:sleep", "--who=fleetpatch",
                f"--why={self._why}", "--mode=block", *argv,
            ]  # fmt: skip
        return self._run(argv, **kwargs)
