"""The campaign engine at run time, in-process over a real SQLite store and a
fake clock: assignments, results, halts, resumes, time-outs, restarts and
aborts, with no sleeps. (tests/integration/test_rehearsal_differential.py
runs whole campaigns through it against the simulator.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fleetpatch.v1 import types_pb2

from controller import audit
from controller.audit import AuditEntry
from controller.campaigns import CampaignState
from controller.errors import Conflict
from controller.fleet.relabel import Relabel
from controller.rollout.engine import CampaignEngine
from controller.rollout.tally import host_facts
from tests.support.engine import Fleet, check_in, engine_fleet

CAMPAIGN = """
[campaign]
name = "engine"

[patch]
packages = ["openssl"]

[rollout]
region_order = "parallel"
silent_after = "20m"
report_timeout = "45m"
silent_threshold = 0
rings = [
  {{ ring = 0, concurrency = "100%", gate = {{ failure_budget = {budget} }} }},
  {{ ring = 1, concurrency = "100%" }},
]
"""
MIN = timedelta(minutes=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(tmp_path, request) -> Iterator[Fleet]:
    """The campaign engine over each store backend (the contract, end to end)."""
    url = request.getfixturevalue("postgres_emptied_url") if request.param != "sqlite" else ""
    with engine_fleet(tmp_path, url) as fleet:
        yield fleet


def _campaign(fleet: Fleet, budget: int = 0) -> str:
    record = fleet.run(fleet.live.create(CAMPAIGN.format(budget=budget), "e.toml", "admin:t"))
    fleet.run(fleet.live.approve(record.campaign_id, "admin:t"))
    return record.campaign_id


def test_a_ring_opens_when_the_one_before_has_met_its_gate(fleet):
    first, second = fleet.enroll((0, "eu"), (1, "eu"))
    campaign = _campaign(fleet)
    assert fleet.check_in(second) is None  # ring 1 waits for ring 0
    order = fleet.check_in(first)
    assert order is not None
    fleet.report(first, order.order_id, "SUCCEEDED", final=True)
    later = fleet.check_in(second)
    assert later is not None
    fleet.report(second, later.order_id, "SUCCEEDED", final=True)
    assert fleet.show(campaign)["state"] == CampaignState.COMPLETED
    assert fleet.run(fleet.live.check_counts(campaign)) == []


def test_a_breached_budget_halts_and_a_resume_accepts_what_halted_it(fleet):
    hosts = fleet.enroll((0, "eu"), (0, "eu"), (0, "eu"))
    campaign = _campaign(fleet, budget=0)
    orders = {h: fleet.check_in(h) for h in hosts}
    first = hosts[0]
    fleet.report(first, orders[first].order_id, "REVERTED", final=True)
    shown = fleet.show(campaign)
    assert shown["state"] == CampaignState.HALTED
    assert shown["halt_kind"] == "failure_budget"
    fleet.run(fleet.live.resume(campaign, "admin:t"))
    second = hosts[1]
    fleet.report(second, orders[second].order_id, "SUCCEEDED", final=True)
    assert fleet.show(campaign)["state"] == CampaignState.RUNNING  # the accepted one is not counted
    third = hosts[2]
    fleet.report(third, orders[third].order_id, "FAILED", final=True)
    assert fleet.show(campaign)["state"] == CampaignState.HALTED  # one more is over the budget


def test_silence_and_time_outs_count_from_a_restart(fleet):
    busy, idle = fleet.enroll((0, "eu"), (1, "eu"))  # idle: ring 1 waits for ring 0
    campaign = _campaign(fleet, budget=5)
    order = fleet.check_in(busy)
    assert order is not None
    fleet.check_in(idle)
    fleet.clock.advance(2 * 60 * MIN)  # the controller is down two hours
    fleet.restart()
    fleet.tick()
    shown = fleet.show(campaign)
    assert shown["state"] == CampaignState.RUNNING
    assert (shown["timed_out"], shown["silent"], shown["unreachable"]) == (0, 0, 0)
    fleet.clock.advance(46 * MIN)  # past report_timeout and silent_after, from the restart
    fleet.tick()
    shown = fleet.show(campaign)
    assert shown["timed_out"] == 1  # counted as a failure (budget 5: no halt)
    assert shown["unreachable"] == 1  # the idle host never came back
    assert shown["silent"] == 1  # nor did the busy one
    assert fleet.run(fleet.live.check_counts(campaign)) == []


def test_without_a_restart_an_outage_of_reports_times_orders_out(fleet):
    (busy,) = fleet.enroll((0, "eu"))
    campaign = _campaign(fleet, budget=0)
    order = fleet.check_in(busy)
    assert order is not None
    fleet.clock.advance(46 * MIN)
    fleet.tick()
    shown = fleet.show(campaign)
    assert shown["timed_out"] == 1
    assert shown["state"] == CampaignState.HALTED


def test_an_aborted_revert_campaign_reverts_each_patched_host_once(fleet):
    patched, untouched = fleet.enroll((0, "eu"), (1, "eu"))
    campaign = _campaign(fleet)
    order = fleet.check_in(patched)
    assert order is not None
    fleet.report(patched, order.order_id, "SUCCEEDED", final=True)
    fleet.run(fleet.live.abort(campaign, "admin:t", revert=True))
    revert = fleet.check_in(patched)
    assert revert is not None
    assert revert.revert_order_id == order.order_id
    assert fleet.check_in(untouched) is None  # never patched: nothing to revert
    fleet.report(patched, revert.order_id, "SUCCEEDED", final=True)
    assert fleet.check_in(patched) is None  # once


def test_hosts_owing_a_reboot_or_restarts_count_as_patched_and_show_apart(fleet):
    hosts = fleet.enroll((0, "eu"), (0, "eu"), (0, "eu"))
    campaign = _campaign(fleet)
    for host, final in zip(hosts, ["SUCCEEDED", "PENDING_REBOOT", "PENDING_RESTART"], strict=True):
        order = fleet.check_in(host)
        assert order is not None
        assert order.restart_services == types_pb2.RESTART_POLICY_AUTO  # the default
        fleet.report(host, order.order_id, final, final=True)
    assert fleet.show(campaign)["state"] == CampaignState.COMPLETED
    _, cells = fleet.run(fleet.live.view(campaign))
    assert [(c.counts["succeeded"], c.counts["pending_reboot"], c.counts["pending_restart"])
            for c in cells] == [(3, 1, 1)]  # fmt: skip
    # `hosts list` shows what each host owes (and nothing for the one that owes nothing).
    assert fleet.store.owed_by(hosts) == {hosts[1]: ["reboot"], hosts[2]: ["restart"]}


def _actions(fleet: Fleet, campaign_id: str) -> list[str]:
    records = fleet.store.audit_records()
    return [r.entry.action for r in records if r.entry.target == campaign_id]


def test_asking_for_a_state_a_campaign_is_in_succeeds_unchanged_and_unaudited(fleet):
    fleet.enroll((0, "eu"))
    campaign = _campaign(fleet)
    fleet.run(fleet.live.approve(campaign, "admin:t"))  # approved twice: still running
    fleet.run(fleet.live.pause(campaign, "admin:t"))
    assert fleet.run(fleet.live.pause(campaign, "admin:t")).state == CampaignState.PAUSED
    fleet.run(fleet.live.resume(campaign, "admin:t"))
    assert fleet.run(fleet.live.resume(campaign, "admin:t")).state == CampaignState.RUNNING
    fleet.run(fleet.live.abort(campaign, "admin:t", revert=True))
    again = fleet.run(fleet.live.abort(campaign, "admin:t", revert=True))
    assert again.state == CampaignState.ABORTED
    assert again.revert_requested
    assert _actions(fleet, campaign) == [
        "campaign.create", "campaign.approve", "campaign.pause", "campaign.resume",
        "campaign.abort",
    ]  # fmt: skip


def test_a_state_a_verb_cannot_reach_from_here_is_a_conflict(fleet):
    fleet.enroll((0, "eu"))
    draft = fleet.run(fleet.live.create(CAMPAIGN.format(budget=0), "e.toml", "admin:t"))
    with pytest.raises(Conflict, match="is draft"):
        fleet.run(fleet.live.pause(draft.campaign_id, "admin:t"))
    fleet.run(fleet.live.abort(draft.campaign_id, "admin:t", revert=False))
    with pytest.raises(Conflict, match="is aborted"):
        fleet.run(fleet.live.resume(draft.campaign_id, "admin:t"))
    with pytest.raises(Conflict, match="aborted without --revert"):
        fleet.run(fleet.live.abort(draft.campaign_id, "admin:t", revert=True))


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED"])
@pytest.mark.parametrize("before_the_report", [True, False])
def test_a_relabelled_host_moves_cells_and_the_kept_counts_agree_with_a_recount(
    fleet, final, before_the_report
):
    """`hosts relabel` of a host with an order in flight, or already done:
    its next check-in moves it; the counts stay what a full recount says."""
    first, _ = fleet.enroll((0, "eu"), (0, "eu"))
    campaign = _campaign(fleet, budget=5)
    order = fleet.check_in(first)
    assert order is not None
    if not before_the_report:
        fleet.report(first, order.order_id, final, final=True)
    fleet.store.relabel_host(first, Relabel({}, ring=1, region="us"), "admin:t", fleet.clock())
    fleet.hosts[first] = dataclasses.replace(fleet.hosts[first], ring=1, region="us")
    fleet.check_in(first)  # as the servicer does: ring and region read from the store
    if before_the_report:
        fleet.report(first, order.order_id, final, final=True)
    assert fleet.run(fleet.live.check_counts(campaign)) == []
    shown = fleet.show(campaign)
    assert shown["eligible"] == 2
    assert shown["succeeded" if final == "SUCCEEDED" else "failed"] == 1
    _, cells = fleet.run(fleet.live.view(campaign))
    assert {(c.ring, c.region): c.counts["eligible"] for c in cells} == {(0, "eu"): 1, (1, "us"): 1}


BUDGETED = """
[campaign]
name = "budgeted"

