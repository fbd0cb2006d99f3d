"""controller.metrics: the kept host presence, the collector's families
from a campaign's kept counts, the event instruments, and the listener."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.api.limits import Admission, Capacity
from controller.api.push import NUDGED_UNITS, Watchers
from controller.api.server import load_figures
from controller.campaigns import CampaignState, HostFacts, parse_campaign
from controller.campaigns.live import LiveCount
from controller.errors import Overloaded, UsageError
from controller.metrics import listener
from controller.metrics.collector import CampaignFigures, Snapshot, StateCollector
from controller.metrics.instruments import Metrics
from controller.metrics.presence import Presence, PresenceFigures
from controller.model import AssignmentKind, AssignmentStatus, Host, HostStatus
from controller.store import Store
from controller.store.heartbeats import Heartbeats
from controller.store.thread import StoreThread

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition, parsed back as Prometheus would."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- presence -------------------------------------------------------------------


def test_presence_counts_hosts_by_ring_region_and_status_as_they_change():
    p = Presence(timedelta(minutes=5))
    p.load([
        Host("h1", "eu", 0, HostStatus.ACTIVE, T0, last_seen=T0),
        Host("h2", "eu", 0, HostStatus.REVOKED, T0),
        Host("h3", "us", 1, HostStatus.PENDING, T0),
    ])  # fmt: skip
    p.enrolled("h4", 1, "us")
    p.activated("h3", 1, "us")
    p.revoked("h1")
    p.forgotten("h4")
    p.seen("h5", 2, "us", T0)  # active and checking in, unknown at start: counted
    figures = p.figures(T0)
    assert figures.hosts == {
        (0, "eu", HostStatus.REVOKED): 2,
        (1, "us", HostStatus.ACTIVE): 1,
        (2, "us", HostStatus.ACTIVE): 1,
    }
    assert figures.active == 2
    assert figures.reporting == 1  # h3 is active but never checked in


def test_a_relabelled_host_is_counted_in_its_new_cell():
    p = Presence(timedelta(minutes=5))
    p.load([Host("h1", "eu", 0, HostStatus.ACTIVE, T0, last_seen=T0)])
    p.moved("h1", 2, "us")
    p.moved("h-unknown", 1, "eu")  # not in the fleet: nothing to move
    figures = p.figures(T0)
    assert figures.hosts == {(2, "us", HostStatus.ACTIVE): 1}
    assert figures.reporting == 1


def test_presence_reporting_means_seen_within_two_intervals():
    p = Presence(timedelta(minutes=4))
    p.seen("before-load", 0, "eu", T0)  # nothing is kept before load
    p.load([])
    for i in range(10):
        p.seen(f"h{i}", 0, "eu", T0 - i * MIN)  # h0 now .. h9 nine minutes ago
    # Two intervals are 8 minutes; buckets are a minute wide: 8 or 9 counted.
    assert p.figures(T0).reporting in (8, 9)
    assert p.figures(T0 + 30 * MIN).reporting == 0
    # Old buckets were merged away; a host seen again moves out of them.
    p.seen("h9", 0, "eu", T0 + 30 * MIN)
    later = p.figures(T0 + 30 * MIN)
    assert (later.active, later.reporting) == (10, 1)
    p.revoked("h9")
    assert p.figures(T0 + 30 * MIN).reporting == 0
    assert p.figures(T0 + 30 * MIN).active == 9


# -- the collector ----------------------------------------------------------------

SPEC = """
[campaign]
name = "kernel-june"

[patch]
packages = [{ name = "linux-image-amd64" }]

