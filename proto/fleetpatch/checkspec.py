"""Health-check kinds and their fields: one vocabulary for the agent's own
[[checks]] in agent.toml, a campaign's [[verify.checks]], and the
HealthCheckSpec of a work order, so an operator learns one format.

    systemd   unit                    the unit is active
    tcp       host, port              a TCP port accepts (host: 127.0.0.1)
    http      url, expect_status      a URL answers (expect_status: 200)
    command   argv                    an argv exits 0 (never a shell)
    process   process                 a process with that name runs
    resource  max_load_per_cpu, max_memory_used_ratio, max_disk_used_ratio
"""

from __future__ import annotations

from enum import StrEnum


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