[patch]
packages = ["openssl"]

[rollout]
rings = [{ ring = 0, concurrency = 4 }]
"""


def test_orders_of_concurrent_check_ins_are_recorded_together_within_the_budget(fleet, monkeypatch):
    """Twenty hosts check in at once: the four the ring's concurrency allows
    get an order, recorded in fewer transactions than orders (group commit),
    each with the host's next sequence, audited, and counted once."""
    hosts = fleet.enroll(*[(0, "eu")] * 20)
    record = fleet.run(fleet.live.create(BUDGETED, "b.toml", "admin:t"))
    fleet.run(fleet.live.approve(record.campaign_id, "admin:t"))
    batches: list[int] = []
    assign_many = fleet.store.assign_many

    def counted(pending):
        batches.append(len(pending))
        return assign_many(pending)

    monkeypatch.setattr(fleet.store, "assign_many", counted)

    async def all_at_once():
        reported = {"os_id": "debian"}
        return await asyncio.gather(*[
            check_in(fleet.db, fleet.live, host_facts(dataclasses.replace(
                fleet.hosts[h], facts=reported)), reported, fleet.clock(), 0)
            for h in hosts
        ])  # fmt: skip

    orders = [o for o in fleet.run(all_at_once()) if o is not None]
    assert len(orders) == 4
    assert sum(batches) == 4
    assert len(batches) < 4, batches
    assert {o.sequence for o in orders} == {1}
    stored = fleet.store.assignments(record.campaign_id)
    assert sorted(a.order_id for a in stored) == sorted(o.order_id for o in orders)
    assert fleet.show(record.campaign_id)["in_flight"] == 4
    assert fleet.run(fleet.live.check_counts(record.campaign_id)) == []
    assigned = [r for r in fleet.store.audit_records() if r.entry.action == "order.assign.patch"]
    assert len(assigned) == 4
    assert audit.verify(fleet.store.audit_records()).ok


