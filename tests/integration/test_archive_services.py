"""Patches that take effect, with real packages from the Debian archive this
machine's apt reaches and a real service under a real systemd.

systemd boots as PID 1 of a container on a copy-on-write root
(SystemdContainer), with the machine's policy-rc.d taken away so that
maintainer scripts really start services. The package is picked at run
time (`pick`), so the test does not break when the archive moves on: a
running systemd service, and a package with two versions available whose
upgrade leaves that service on the replaced code (a library it maps: an
OpenSSL fix leaves every running service on the old libssl). The agent's
own parts run the orders inside the container (tests/support/archive_drive.py),
and what runs afterwards is read from /proc there:

- restart_services = "report": the update lands, the old process runs on
  with replaced files mapped, and the order ends PENDING_RESTART naming
  the unit;
- "auto": the agent restarts the unit, whose main process then maps no
  replaced file;
- a health check failing on the new version: the revert puts the old
  version back and restarts the unit onto it.

It skips, with the reason, only when the archive cannot be reached.
"""

from __future__ import annotations

import json
import re
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.packages import SystemdContainer, systemd_container_available
from tests.support.sandbox import HostSandbox, sandbox_available
from tests.support.waiting import scaled, wait_until

pytestmark = pytest.mark.timeout(scaled(1200))

ROOT = Path(__file__).resolve().parents[2]
SOURCE, SITE = "/srv/fp-source", "/srv/fp-site-packages"
# Services tried in turn (see `pick`).
CANDIDATES = ("nginx", "haproxy", "memcached", "rsyslog", "apache2", "openssh-server")
# Never moved back and forth here: the C library (its scripts restart
# services themselves, and everything in the container runs on it).
NEVER_DOWNGRADED = frozenset({"libc6", "libc-bin", "base-files"})
INSTALLED = ("/usr/", "/lib", "/bin/", "/sbin/", "/opt/")
APT_ENV = ["env", "DEBIAN_FRONTEND=noninteractive"]
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


@dataclass(frozen=True)
class Choice:
    package: str
    old: str
    new: str
    unit: str
    old_pins: tuple[str, ...]  # name=version of what the old version needs exactly
    new_pins: tuple[str, ...]


def _versions(box: SystemdContainer, package: str) -> tuple[str, list[str]]:
    """(candidate, every version the archive offers, newest first)."""
    policy = box.run(["apt-cache", "policy", package], check=False).stdout
    candidate = re.search(r"Candidate: (\S+)", policy)
    madison = box.run(["apt-cache", "madison", package], check=False).stdout
    versions = [line.split("|")[1].strip() for line in madison.splitlines() if "|" in line]
    return (candidate.group(1) if candidate else ""), list(dict.fromkeys(versions))


def _pins(box: SystemdContainer, package: str, version: str) -> tuple[str, ...]:
    """The package at ``version``, and each package it depends on that the
    archive has at that same version too (built from the same source, which
    the older version usually needs: nginx-common for nginx)."""
    shown = box.run(["apt-cache", "show", f"{package}={version}"]).stdout
    fields = [line.split(":", 1)[1] for line in shown.splitlines()
              if line.startswith(("Depends:", "Pre-Depends:"))]  # fmt: skip
    names = {m.group(0) for field in fields for alt in field.split(",")
             if (m := _NAME.match(alt.strip()))}  # fmt: skip
    same = [n for n in sorted(names) if version in _versions(box, n)[1]]
    return (f"{package}={version}", *(f"{n}={version}" for n in same))


def install(box: SystemdContainer, pins: tuple[str, ...]) -> bool:
    done = box.run(
        [*APT_ENV, "apt-get", "install", "-y", "-q", "--no-install-recommends",
         "--allow-downgrades", *pins], check=False, timeout=600,
    )  # fmt: skip
    return done.returncode == 0


def main_process(box: SystemdContainer, unit: str) -> tuple[int, set[str]]:
    """The unit's main PID and the replaced installed files it still maps
    (not, say, "/dev/zero (deleted)", shared memory nginx maps)."""
    pid = int(box.show(unit, "MainPID").get("MainPID", "0"))
    if pid == 0:
        return 0, set()
    maps = box.run(["cat", f"/proc/{pid}/maps"], check=False).stdout
    return pid, {line.split(maxsplit=5)[5] for line in maps.splitlines()
                 if line.endswith(" (deleted)") and len(line.split(maxsplit=5)) == 6
                 and line.split(maxsplit=5)[5].startswith(INSTALLED)}  # fmt: skip


