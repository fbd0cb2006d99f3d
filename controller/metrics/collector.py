"""State metrics read from the controller's kept counts at scrape time.

A scrape never reads the fleet: the campaign engine keeps each open
campaign's counts per ring and region as hosts move (`campaigns.live`),
and `Presence` keeps the hosts by ring, region and status. A scrape reads
one `Snapshot` of those, taken on the event loop that owns them (they are
not thread-safe; the HTTP listener is a thread of its own), and turns it
into metric families: its cost grows with campaigns and rings, never
with hosts.

Labels are bounded: campaign (open campaigns only: a finished one drops
out of the per-campaign families and stays in `fleetpatch_campaigns`),
ring, region, status, state. Never a host id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.campaigns import CampaignSpec, CampaignState, CellTally, Tallies
from controller.metrics.presence import PresenceFigures

# What each count of a campaign's hosts means: `campaigns.tallies`.
HOST_COUNTS = (
    "eligible", "in_flight", "succeeded", "failed", "reverted", "revert_failed", "timed_out",
    "unreachable", "silent",
)  # fmt: skip


@dataclass(frozen=True)
class CampaignFigures:
    campaign_id: str
    spec: CampaignSpec
    tallies: Tallies


@dataclass(frozen=True)
class LoadFigures:
    """The controller's load and push (controller.api.limits, .push)."""

    shed: int  # calls refused for overall load, since the start
    capacity: float  # light calls a second it serves while busy, as measured
    streams: int  # open Watch streams (connected hosts)
    nudges: int  # nudges sent, since the start
    waiting: int  # hosts nudged, waiting for their turn (the pace)
    # Check-ins answered from memory and written behind, since the start
    # (counted by controller.store.heartbeats, read here: none per call).
    written_behind: int = 0


@dataclass(frozen=True)
class Snapshot:
    campaigns: tuple[CampaignFigures, ...]  # the open campaigns
    states: Mapping[CampaignState, int]  # every campaign, by state
    presence: PresenceFigures
    load: LoadFigures | None = None


class StateCollector(Collector):
    """``read`` returns the current `Snapshot`; it may raise TimeoutError
    when the controller is too busy to answer, and the scrape then fails
    (Prometheus marks it down) rather than show stale figures."""

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families are known only when read

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        yield from _campaign_families(snap)
        yield from _host_families(snap.presence)
        if snap.load is not None:
            yield from _load_families(snap.load)


def _campaign_families(snap: Snapshot) -> Iterator[Metric]:
    by_state = GaugeMetricFamily("fleetpatch_campaigns", "Campaigns by state.", labels=["state"])
    for state in CampaignState:
        by_state.add_metric([state.value], snap.states.get(state, 0))
    yield by_state
    states = GaugeMetricFamily(
        "fleetpatch_campaign_state",
        "1 for the state each open campaign is in (running, paused, halted; aborted while "
        "it still hands out reverts).",
        labels=["campaign", "name", "state"],
    )
    hosts = GaugeMetricFamily(
        "fleetpatch_campaign_hosts",
        "An open campaign's targeted hosts per ring, by how far each got "
        "(the counts the scheduler decides from).",
        labels=["campaign", "ring", "status"],
    )
    success = GaugeMetricFamily(
        "fleetpatch_campaign_success_ratio",
        "Succeeded / finished hosts of an open campaign (M1; absent until one finished).",
        labels=["campaign"],
    )
    patched = GaugeMetricFamily(
        "fleetpatch_campaign_patched_ratio",
        "Succeeded / targeted hosts of an open campaign: its coverage so far.",
        labels=["campaign"],
    )
    canary = GaugeMetricFamily(
        "fleetpatch_campaign_canary_failure_ratio",
        "Failed / finished hosts of the campaign's first ring (M3; absent until one finished).",
        labels=["campaign", "ring"],
    )
    budget = GaugeMetricFamily(
        "fleetpatch_campaign_ring_failure_budget",
        "Failures a ring may have before the campaign halts (its gate's budget of its "
        "targeted hosts, plus failures a person accepted on resume).",
        labels=["campaign", "ring"],
    )
    failures = GaugeMetricFamily(
        "fleetpatch_campaign_ring_failures",
        "Failures of a ring as its budget counts them (failed, reverted, revert_failed, "
        "timed_out).",
        labels=["campaign", "ring"],
    )
    for figures in snap.campaigns:
        cid, spec, tallies = figures.campaign_id, figures.spec, figures.tallies
        states.add_metric([cid, spec.name, tallies.state.value], 1)
        total = CellTally()
        for stage in spec.rollout.rings:
            ring = tallies.ring(stage.ring)
            total = total + ring
            label = str(stage.ring)
            for name in HOST_COUNTS:
                hosts.add_metric([cid, label, name], getattr(ring, name))
            limit = stage.gate.failure_budget.floor_of(ring.eligible)
            budget.add_metric([cid, label], limit + tallies.accepted_failures.get(stage.ring, 0))
            failures.add_metric([cid, label], ring.failures)
        if total.finished:
            success.add_metric([cid], total.succeeded / total.finished)
        if total.eligible:
            patched.add_metric([cid], total.succeeded / total.eligible)
        first = spec.rollout.rings[0].ring
        canaries = tallies.ring(first)
        if canaries.finished:
            canary.add_metric([cid, str(first)], canaries.failures / canaries.finished)
    yield from (states, hosts, success, patched, canary, budget, failures)


def _host_families(presence: PresenceFigures) -> Iterator[Metric]:
    hosts = GaugeMetricFamily(
        "fleetpatch_hosts", "Enrolled hosts by ring, region and status.",
        labels=["ring", "region", "status"],
    )  # fmt: skip
    for (ring, region, status), n in sorted(presence.hosts.items()):
        hosts.add_metric([str(ring), region, status.value], n)
    yield hosts
    yield GaugeMetricFamily(
        "fleetpatch_hosts_active", "Active hosts (enrolled, not revoked).", presence.active
    )
    yield GaugeMetricFamily(
        "fleetpatch_hosts_reporting",
        "Active hosts that checked in within two check-in intervals (M8: divide by "
        "fleetpatch_hosts_active).",
        presence.reporting,
    )


def _load_families(load: LoadFigures) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "fleetpatch_calls_shed", "Calls refused for overall load, with a retry delay.", load.shed
    )
    yield GaugeMetricFamily(
        "fleetpatch_capacity_light_calls_per_second",
        "Light calls (a check-in without inventory) a second the controller was measured to "
        "serve while busy; shed callers' slots and the nudges' first window follow it.",
        load.capacity,
    )
    yield GaugeMetricFamily(
        "fleetpatch_watch_streams", "Open Watch streams: hosts that push reaches.", load.streams
    )
    yield CounterMetricFamily("fleetpatch_nudges", "Nudges sent to Watch streams.", load.nudges)
    yield GaugeMetricFamily(
        "fleetpatch_nudges_waiting",
        "Hosts nudged that wait for their turn (nudges are paced to what the controller serves).",
        load.waiting,
    )
    yield CounterMetricFamily(
        "fleetpatch_checkins_written_behind",
        "Check-ins that brought nothing new, answered at once and written behind"
        " ([checkin] write_behind).",
        load.written_behind,
    )