def test_an_order_another_replica_recorded_first_is_not_handed_out_and_not_counted(fleet):
    """Two replicas over one store, each with its own counts: the host's
    check-in at the second, which has not counted the first's order yet, is
    refused by the store. It gets nothing, its counts are as before, and
    after a re-read they agree with the store."""
    (host,) = fleet.enroll((0, "eu"))
    record = fleet.run(fleet.live.create(BUDGETED, "b.toml", "admin:t"))
    fleet.run(fleet.live.approve(record.campaign_id, "admin:t"))
    first = fleet.live
    second = CampaignEngine(fleet.db, fleet.key, clock=fleet.clock)
    fleet.run(second.start())
    try:
        order = fleet.check_in(host)  # through the first replica
        assert order is not None
        reported = {"os_id": "debian"}
        facts = host_facts(dataclasses.replace(fleet.hosts[host], facts=reported))
        fleet.engine = second
        before = fleet.show(record.campaign_id)
        assert before["in_flight"] == 0  # it has not seen the first's order
        assert fleet.run(
            check_in(fleet.db, second, facts, reported, fleet.clock(), 0)
        ) is None  # fmt: skip
        assert fleet.show(record.campaign_id) == before
        assert [a.order_id for a in fleet.store.assignments(record.campaign_id)] == [order.order_id]
        fleet.run(second.resync())
        assert fleet.show(record.campaign_id)["in_flight"] == 1
        assert fleet.run(second.check_counts(record.campaign_id)) == []
        assert audit.verify(fleet.store.audit_records()).ok
    finally:
        fleet.engine = first
        fleet.run(second.close())


