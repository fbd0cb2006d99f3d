"""The agent's plain data <-> protobuf; nothing else touches protobuf."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from fleetpatch.v1 import types_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from agent.backends.base import Change
from agent.backends.packages import Inventory
from agent.host.facts import HostFacts
from agent.host.health import CheckResult, HealthSummary
from agent.host.updates import Available


def facts_to_pb(facts: HostFacts) -> types_pb2.HostFacts:
    return types_pb2.HostFacts(**dataclasses.asdict(facts))


def inventory_to_pb(inventory: Inventory) -> types_pb2.Inventory:
    pb = types_pb2.Inventory()
    for name, version, arch in inventory.packages:
        source, source_version = inventory.sources.get(name, ("", ""))
        pb.packages.add(
            name=name, version=version, arch=arch, source=source, source_version=source_version
        )
    return pb


def updates_to_pb(found: Sequence[Available], scanned_at: datetime) -> types_pb2.AvailableUpdates:
    at = Timestamp()
    at.FromDatetime(scanned_at)
    return types_pb2.AvailableUpdates(
        updates=[types_pb2.AvailableUpdate(**dataclasses.asdict(u)) for u in found],
        scanned_at=at,
    )


def health_to_pb(summary: HealthSummary) -> types_pb2.HealthSummary:
    observed = Timestamp()
    observed.FromDatetime(summary.observed_at)
    return types_pb2.HealthSummary(
        healthy=summary.healthy,
        observed_at=observed,
        checks=[
            types_pb2.CheckResult(name=c.name, kind=c.kind, ok=c.ok, detail=c.detail)
            for c in summary.checks
        ],
    )


def progress_report(
    key: str,
    order_id: str,
    step: str,
    detail: str,
    *,
    final: bool = False,
    sequence: int = 0,
    campaign_id: str = "",
    changes: Sequence[Change] = (),
    checks: Sequence[CheckResult] = (),
) -> bytes:
    """A serialized ProgressReport, as queued in the journal."""
    at = Timestamp()
    at.GetCurrentTime()
    return types_pb2.ProgressReport(
        idempotency_key=key,
        order_id=order_id,
        step=step,
        final=final,
        outcome=step if final else "",
        detail=detail,
        at=at,
        sequence=sequence,
        campaign_id=campaign_id,
        changes=[
            types_pb2.PackageChange(name=c.name, from_version=c.old, to_version=c.new)
            for c in changes
        ],
        checks=[
            types_pb2.CheckResult(name=c.name, kind=c.kind, ok=c.ok, detail=c.detail)
            for c in checks
        ],
    ).SerializeToString()
