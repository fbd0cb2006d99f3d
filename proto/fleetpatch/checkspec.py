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

A value no probe could use (a host name that cannot resolve, a URL urllib
cannot split, a NUL in an argv) is refused here, naming the field
(`field_problem`), rather than left to make a probe crash.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from .addresses import host_problem, is_ipv6
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
    if found := field_problem(check):
        raise t.error(*found)
    t.finish()
    return check


def field_problem(check: Check) -> tuple[str, str] | None:
    """The first field of ``check`` (``host``, ``argv[1]``) whose value no
    probe could use, and why; None when every value could work. The readers
    here apply it, and so does the agent to the checks of a work order:
    a value that would only make a probe crash is refused where it is read."""
    return next(((field, why) for field, why in _problems(check) if why), None)


def _problems(check: Check) -> Iterator[tuple[str, str]]:
    if check.kind is CheckKind.SYSTEMD:
        yield "unit", _unit_problem(check.unit)
    elif check.kind is CheckKind.TCP:
        yield "host", _host_problem(check.host)
    elif check.kind is CheckKind.HTTP:
        yield "url", _url_problem(check.url)
        status = check.expect_status
        yield "expect_status", "" if not status or 100 <= status <= 599 else (
            f"{status} is not an HTTP status (100-599)"
        )  # fmt: skip
    elif check.kind is CheckKind.PROCESS:
        yield "process", "must not be blank" if not check.process.strip() else ""
        yield "process", _control_problem(check.process)
    elif check.kind is CheckKind.COMMAND:
        yield "argv[0]", "" if check.argv and check.argv[0] else "names no program"
        for index, arg in enumerate(check.argv):
            # Only the program is a path; a tab or newline in an argument may be meant.
            why = _control_problem(arg) if index == 0 else _nul_problem(arg)
            yield f"argv[{index}]", why
    elif check.kind is CheckKind.RESOURCE:
        yield "max_load_per_cpu", _load_problem(check.max_load_per_cpu)
        yield "max_memory_used_ratio", _ratio_problem(check.max_memory_used_ratio)
        yield "max_disk_used_ratio", _ratio_problem(check.max_disk_used_ratio)


def _load_problem(value: float) -> str:
    # nan compares false with everything: a limit never reached, a gate off.
    return (
        "" if math.isfinite(value) and value >= 0 else f"must be a finite number >= 0, not {value}"
    )


def _ratio_problem(value: float) -> str:
    return "" if 0 <= value <= 1 else f"must be between 0 and 1, not {value}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _nul_problem(value: str) -> str:
    return f"{value!r} contains a NUL character" if "\0" in value else ""


def _control_problem(value: str) -> str:
    return f"{value!r} contains a control character" if _CONTROL.search(value) else ""


def _unit_problem(unit: str) -> str:
    if not unit or _CONTROL.search(unit) or any(c.isspace() or c == "/" for c in unit):
        return f"{unit!r} is not a systemd unit name"
    return ""


def _host_problem(host: str) -> str:
    if why := _not_a_host(host):
        return f"{host!r} is not a host name or IP address ({why})"
    return ""


def _not_a_host(host: str) -> str:
    """Why resolving could never take ``host`` ("" if it could)."""
    return host_problem(host, characters=True)


def _url_problem(url: str) -> str:
    """Why urllib could never fetch ``url``: scheme, host and port, in ASCII."""
    if not url.startswith(("http://", "https://")):
        return f"{url!r} must start with http:// or https://"
    if _CONTROL.search(url) or " " in url:
        return f"{url!r} must not contain spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    host = parts.hostname or ""
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    if not host:
        why = "names no host"
    elif bracketed and not is_ipv6(host):
        why = f"names [{host}], which is not an IPv6 address"
    elif not_a_host := _not_a_host(host):
        why = f"names {host!r}, not a host name or IP address ({not_a_host})"
    elif "@" in parts.netloc:
        why = "must not carry a user name or password"
    elif port == 0:
        why = "names port 0 (use 1-65535)"
    elif not (parts.path + parts.query).isascii():
        why = "must be ASCII after the host (percent-encode the rest)"
    else:
        return ""
    return f"{url!r} {why}"


def _systemd(t: Table, name: str) -> Check:
    unit = t.require("unit", str)
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
    if why := _load_problem(load):
        raise t.error("max_load_per_cpu", why)
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
    if why := _ratio_problem(value):
        raise t.error(key, why)
    return value


_READERS = {
    CheckKind.SYSTEMD: _systemd,
    CheckKind.TCP: _tcp,
    CheckKind.HTTP: _http,
    CheckKind.COMMAND: _command,
    CheckKind.PROCESS: _process,
    CheckKind.RESOURCE: _resource,
}
