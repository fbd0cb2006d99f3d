"""Health checks a host runs before and after it patches.

Two sources: the host's own config (agent.toml ``[[checks]]``, owned by
whoever runs the host) and the work order (owned by the campaign). Kinds:

    systemd   the unit is active            (systemctl is-active UNIT)
    tcp       a TCP port accepts            (connect, 3 s timeout)
    http      a URL answers an expected status (GET, 5 s timeout)
    command   an argv exits 0               (never a shell; from orders only
                                             when local policy allows)
    process   a process with that name runs
    resource  load, memory and disk below thresholds
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetpatch.checkspec import Check, CheckKind, field_problem, parse_check
from fleetpatch.tomltable import Table, TableError
from fleetpatch.v1 import types_pb2

from agent.backends import subp
from agent.errors import CommandFailed
from agent.host.health import CheckResult, ResourceLimits, resource_checks

Kind = CheckKind  # the agent's short name for it

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    kind: Kind
    unit: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    expect_status: int = 200
    argv: tuple[str, ...] = ()
    process: str = ""
    limits: ResourceLimits | None = None
    from_order: bool = False


def check_from_pb(pb: types_pb2.HealthCheckSpec) -> CheckSpec:
    """A check named by a work order, held to the values agent.toml may
    hold (fleetpatch.checkspec.field_problem); raises ValueError when it
    is incomplete or a value could never work, naming the field."""
    check = _check_of_pb(pb)
    if found := field_problem(check):
        field, problem = found
        raise ValueError(f"health check {check.name!r}: {field}: {problem}")
    return _spec(check, from_order=True)


def _check_of_pb(pb: types_pb2.HealthCheckSpec) -> Check:
    which = pb.WhichOneof("check")
    name = pb.name or which or "unnamed"
    if which == "systemd" and pb.systemd.unit:
        return Check(name, Kind.SYSTEMD, unit=pb.systemd.unit)
    if which == "tcp" and 0 < pb.tcp.port < 65536:
        return Check(name, Kind.TCP, host=pb.tcp.host or "127.0.0.1", port=pb.tcp.port)
    if which == "http" and pb.http.url.startswith(("http://", "https://")):
        return Check(name, Kind.HTTP, url=pb.http.url, expect_status=pb.http.expect_status)
    if which == "command" and pb.command.argv:
        return Check(name, Kind.COMMAND, argv=tuple(pb.command.argv))
    if which == "process" and pb.process.name:
        return Check(name, Kind.PROCESS, process=pb.process.name)
    if which == "resource":
        r = pb.resource
        return Check(
            name, Kind.RESOURCE, max_load_per_cpu=r.max_load_per_cpu,
            max_memory_used_ratio=r.max_memory_used_ratio,
            max_disk_used_ratio=r.max_disk_used_ratio,
        )  # fmt: skip
    raise ValueError(f"health check {name!r} is incomplete or of an unknown kind")


def check_from_config(table: Mapping[str, Any], source: str, path: str) -> CheckSpec:
    """A ``[[checks]]`` entry of agent.toml (``source``), at ``path`` in it
    (``checks[0]``): validated by the same reader as a campaign's verify
    checks. Raises TableError (a ValueError) naming the field."""
    if not isinstance(table, Mapping):
        raise TableError(path, "must be a table ([[checks]])", source)
    return check_from_table(Table(dict(table), path, source))


def check_from_table(t: Table) -> CheckSpec:
    """A ``[[checks]]`` entry read from its table; raises TableError."""
    return _spec(parse_check(t))


def _spec(check: Check, from_order: bool = False) -> CheckSpec:
    if check.kind is Kind.RESOURCE:
        limits = ResourceLimits(
            check.max_load_per_cpu, check.max_memory_used_ratio, check.max_disk_used_ratio
        )
        return CheckSpec(check.name, check.kind, limits=limits, from_order=from_order)
    return CheckSpec(
        check.name, check.kind, unit=check.unit, host=check.host or "127.0.0.1",
        port=check.port, url=check.url, expect_status=check.expect_status or 200,
        argv=check.argv, process=check.process, from_order=from_order,
    )  # fmt: skip


Runner = Callable[..., subp.Result]


class Probes(Protocol):
    """What the work-order runner needs of health checks."""

    def run_all(self, specs: Sequence[CheckSpec]) -> list[CheckResult]: ...


class Prober:
    """Runs checks. Probes never raise: a failure is a result saying why."""

    def __init__(self, run: Runner = subp.run, timeout: float = 5.0) -> None:
        self._run = run
        self._timeout = timeout

    def run_all(self, specs: Sequence[CheckSpec]) -> list[CheckResult]:
        results: list[CheckResult] = []
        for spec in specs:
            results.extend(self.run(spec))
        return results

    def run(self, spec: CheckSpec) -> list[CheckResult]:
        """The results of one check; a probe that raises (a value validation
        did not foresee) is a failed result saying so, never an exception."""
        try:
            return self._probe(spec)
        except Exception as exc:  # the contract: probes never raise
            _log.debug("health check %s: probe raised", spec.name, exc_info=True)
            why = " ".join(str(exc).split()) or "no detail"
            detail = f"probe failed ({type(exc).__name__}): {why}"
            return [CheckResult(spec.name, str(spec.kind), False, detail)]

    def _probe(self, spec: CheckSpec) -> list[CheckResult]:
        if spec.kind is Kind.RESOURCE:
            return [
                CheckResult(f"{spec.name}.{r.name}", r.kind, r.ok, r.detail)
                for r in resource_checks(spec.limits or ResourceLimits())
            ]
        probe = {
            Kind.SYSTEMD: self._systemd,
            Kind.TCP: self._tcp,
            Kind.HTTP: self._http,
            Kind.COMMAND: self._command,
            Kind.PROCESS: self._process,
        }[spec.kind]
        ok, detail = probe(spec)
        return [CheckResult(spec.name, spec.kind.value, ok, detail)]

    def _systemd(self, spec: CheckSpec) -> tuple[bool, str]:
        try:
            done = self._run(
                ["systemctl", "is-active", "--", spec.unit], check=False, timeout=self._timeout
            )
        except CommandFailed as exc:
            return False, f"cannot ask systemd: {exc}"
        state = done.stdout.strip() or "unknown"
        return done.returncode == 0, f"unit {spec.unit} is {state}"

    def _tcp(self, spec: CheckSpec) -> tuple[bool, str]:
        try:
            with socket.create_connection((spec.host, spec.port), timeout=self._timeout):
                return True, f"{spec.host}:{spec.port} accepts connections"
        except OSError as exc:
            return False, f"{spec.host}:{spec.port}: {exc.strerror or exc}"

    def _http(self, spec: CheckSpec) -> tuple[bool, str]:
        # Here, not at module level: urllib.request brings http.client and
        # the email package, which the idle daemon has no use for (issue 18).
        import urllib.error
        import urllib.request

        request = urllib.request.Request(spec.url, method="GET")  # noqa: S310 - scheme checked
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return False, f"GET {spec.url}: {reason}"
        return (
            status == spec.expect_status,
            f"GET {spec.url} -> {status} (want {spec.expect_status})",
        )

    def _command(self, spec: CheckSpec) -> tuple[bool, str]:
        try:
            done = self._run(list(spec.argv), check=False, timeout=self._timeout * 6)
        except CommandFailed as exc:
            return False, str(exc)
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return done.returncode == 0, f"{spec.argv[0]} exited {done.returncode} {tail[0]}".rstrip()

    def _process(self, spec: CheckSpec) -> tuple[bool, str]:
        import psutil  # here: the idle daemon does without it (agent.host.sysinfo)

        for proc in psutil.process_iter(["name"]):
            if proc.info.get("name") == spec.process:
                return True, f"process {spec.process} runs (pid {proc.pid})"
        return False, f"no process named {spec.process}"