[rollout]
rings = [
  { ring = 0, concurrency = "100%", gate = { failure_budget = 1 } },
  { ring = 1, concurrency = "50%", gate = { failure_budget = "10%" } },
]
"""


def _facts(host_id: str, ring: int, region: str) -> HostFacts:
    return HostFacts(host_id, region, ring, {}, "debian", "UTC", T0, "1.0")


def _campaign() -> LiveCount:
    """Ring 0: 4 hosts, 2 succeeded, 1 reverted, 1 in flight; ring 1: 20 waiting."""
    spec = parse_campaign(SPEC, "c-1")
    hosts = [_facts(f"r0-{i}", 0, "eu") for i in range(4)]
    hosts += [_facts(f"r1-{i}", 1, "us" if i % 2 else "eu") for i in range(20)]
    live = LiveCount.build(spec, CampaignState.RUNNING, {}, {}, hosts, [], None, T0)
    for i in range(4):
        live.assigned(f"r0-{i}", f"o-{i}", AssignmentKind.PATCH, 0, T0)
    live.finished("o-0", AssignmentStatus.SUCCEEDED, T0)
    live.finished("o-1", AssignmentStatus.SUCCEEDED, T0)
    live.finished("o-2", AssignmentStatus.REVERTED, T0)
    return live


def test_the_collector_reads_the_kept_counts():
    live = _campaign()
    figures = CampaignFigures("c-1", live.spec, live.tallies(T0))
    presence = PresenceFigures({(0, "eu", HostStatus.ACTIVE): 4}, 4, 3)
    snap = Snapshot((figures,), {CampaignState.RUNNING: 1, CampaignState.COMPLETED: 2}, presence)
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: snap))
    got = _samples(registry)

    def value(metric: str, **labels: str) -> float:
        return got[(metric, tuple(sorted(labels.items())))]

    assert value("fleetpatch_campaigns", state="running") == 1
    assert value("fleetpatch_campaigns", state="completed") == 2
    assert value("fleetpatch_campaigns", state="halted") == 0
    assert value("fleetpatch_campaign_state", campaign="c-1", name="kernel-june",
                 state="running") == 1  # fmt: skip
    assert value("fleetpatch_campaign_hosts", campaign="c-1", ring="0", status="eligible") == 4
    assert value("fleetpatch_campaign_hosts", campaign="c-1", ring="0", status="succeeded") == 2
    assert value("fleetpatch_campaign_hosts", campaign="c-1", ring="0", status="reverted") == 1
    assert value("fleetpatch_campaign_hosts", campaign="c-1", ring="0", status="in_flight") == 1
    assert value("fleetpatch_campaign_hosts", campaign="c-1", ring="1", status="eligible") == 20
    assert value("fleetpatch_campaign_success_ratio", campaign="c-1") == pytest.approx(2 / 3)
    assert value("fleetpatch_campaign_patched_ratio", campaign="c-1") == pytest.approx(2 / 24)
    assert value("fleetpatch_campaign_canary_failure_ratio", campaign="c-1",
                 ring="0") == pytest.approx(1 / 3)  # fmt: skip
    assert value("fleetpatch_campaign_ring_failures", campaign="c-1", ring="0") == 1
    assert value("fleetpatch_campaign_ring_failure_budget", campaign="c-1", ring="0") == 1
    assert value("fleetpatch_campaign_ring_failure_budget", campaign="c-1", ring="1") == 2
    assert value("fleetpatch_hosts", ring="0", region="eu", status="active") == 4
    assert value("fleetpatch_hosts_active") == 4
    assert value("fleetpatch_hosts_reporting") == 3
    # No label carries a host id: the only label values are these.
    values = {v for (_, labels) in got for _, v in labels}
    assert not any(v.startswith("r0-") or v.startswith("r1-") for v in values)


def test_ratios_are_absent_until_a_host_finished():
    spec = parse_campaign(SPEC, "c-2")
    live = LiveCount.build(spec, CampaignState.RUNNING, {}, {}, [_facts("a", 0, "eu")], [],
                           None, T0)  # fmt: skip
    snap = Snapshot((CampaignFigures("c-2", spec, live.tallies(T0)),), {},
                    PresenceFigures({}, 0, 0))  # fmt: skip
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: snap))
    names = {name for name, _ in _samples(registry)}
    assert "fleetpatch_campaign_hosts" in names
    assert "fleetpatch_campaign_success_ratio" not in names
    assert "fleetpatch_campaign_canary_failure_ratio" not in names


def test_the_load_and_push_figures_are_read_from_admission_and_the_streams(tmp_path: Path):
    """Calls shed, the measured capacity, open streams, nudges sent, hosts
    waiting for theirs and check-ins written behind, as a scrape reads them
    from a live controller's `Admission`, `Watchers` and `Heartbeats`."""

    async def scenario() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        admission = Admission(max_in_flight=1, capacity=Capacity(per_second=20 * NUDGED_UNITS))
        watchers = Watchers(admission)
        for n in range(30):  # a window of 20 of them
            watchers.open(f"h-{n}")
        watchers.nudge(None, "campaign")
        with (
            admission.admit("h-0", "CheckIn"),
            contextlib.suppress(Overloaded),
            admission.admit("h-1", "CheckIn"),  # over the room of one: shed
        ):
            pass
        beats = Heartbeats(db)  # not flushed: counted as answered
        for n in range(3):
            beats.accept(f"h-{n}", datetime.now(UTC), {}, {})
        snap = Snapshot((), {}, PresenceFigures({}, 0, 0), load_figures(admission, watchers, beats))
        registry = CollectorRegistry()
        registry.register(StateCollector(lambda: snap))
        watchers.close_all()
        return _samples(registry)

    db = StoreThread(Store.open(tmp_path / "controller.db"))
    try:
        got = asyncio.run(scenario())
    finally:
        db.close()
    assert got[("fleetpatch_calls_shed_total", ())] == 1
    assert got[("fleetpatch_capacity_light_calls_per_second", ())] == 20 * NUDGED_UNITS
    assert got[("fleetpatch_watch_streams", ())] == 30
    assert got[("fleetpatch_nudges_total", ())] == 20
    assert got[("fleetpatch_nudges_waiting", ())] == 10
    assert got[("fleetpatch_checkins_written_behind_total", ())] == 3


