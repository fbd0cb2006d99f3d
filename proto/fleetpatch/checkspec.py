"""Health checks: one vocabulary and one validator for the agent's own
[[checks]] in agent.toml, a campaign's [[verify.checks]], and the
HealthCheckSpec of a work order, so an operator learns one format and
both ends accept exactly the same checks.

    systemd   unit                    the unit is active
    tcp       host, port              a TCP port accepts (host: 127.0.0.1)
    http      url, expect_status      a URL answers (expect_status: 200)
    command   argv                    an argv exits 0 (never a shell)
    process   process                 a process with that name runs
    resource  max_load_per_cpu, max_memory_used_ratio, max_disk_used_ratio
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .tomltable import Table


class CheckKind(StrEnum):
    """Stored and sent names; values never change once released."""

    SYSTEMD = "systemd"
    TCP = "tcp"
    HTTP = "http"
    COMMAND = "command"
    PROCESS = "process"
    RESOURCE = "resource"


FIELDS: dict[CheckKind, tuple[str, ...]] = {
    CheckKind.SYSTEMD: ("unit",),
    CheckKind.TCP: ("host", "port"),
    CheckKind.HTTP: ("url", "expect_status"),
    CheckKind.COMMAND: ("argv",),
    CheckKind.PROCESS: ("process",),
    CheckKind.RESOURCE: ("max_load_per_cpu", "max_memory_used_ratio", "max_disk_used_ratio"),
}

# The fields a check of each kind cannot do without.
REQUIRED: dict[CheckKind, tuple[str, ...]] = {
    CheckKind.SYSTEMD: ("unit",),
    CheckKind.TCP: ("port",),
    CheckKind.HTTP: ("url",),
    CheckKind.COMMAND: ("argv",),
    CheckKind.PROCESS: ("process",),
    CheckKind.RESOURCE: (),
}


@dataclass(frozen=True)
class Check:
    """One health check, as written in a file; only its kind's fields are set."""

    name: str
    kind: CheckKind
    unit: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    expect_status: int = 0
    argv: tuple[str, ...] = ()
    process: str = ""
    max_load_per_cpu: float = 0.0  # 0: not checked
    max_memory_used_ratio: float = 0.0
    max_disk_used_ratio: float = 0.0


def parse_check(t: Table) -> Check:
    """Read one check's table (agent.toml's ``[[checks]]``, a campaign's
    ``[[verify.checks]]``); raises the table's TableError naming the field."""
    name = t.require("name", str)
    if not name.strip():
        raise t.error("name", "must not be empty")
    spelled = t.require("kind", str)
    try:
        kind = CheckKind(spelled)
    except ValueError:
        kinds = ", ".join(k.value for k in CheckKind)
        raise t.error("kind", f"{spelled!r} is not a check kind (use one of {kinds})") from None
    foreign = {key for fields in FIELDS.values() for key in fields} - set(FIELDS[kind])
    for key in sorted(foreign):
        if t.has(key):
            raise t.error(key, f"does not apply to a {kind} check")
    check = _READERS[kind](t, name)
    t.finish()
    return check


def _systemd(t: Table, name: str) -> Check:
    unit = t.require("unit", str)
    if not unit or any(c.isspace() or c == "/" for c in unit):
        raise t.error("unit", f"{unit!r} is not a systemd unit name")
    return Check(name, CheckKind.SYSTEMD, unit=unit)


def _tcp(t: Table, name: str) -> Check:
    host = t.get("host", str, "127.0.0.1")
    if not host:
        raise t.error("host", "must not be empty")
    port = t.require("port", int)
    if not 0 < port < 65536:
        raise t.error("port", f"{port} is not a TCP port (1-65535)")
    return Check(name, CheckKind.TCP, host=host, port=port)


def _http(t: Table, name: str) -> Check:
    url = t.require("url", str)
    if not url.startswith(("http://", "https://")):
        raise t.error("url", f"{url!r} must start with http:// or https://")
    status = t.get("expect_status", int, 200)
    if not 100 <= status <= 599:
        raise t.error("expect_status", f"{status} is not an HTTP status (100-599)")
    return Check(name, CheckKind.HTTP, url=url, expect_status=status)


def _command(t: Table, name: str) -> Check:
    argv = tuple(value for _, value in t.items("argv", str))
    if not argv or not argv[0]:
        raise t.error("argv", "must be a non-empty array of strings (an argv, never a shell line)")
    return Check(name, CheckKind.COMMAND, argv=argv)


def _process(t: Table, name: str) -> Check:
    process = t.require("process", str)
    if not process.strip():
        raise t.error("process", "must not be empty")
    return Check(name, CheckKind.PROCESS, process=process)


def _resource(t: Table, name: str) -> Check:
    load = float(t.get("max_load_per_cpu", float, 0.0))
    if load < 0:
        raise t.error("max_load_per_cpu", "must not be negative")
    memory, disk = (_ratio(t, key) for key in ("max_memory_used_ratio", "max_disk_used_ratio"))
    if not (load or memory or disk):
        raise t.error("", "a resource check needs at least one threshold above 0")
    return Check(
        name,
        CheckKind.RESOURCE,
        max_load_per_cpu=load,
        max_memory_used_ratio=memory,
        max_disk_used_ratio=disk,
    )


def _ratio(t: Table, key: str) -> float:
    value = float(t.get(key, float, 0.0))
    if not 0 <= value <= 1:
        raise t.error(key, f"must be between 0 and 1, not {value}")
    return value


_READERS = {
    CheckKind.SYSTEMD: _systemd,
    CheckKind.TCP: _tcp,
    CheckKind.HTTP: _http,
    CheckKind.COMMAND: _command,
    CheckKind.PROCESS: _process,
    CheckKind.RESOURCE: _resource,
}