@dataclasses.dataclass
class FleetReads:
    """How often the fleet is read while an awaitable runs (`during`)."""

    fleet: Fleet
    count: int = 0
    watching: bool = False

    def during(self, awaitable) -> None:
        self.watching = True
        try:
            self.fleet.run(awaitable)
        finally:
            self.watching = False


def _fleet_reads(fleet: Fleet, monkeypatch) -> FleetReads:
    reads = FleetReads(fleet)
    active_places = fleet.store.active_places

    def counted(seen_since=None):
        reads.count += reads.watching and seen_since is None  # the whole fleet
        return active_places(seen_since)

    monkeypatch.setattr(fleet.store, "active_places", counted)
    return reads


OPEN = """
[campaign]
name = "replicated"

[patch]
packages = ["openssl"]

[rollout]
silent_after = "20m"
report_timeout = "45m"
rings = [{ ring = 0, concurrency = "100%" }]
"""


def test_replicas_catch_up_from_the_audit_trail_and_agree_with_a_recount(fleet, monkeypatch):
    """Two replicas over one store, hosts checking in, reporting and being
    revoked through either: after each one's `resync`, its kept counts are
    what a full recount gives (silence included), read from what changed
    (no read of the fleet); a relabel, not followed record by record,
    makes it count again from the store."""
    hosts = fleet.enroll(*[(0, "eu")] * 6)
    record = fleet.run(fleet.live.create(OPEN, "o.toml", "admin:t"))
    fleet.run(fleet.live.approve(record.campaign_id, "admin:t"))
    first = fleet.live
    second = CampaignEngine(fleet.db, fleet.key, clock=fleet.clock)
    fleet.run(second.start())
    fleet.run(first.resync())  # the first counts from its own read, too
    reads = _fleet_reads(fleet, monkeypatch)

    def through(engine: CampaignEngine) -> None:
        fleet.engine = engine

    def agreed() -> None:
        for engine in (first, second):
            reads.during(engine.resync())
            assert fleet.run(engine.check_counts(record.campaign_id)) == []

    try:
        through(first)
        a = fleet.check_in(hosts[0])
        through(second)
        b = fleet.check_in(hosts[1])
        assert a is not None
        assert b is not None
        agreed()
        fleet.report(hosts[1], b.order_id, "SUCCEEDED", final=True)  # at the second
        through(first)
        fleet.report(hosts[0], a.order_id, "FAILED", final=True)
        agreed()
        fleet.clock.advance(timedelta(minutes=15))
        through(second)
        for host in hosts[2:5]:  # seen only by the second; the rest go silent
            fleet.check_in(host)
        fleet.clock.advance(timedelta(minutes=10))
        fleet.check_in(hosts[2])
        agreed()
        fleet.store.revoke_host(hosts[3], fleet.clock())
        fleet.store.append_audit(
            AuditEntry(fleet.clock(), "admin:t", "host.revoke", hosts[3], "ok")
        )
        agreed()
        assert reads.count == 0  # every resync so far caught up from what changed
        fleet.store.relabel_host(hosts[4], Relabel({}, region="us"), "admin:t", fleet.clock())
        agreed()
        assert reads.count > 0  # counted again from the store
        shown = [fleet.show(record.campaign_id) for fleet.engine in (first, second)]
        assert shown[0] == shown[1]
    finally:
        through(first)
        fleet.run(second.close())
