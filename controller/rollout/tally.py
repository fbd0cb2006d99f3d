"""Count a campaign's hosts from the store's rows, the way the scheduler
reads them (see campaigns/tallies.py for what each count means)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from controller.campaigns import (
    CampaignSpec,
    CampaignState,
    CellTally,
    HostFacts,
    Tallies,
    is_targeted,
)
from controller.campaigns.lifecycle import host_silent
from controller.model import (
    Assignment,
    AssignmentStatus,
    CampaignRecord,
    Host,
    HostPlace,
    HostStatus,
)

_COUNTED = {
    AssignmentStatus.IN_FLIGHT: "in_flight",
    AssignmentStatus.SUCCEEDED: "succeeded",
    AssignmentStatus.PENDING_REBOOT: "succeeded",  # patched as policy allows; reported apart
    AssignmentStatus.PENDING_RESTART: "succeeded",
    AssignmentStatus.FAILED: "failed",
    AssignmentStatus.REVERTED: "reverted",
    AssignmentStatus.REVERT_FAILED: "revert_failed",
    AssignmentStatus.TIMED_OUT: "timed_out",
}


def host_facts(host: Host | HostPlace) -> HostFacts:
    """What the campaign rules know of a host, from its row."""
    return facts_of(host.host_id, host.region, host.ring, host.labels, host.facts, host.last_seen)


def facts_of(
    host_id: str,
    region: str,
    ring: int,
    labels: Mapping[str, str],
    reported: Mapping[str, object],
    last_seen: datetime | None,
) -> HostFacts:
    """What the campaign rules know of a host: where it was enrolled and
    what it reports of itself (``reported``: its HostFacts as JSON)."""
    return HostFacts(
        host_id=host_id,
        region=region,
        ring=ring,
        labels=dict(labels),
        os_id=str(reported.get("os_id", "")),
        timezone=str(reported.get("timezone", "")),
        last_seen=last_seen,
        agent_version=str(reported.get("agent_version", "")),
        package_manager=str(reported.get("package_manager", "")),
    )


@dataclass(frozen=True)
class Count:
    tallies: Tallies
    eligible: tuple[HostFacts, ...]  # targeted, active hosts
    unassigned: tuple[HostFacts, ...]  # of those, not yet given a patch order


def count(
    spec: CampaignSpec,
    record: CampaignRecord,
    hosts: Iterable[Host],
    assignments: Sequence[Assignment],
    now: datetime,
    watching_since: datetime | None = None,
) -> Count:
    """Count the campaign's hosts. ``watching_since`` is when this controller
    started (silence is measured from then at the earliest: see
    `campaigns.lifecycle`)."""
    patch = {a.host_id: a for a in assignments if a.kind == "patch"}
    cells: dict[tuple[int, str], Counter[str]] = {}
    eligible, unassigned = [], []
    for host in hosts:
        if host.status is not HostStatus.ACTIVE:
            continue
        facts = host_facts(host)
        if not is_targeted(spec, facts):
            continue
        eligible.append(facts)
        counter = cells.setdefault((host.ring, host.region), Counter())
        counter["eligible"] += 1
        silent = host_silent(spec, host.last_seen, watching_since, now)
        order = patch.get(host.host_id)
        if order is None:
            unassigned.append(facts)
            counter["unreachable"] += silent
            continue
        counter[_COUNTED[order.status]] += 1
        counter["silent"] += silent
    finished_at: dict[int, datetime] = {}
    tallies = Tallies(
        CampaignState(record.state),
        {key: CellTally(**c) for key, c in cells.items()},
        accepted_failures=record.accepted_failures,
        accepted_silent=record.accepted_silent,
    )
    for a in patch.values():
        if a.finished_at is not None and tallies.ring(a.ring).done:
            finished_at[a.ring] = max(finished_at.get(a.ring, a.finished_at), a.finished_at)
    tallies = Tallies(
        tallies.state,
        tallies.cells,
        finished_at,
        tallies.accepted_failures,
        tallies.accepted_silent,
    )
    return Count(tallies, tuple(eligible), tuple(unassigned))