def _mapped_packages(box: SystemdContainer, unit: str) -> list[str]:
    """The packages owning what the unit's main process maps (a merged-/usr
    host names /usr/lib paths that packages ship as /lib ones)."""
    pid = int(box.show(unit, "MainPID").get("MainPID", "0"))
    maps = box.run(["cat", f"/proc/{pid}/maps"], check=False).stdout
    paths = {
        line.split(maxsplit=5)[5]
        for line in maps.splitlines()
        if len(line.split(maxsplit=5)) == 6 and line.split(maxsplit=5)[5].startswith("/")
    }
    queries = sorted(paths | {p.removeprefix("/usr") for p in paths if p.startswith("/usr/lib/")})
    owners = box.run(["dpkg-query", "-S", *queries], check=False).stdout
    found = {line.split(":", 1)[0] for line in owners.splitlines() if ": /" in line}
    return sorted(found)


def _unit_of(box: SystemdContainer, pins: tuple[str, ...]) -> str:
    """The service unit the package (or one built beside it: nginx-common
    ships nginx.service) installs; one named after the package first."""
    names = [pin.split("=", 1)[0] for pin in pins]
    files = box.run(["dpkg-query", "-L", *names], check=False).stdout.split()
    units = [Path(f).name for f in files
             if re.fullmatch(r"/(usr/)?lib/systemd/system/[^/@]+\.service", f)]  # fmt: skip
    named = [u for u in units if u == f"{names[0]}.service"]
    return (named or units or [""])[0]


def _running(box: SystemdContainer, unit: str) -> bool:
    return box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"


def _fresh(box: SystemdContainer, choice: Choice) -> int:
    """The old version installed and the unit (re)started on it: its main PID."""
    assert install(box, choice.old_pins), f"cannot go back to {choice.package} {choice.old}"
    box.run(["systemctl", "restart", choice.unit])
    wait_until(f"{choice.unit} running", lambda: main_process(box, choice.unit)[0] != 0)
    pid, replaced = main_process(box, choice.unit)
    assert not replaced, replaced
    return pid


def _trial(box: SystemdContainer, unit: str, package: str) -> Choice | str:
    """``package`` (the service's own, or a library its main process maps)
    at an older archive version under the running unit; its upgrade must
    leave the unit on the replaced code. The Choice, or why not."""
    candidate, versions = _versions(box, package)
    older = [v for v in versions if v != candidate]
    if not candidate or not older:
        return f"{package}: fewer than two versions"
    choice = Choice(package, older[0], candidate, unit, _pins(box, package, older[0]),
                    _pins(box, package, candidate))  # fmt: skip
    if not install(box, choice.old_pins):
        return f"{package} {choice.old}: does not install"
    box.run(["systemctl", "restart", unit])
    if not install(box, choice.new_pins):
        return f"{package} {choice.new}: does not install"
    if not main_process(box, unit)[1]:
        return f"{package}: its upgrade restarts {unit} by itself"
    _fresh(box, choice)
    return choice


def pick(box: SystemdContainer) -> Choice:
    """A running service and a package under it whose upgrade leaves the
    service on the replaced code: a library it maps (as an OpenSSL fix
    leaves every running service on the old libssl), or the service's own
    package where its scripts do not restart it (Debian's mostly do)."""
    tried = []
    for service in CANDIDATES:
        if not install(box, (service,)):
            tried.append(f"{service}: does not install")
            continue
        unit = _unit_of(box, _pins(box, service, _versions(box, service)[0]))
        if not unit or not _running(box, unit):
            tried.append(f"{service}: no running service ({unit or 'no unit'})")
            continue
        under = [p for p in _mapped_packages(box, unit) if p not in NEVER_DOWNGRADED]
        for package in [service, *under]:
            found = _trial(box, unit, package)
            if isinstance(found, Choice):
                print(f"picked {found} after: {'; '.join(tried) or 'nothing'}")
                return found
            tried.append(found)
    pytest.fail(f"no service and package fit the test in this archive: {'; '.join(tried)}")