# -- instruments ------------------------------------------------------------------


def test_apply_to_verified_runs_from_the_apply_report_to_a_verified_result():
    metrics = Metrics(Presence(timedelta(minutes=5)))
    metrics.reported("o-1", "PRECHECK", T0)
    metrics.reported("o-1", "APPLY", T0 + MIN)
    metrics.reported("o-1", "APPLY", T0 + 2 * MIN)  # a retried report: the first counts
    metrics.finished("o-1", AssignmentKind.PATCH, AssignmentStatus.SUCCEEDED, T0 + 4 * MIN)
    metrics.reported("o-2", "APPLY", T0)
    metrics.finished("o-2", AssignmentKind.PATCH, AssignmentStatus.REVERTED, T0 + MIN)
    metrics.finished("o-3", AssignmentKind.REVERT, AssignmentStatus.SUCCEEDED, T0)
    metrics.halted("failure_budget")
    got = _samples(metrics.registry)
    assert got[("fleetpatch_apply_to_verified_seconds_count", ())] == 1
    assert got[("fleetpatch_apply_to_verified_seconds_sum", ())] == 180
    assert got[("fleetpatch_apply_to_verified_seconds_bucket", (("le", "120.0"),))] == 0
    assert got[("fleetpatch_apply_to_verified_seconds_bucket", (("le", "300.0"),))] == 1
    results = "fleetpatch_order_results_total"
    assert got[(results, (("kind", "patch"), ("status", "reverted")))] == 1
    assert got[(results, (("kind", "revert"), ("status", "succeeded")))] == 1
    assert got[(results, (("kind", "patch"), ("status", "timed_out")))] == 0
    assert got[("fleetpatch_campaign_halts_total", (("kind", "failure_budget"),))] == 1
    assert got[("fleetpatch_campaign_halts_total", (("kind", "silent_hosts"),))] == 0


# -- the listener -------------------------------------------------------------------


def test_the_listener_serves_the_registry_and_a_busy_port_is_one_clear_error():
    metrics = Metrics(Presence(timedelta(minutes=5)))
    metrics.halted("silent_hosts")
    served = listener.listen("127.0.0.1:0", metrics.registry)
    try:
        url = f"http://{served.address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = answer.read().decode()
        assert 'fleetpatch_campaign_halts_total{kind="silent_hosts"} 1.0' in body
        with pytest.raises(UsageError, match=r"^cannot listen for metrics on .*in use"):
            listener.listen(served.address, metrics.registry)
    finally:
        served.close()
    with socket.socket() as probe:  # closed: the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(served.address.rsplit(":", 1)[1])))
