"""Compliance with the patch policy (the seed's M7) and time to remediate
(M2).

A host is on policy when none of its open exposures with a fix is older
than the grace period of its severity (controller.toml [compliance]:
critical 7 days, high 14, the others 30). A vulnerability's age runs from
its disclosure when the feed dates it, else from when it was first seen on
the fleet. A host whose release no imported feed covers is unassessed: it
is counted, never called compliant. Time to remediate runs from the same
start to when the host's inventory first showed every exposed package
fixed (reported after a verified patch)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.model import Host
from controller.store.vulns import ExposureRow
from controller.vulns import DEFAULT_GRACE, SEVERITIES, releases

GROUPINGS = ("ring", "region", "os")


@dataclass(frozen=True)
class Group:
    key: str
    hosts: int = 0
    on_policy: int = 0
    unassessed: int = 0


@dataclass(frozen=True)
class Breach:
    host_id: str
    group: str
    vuln_id: str
    severity: str
    package: str
    fixed: str
    age: timedelta
    grace: timedelta


@dataclass(frozen=True)
class Remediation:
    severity: str
    count: int
    mean: timedelta
    p90: timedelta


@dataclass(frozen=True)
class Report:
    groups: list[Group]
    breaches: list[Breach]
    remediation: list[Remediation] = field(default_factory=list)


def group_of(host: Host, by: str) -> str:
    if by == "ring":
        return str(host.ring)
    if by == "region":
        return host.region
    if by == "os":
        os_id, version = host.facts.get("os_id", ""), host.facts.get("os_version", "")
        return f"{os_id} {version}".strip() or "unknown"
    return "fleet"


def compliance(
    hosts: Iterable[Host],
    open_exposures: Iterable[ExposureRow],
    covered: set[str],
    first_seen: Mapping[str, datetime],
    grace: Mapping[str, timedelta],
    now: datetime,
    by: str = "",
) -> Report:
    """Each group's hosts on policy and every breach (host, vulnerability,
    package) past its grace. ``covered``: releases some feed names;
    ``first_seen``: per vulnerability, when the fleet first showed it."""
    breaches: dict[str, list[Breach]] = defaultdict(list)
    grouped: dict[str, str] = {}
    active = [h for h in hosts if h.status.value == "active"]
    for host in active:
        grouped[host.host_id] = group_of(host, by)
    for e in open_exposures:
        if not e.fixed or e.host_id not in grouped:
            continue  # no fix yet: nothing to install, no clock running
        start = e.published or first_seen.get(e.vuln_id, e.first_seen)
        age, allowed = now - start, grace.get(e.severity, DEFAULT_GRACE["unknown"])
        if age > allowed:
            group = grouped[e.host_id]
            breach = Breach(
                e.host_id, group, e.vuln_id, e.severity, e.package, e.fixed, age, allowed
            )
            breaches[e.host_id].append(breach)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for host in active:
        cell = counts[grouped[host.host_id]]
        cell[0] += 1
        if releases.host_release(host.facts) not in covered:
            cell[2] += 1
        elif not breaches.get(host.host_id):
            cell[1] += 1
    groups = [Group(k, *v) for k, v in sorted(counts.items(), key=lambda kv: _order(kv[0], by))]
    flat = sorted(
        (b for found in breaches.values() for b in found),
        key=lambda b: (SEVERITIES.index(b.severity), -b.age, b.host_id, b.vuln_id),
    )
    return Report(groups, flat)


def _order(key: str, by: str) -> tuple[int, str]:
    return (int(key), "") if by == "ring" and key.lstrip("-").isdigit() else (0, key)


def remediation(done: Sequence[tuple[str, str, str, datetime, datetime]]) -> list[Remediation]:
    """Mean and 90th percentile (nearest rank) of the time to remediate,
    per severity, over (host, vuln, severity, start, fixed) rows."""
    spans: dict[str, list[timedelta]] = defaultdict(list)
    for _, _, severity, start, fixed in done:
        spans[severity].append(max(fixed - start, timedelta(0)))
    found = []
    for severity in SEVERITIES:
        took = sorted(spans.get(severity, []))
        if took:
            mean = sum(took, timedelta(0)) / len(took)
            found.append(
                Remediation(severity, len(took), mean, took[math.ceil(0.9 * len(took)) - 1])
            )
    return found