@pytest.fixture(scope="module")
def archive_host(tmp_path_factory) -> Iterator[tuple[SystemdContainer, Choice]]:
    reason = sandbox_available() or systemd_container_available()
    if reason is not None:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("archive")
    with HostSandbox(machine_id=uuid.uuid4().hex) as sandbox:
        # Maintainer scripts start services here (a Docker-style policy-rc.d
        # on the machine would forbid it), and the agent's code is seen at
        # paths the container's own /tmp does not hide.
        sandbox.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
        sandbox.bind(ROOT, SOURCE)
        sandbox.bind(sysconfig.get_paths()["purelib"], SITE)
        box = SystemdContainer(sandbox, tmp / "console.log")
        try:
            update = box.run(["apt-get", "update", "-q"], check=False, timeout=600)
            failed = re.search(r"^(W: Failed to fetch|E: ).*$", update.stdout + update.stderr, re.M)
            if update.returncode != 0 or failed:
                pytest.skip(
                    "the Debian archive cannot be reached from here: "
                    f"{failed.group(0) if failed else update.stderr.strip()[-300:]}"
                )
            yield box, pick(box)
        finally:
            box.stop()


def drive(box: SystemdContainer, choice: Choice, *args: str) -> dict[str, Any]:
    done = box.run(
        ["env", "-C", SOURCE, f"PYTHONPATH={SOURCE}:{SOURCE}/proto:{SITE}", "python3", "-m",
         "tests.support.archive_drive", "/var/lib/fp-archive-test", choice.package, *args],
        timeout=900,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def installed(box: SystemdContainer, package: str) -> str:
    return box.run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout.strip()


def _pending(result: dict[str, Any]) -> str:
    """What the order says still runs replaced code ("" when nothing)."""
    detail = str(result["detail"])
    return detail.split("restart pending: ", 1)[1] if "restart pending: " in detail else ""


def test_report_leaves_the_old_code_running_and_says_so(archive_host):
    box, choice = archive_host
    pid = _fresh(box, choice)
    result = drive(box, choice, "--restart", "report")
    assert result["final"] == "PENDING_RESTART", result
    assert installed(box, choice.package) == choice.new
    now, replaced = main_process(box, choice.unit)
    assert now == pid  # the same process, still on the replaced code
    assert replaced
    assert f"{choice.unit} (the order says restart_services=report)" in _pending(result)
    assert result["restarts"]["apply"] == []


def test_auto_restarts_the_service_onto_the_new_code(archive_host):
    box, choice = archive_host
    pid = _fresh(box, choice)
    result = drive(box, choice, "--restart", "auto")
    # Units local policy holds by default (dbus, logind) may still map the
    # old library: then the order says so and ends PENDING_RESTART.
    assert result["final"] in ("SUCCEEDED", "PENDING_RESTART"), result
    assert choice.unit not in _pending(result)
    assert all("policy.never_restart" in item for item in _pending(result).split("), ") if item)
    assert installed(box, choice.package) == choice.new
    now, replaced = main_process(box, choice.unit)
    assert now not in (0, pid), (pid, now)
    assert replaced == set()
    assert [choice.unit, "restarted"] in result["restarts"]["apply"]
    verify = next(detail for state, detail in result["steps"] if state == "VERIFY")
    assert choice.unit in verify.split("restarted ", 1)[1]


def test_a_revert_restarts_the_service_onto_the_old_code(archive_host):
    box, choice = archive_host
    _fresh(box, choice)
    result = drive(box, choice, "--restart", "auto", "--unhealthy-from", choice.new)
    assert result["final"] == "REVERTED", result
    assert installed(box, choice.package) == choice.old
    assert [choice.unit, "restarted"] in result["restarts"]["apply"]
    assert [choice.unit, "restarted"] in result["restarts"]["revert"]
    pid, replaced = main_process(box, choice.unit)
    assert pid != 0
    assert replaced == set()  # on the old version's files, which nothing replaced since
    assert choice.unit in result["detail"].split("restarted ", 1)[1]
