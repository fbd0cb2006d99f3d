"""Which processes still run code an update replaced, and the systemd units
they belong to.

dpkg and rpm replace a file by renaming the new one over it: a process
that mapped the old binary or library keeps the old inode, and the kernel
marks that mapping in /proc/PID/maps (and the link /proc/PID/exe) with
" (deleted)". Such a service passes its health checks on the old code: the
fix is installed but not running. `Services.stale` finds those processes
for the files of the packages an order changed, and the unit each one runs
in (from /proc/PID/cgroup); the host's own tool adds what it knows
(`needrestart -b` on Debian, `dnf needs-restarting -s` on RPM hosts), which
also covers interpreters whose scripts changed.

Only the "(deleted)" mark is trusted, not an inode compared with the file
now on disk: on overlayfs (containers, overlayroot edge images) the inode
in maps is the underlying layer's, which need not be the one stat() shows.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.backends import subp
from agent.errors import CommandFailed
from agent.host.needs import needrestart_lines

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]
DELETED = " (deleted)"
MANAGER = "init.scope"  # PID 1's unit: restarted by re-executing it
# A unit name as systemd writes it in a cgroup path (escaped, so no "/").
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|scope)$")


@dataclass(frozen=True)
class Stale:
    """A process that runs code an update replaced."""

    pid: int  # 0: a unit the host's own tool named, without a process
    command: str
    unit: str  # the service it runs in; "" outside any service
    scope: str = ""  # the scope (session, init) when outside any service
    file: str = ""  # one replaced file it maps

    def describe(self) -> str:
        if self.pid == 0:
            return self.unit
        where = self.unit or self.scope or "no unit"
        return f"{self.command} (pid {self.pid}, {where})"


def deleted_paths(maps: str) -> set[str]:
    """Paths of the files a /proc/PID/maps text maps that were replaced or
    removed since (the kernel appends " (deleted)")."""
    found = set()
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].endswith(DELETED):
            found.add(parts[5].removesuffix(DELETED))
    return found


def unit_of(cgroup: str) -> tuple[str, str]:
    """(service, scope) of a /proc/PID/cgroup text: the first service in the
    path of the systemd hierarchy (v2 "0::/...", v1 "N:name=systemd:/..."),
    or the scope (a login session, init.scope) that holds it instead."""
    for line in cgroup.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers not in ("", "name=systemd"):
            continue
        for part in path.split("/"):
            if _UNIT.fullmatch(part):
                return (part, "") if part.endswith(".service") else ("", part)
        return "", ""
    return "", ""


class PathResolver:
    """Package file lists name paths as packaged (/lib/x86_64-linux-gnu/...);
    the kernel names them through the real directories (/usr/lib/... on a
    merged-/usr host). This resolves directories once each."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        head, tail = os.path.split(path)
        real = self._dirs.get(head)
        if real is None:
            real = self._dirs[head] = os.path.realpath(head)
        return os.path.join(real, tail)

    def all(self, paths: Iterable[str]) -> set[str]:
        return {self(p) for p in paths}


def scan(
    files: Collection[str], proc: Path = Path("/proc"), skip: Collection[int] = ()
) -> list[Stale]:
    """Every process (but ``skip``) mapping a replaced file of ``files``
    (real paths). Processes that end or cannot be read meanwhile are passed
    over: they run nothing old any more, or are not ours to judge."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            replaced = deleted_paths((entry / "maps").read_text(errors="replace"))
            with_exe = replaced | _exe(entry)
            hits = sorted(p for p in with_exe if p in files)
            if not hits:
                continue
            unit, scope = unit_of((entry / "cgroup").read_text(errors="replace"))
            command = (entry / "comm").read_text(errors="replace").strip()
        except OSError:
            continue
        if int(entry.name) == 1 and scope == MANAGER:
            unit = MANAGER  # systemd itself: re-executed rather than restarted
        found.append(Stale(int(entry.name), command, unit, scope, hits[0]))
    return found


def _exe(entry: Path) -> set[str]:
    try:
        target = os.readlink(entry / "exe")
    except OSError:
        return set()
    return {target.removesuffix(DELETED)} if target.endswith(DELETED) else set()


def parse_needrestart_services(output: str) -> list[str]:
    """Units of "NEEDRESTART-SVC: UNIT" lines of `needrestart -b`."""
    return [
        unit if "." in unit else f"{unit}.service"
        for key, unit in needrestart_lines(output)
        if key == "SVC" and unit
    ]


class Services:
    """This host's services: which run replaced code, and restarting them.

    ``files`` lists the paths an installed package owns (the backend's
    `files`); ``tool`` is the host's own list of units to restart (None:
    none available). Raises CommandFailed from `restart` only."""

    def __init__(
        self,
        files: Callable[[Sequence[str]], Iterable[str]],
        tool: Callable[[], Sequence[str]] | None = None,
        run: Runner = subp.run,
        proc: Path = Path("/proc"),
    ) -> None:
        self._files = files
        self._tool = tool
        self._run = run
        self._proc = proc

    def own_unit(self) -> str:
        """The service this agent runs in ("" when started by hand)."""
        try:
            return unit_of((self._proc / "self" / "cgroup").read_text())[0]
        except OSError:
            return ""

    def files_of(self, packages: Sequence[str]) -> set[str]:
        """The real paths of the files ``packages`` own (none when the
        package manager cannot list them: logged)."""
        try:
            return PathResolver().all(self._files(packages)) if packages else set()
        except CommandFailed as exc:
            log.warning("cannot list the files of %s: %s", ", ".join(packages), exc)
            return set()

    def stale(self, packages: Sequence[str]) -> list[Stale]:
        """`stale_in` the files of ``packages``."""
        return self.stale_in(self.files_of(packages))

    def stale_in(self, files: Collection[str]) -> list[Stale]:
        """Processes running replaced ``files`` (`files_of`), and units the
        host's own tool says need a restart. The agent's own process is
        left out: agent updates hand over on their own."""
        found = scan(files, self._proc, skip={os.getpid()}) if files else []
        if self._tool is not None:
            try:
                named = self._tool()
            except CommandFailed as exc:
                log.warning("the host's restart tool is unavailable: %s", exc)
                named = []
            seen = {s.unit for s in found}
            found += [Stale(0, "", unit) for unit in named if unit not in seen]
        return found

    def restart(self, unit: str) -> None:
        """Restart ``unit``; the service manager itself (PID 1, in
        init.scope) re-executes instead, as systemd's own upgrades do."""
        if unit == MANAGER:
            self._run(["systemctl", "daemon-reexec"], timeout=300)
        else:
            self._run(["systemctl", "restart", "--", unit], timeout=300)


def needrestart(run: Runner = subp.run) -> Callable[[], Sequence[str]] | None:
    """`needrestart -b`'s services, where needrestart is installed."""
    if not any(Path(d, "needrestart").exists() for d in ("/usr/sbin", "/usr/bin", "/sbin")):
        return None

    def services() -> list[str]:
        done = run(["needrestart", "-b", "-r", "l"], check=False, timeout=300)
        return parse_needrestart_services(done.stdout)

    return services
