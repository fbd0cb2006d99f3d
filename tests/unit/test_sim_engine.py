"""The simulator's engine: deterministic for a seed, counting exactly as the
controller counts, and driven by the controller's own policy code."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.campaigns import CampaignSpec, CampaignState, GateStatus, parse_campaign, scheduler
from controller.model import (
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    Host,
    HostStatus,
)
from controller.rollout.tally import count
from simulator.engine import Settings, Simulation
from simulator.failures import FailureModel, Odds, Outage, Rule, Selector, When
from simulator.fleet import FleetHost, FleetSpec, RegionSpec, generate
from simulator.report import to_json
from simulator.scenario import Operator

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 12, 5, tzinfo=UTC)  # a Saturday

CAMPAIGN = """
[campaign]
name = "engine-test"

[patch]
packages = ["openssl"]

[verify]
timeout = "5m"

[rollout]
region_order = "{order}"
silent_after = "20m"
report_timeout = "40m"
rings = [
  {{ ring = 0, concurrency = 2, gate = {{ min_success = 1.0, bake = "1h", failure_budget = 1 }} }},
  {{ ring = 1, concurrency = "10%", gate = {{ min_success = 0.9, failure_budget = "10%" }} }},
  {{ ring = 2, concurrency = "20%", region_concurrency = "15%" }},
]
{windows}
"""
WINDOWS = """
[windows]
timezone = "host-local"
weekly = ["Mon-Sun 01:00-07:00"]
cutoff = "30m"
"""


def campaign(order: str = "parallel", windows: bool = True) -> CampaignSpec:
    text = CAMPAIGN.format(order=order, windows=WINDOWS if windows else "")
    return parse_campaign(text, "engine-test.toml")


def fleet(hosts: int = 600, offline: float = 0.0, seed: int = 3) -> list[FleetHost]:
    spec = FleetSpec(
        hosts=hosts,
        regions=(RegionSpec("eu", "Europe/Berlin", 1), RegionSpec("us", "America/Chicago", 1)),
        rings=((0, 2), (1, 18), (2, 80)),
        os_mix=(("debian", 1),),
        labels=(),
        checkin_interval=timedelta(minutes=5),
        campaign_tick=timedelta(seconds=10),
        offline=offline,
    )
    return generate(spec, random.Random(seed), START)


def settings(seed: int = 1, days: int = 4, **changes: object) -> Settings:
    base = Settings(
        name="t", start=START, duration=timedelta(days=days), horizon=timedelta(days=days),
        checkin_interval=timedelta(minutes=5), campaign_tick=timedelta(seconds=10), seed=seed,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


FAILURES = FailureModel(
    base=Odds(apply=0.01, regress=0.02, revert=0.2, precheck=0.01, dark=0.005),
    outages=(
        Outage(Selector(regions=frozenset({"us"})), 0.3, When(timedelta(hours=30)),
               When(timedelta(hours=34))),
        Outage(Selector(rings=frozenset({2})), 0.01, When(timedelta(hours=40)), None),
    ),
)  # fmt: skip


def test_the_same_seed_gives_the_same_run():
    runs = [Simulation(campaign(), fleet(), FAILURES, settings(seed=5)).run() for _ in range(2)]
    assert runs[0] == runs[1]
    docs = [json.dumps(to_json(run, None, ""), sort_keys=True) for run in runs]
    assert docs[0] == docs[1]
    other = Simulation(campaign(), fleet(), FAILURES, settings(seed=6)).run()
    assert other != runs[0]


def _controller_rows(sim: Simulation, now: int) -> tuple[list[Host], list[Assignment]]:
    """What the controller's store would hold at ``now`` for the simulated fleet."""
    interval = sim._interval
    hosts, assignments = [], []
    for h in sim.hosts:
        if h.reachable and not h.busy and h.last_seen is not None:
            seen: int | None = h.anchor + (now - h.anchor) // interval * interval
        else:
            seen = h.last_seen
        hosts.append(
            Host(
                host_id=h.facts.host_id, region=h.cell[1], ring=h.ring, status=HostStatus.ACTIVE,
                enrolled_at=START, labels=h.facts.labels,
                last_seen=None if seen is None else sim.to_datetime(seen),
                facts={"os_id": h.facts.os_id, "timezone": h.facts.timezone},
            )
        )  # fmt: skip
        if h.ctl is not None:
            final = h.ctl is not AssignmentStatus.IN_FLIGHT
            assignments.append(
                Assignment(
                    order_id=f"o-{h.index}", campaign_id="c", host_id=h.facts.host_id,
                    kind=AssignmentKind.PATCH, ring=h.ring, region=h.cell[1], sequence=1,
                    envelope=b"",
                    status=h.ctl, assigned_at=sim.to_datetime(h.assigned_at),
                    last_report_at=sim.to_datetime(h.last_report_at),
                    finished_at=sim.to_datetime(h.finished_at) if final else None,
                )
            )  # fmt: skip
    return hosts, assignments


@pytest.mark.parametrize("stop_hours", [0.5, 7, 31, 33.5, 41, 60])
def test_the_counts_are_the_controllers_counts(stop_hours):
    """Stop a run midway and count its fleet the way the controller counts
    its rows (`controller.tally.count`): the same tallies, to the cell."""
    spec = campaign()
    sim = Simulation(spec, fleet(offline=0.02), FAILURES, settings(seed=2))
    sim.run(stop_at=timedelta(hours=stop_hours))
    now = sim.now
    mine = sim.counts.snapshot()
    record = CampaignRecord(
        campaign_id="c", name=spec.name, spec="", state=mine.state, created_at=START,
        created_by="t", updated_at=START, accepted_failures=mine.accepted_failures,
        accepted_silent=mine.accepted_silent,
    )  # fmt: skip
    hosts, assignments = _controller_rows(sim, now)
    theirs = count(spec, record, hosts, assignments, sim.to_datetime(now)).tallies
    assert dict(mine.cells) == dict(theirs.cells)
    assert dict(mine.ring_finished_at) == dict(theirs.ring_finished_at)
    for ring in (0, 1, 2):
        assert mine.ring(ring) == theirs.ring(ring)
    assert sim.in_flight == sum(t.in_flight for t in theirs.cells.values())


def test_a_run_stopped_midway_goes_on_to_the_same_end():
    whole = Simulation(campaign(), fleet(), FAILURES, settings(seed=4)).run()
    sim = Simulation(campaign(), fleet(), FAILURES, settings(seed=4))
    sim.run(stop_at=timedelta(hours=20))
    assert sim.resume() == whole


def test_a_change_of_rollout_policy_changes_the_rehearsal(monkeypatch):
    """The simulator asks the controller's own gate: open every ring at once
    and ring 2 starts at the beginning instead of after rings 0 and 1."""
    spec = campaign(windows=False)
    before = Simulation(spec, fleet(), FailureModel(), settings()).run()
    assert before.rings[2].t50 is not None
    assert before.rings[2].t50 > timedelta(hours=2)
    monkeypatch.setattr(scheduler, "ring_open", lambda *a: GateStatus(met=True))
    after = Simulation(spec, fleet(), FailureModel(), settings()).run()
    assert after.rings[2].t50 is not None
    assert after.rings[2].t50 < timedelta(hours=1)


def test_concurrency_is_never_exceeded_and_is_used():
    spec = campaign(windows=False)
    sim = Simulation(spec, fleet(2000), FailureModel(), settings(days=2))
    peak = {0: 0, 1: 0, 2: 0}
    peak_cell: dict[tuple[int, str], int] = {}
    assign = sim._assign

    def spy(host, decision):
        assign(host, decision)
        tallies = sim.counts.snapshot()
        peak[host.ring] = max(peak[host.ring], tallies.ring(host.ring).in_flight)
        cell = tallies.cell(*host.cell).in_flight
        peak_cell[host.cell] = max(peak_cell.get(host.cell, 0), cell)

    sim._assign = spy  # type: ignore[method-assign]
    out = sim.run()
    assert out.state == "completed"
    eligible = {row.ring: row.hosts for row in out.rings}
    assert peak[0] == 2
    assert peak[1] == -(-eligible[1] // 10)  # 10%, rounded up: reached, never passed
    cells = {(r.ring, r.region): r.hosts for r in out.rows}
    for region in ("eu", "us"):
        # ring 2: 20% of the ring, and 15% of each region's share of it
        assert peak_cell[(2, region)] == -(-cells[(2, region)] * 15 // 100)
    assert peak[2] <= -(-eligible[2] // 5)


def test_a_halt_stops_assignments_and_a_resume_accepts_what_halted_it():
    spec = campaign(windows=False)
    broken = FailureModel(base=Odds(regress=1.0))
    halted = Simulation(spec, fleet(), broken, settings()).run()
    assert halted.state == CampaignState.HALTED.value
    assert halted.halts[0].ring == 0
    assert halted.halts[0].kind == "failure_budget"
    # Two at a time, budget 1: the first revert frees a slot for a third host;
    # the second revert halts; the third, in flight then, finishes and counts.
    assert halted.total.reverted == 3
    assert halted.total.unpatched == 600 - 3
    assert halted.rings_untouched == (1, 2)
    resumed = Simulation(
        spec, fleet(), broken, settings(operator=Operator(timedelta(hours=1), 1))
    ).run()
    assert [h.ring for h in resumed.halts] == [0, 0]  # resumed once, then halted again
    assert resumed.resumes == (resumed.halts[0].after + timedelta(hours=1),)


def test_unreachable_hosts_are_excused_but_keep_the_campaign_running():
    spec = campaign(windows=False)
    out = Simulation(spec, fleet(offline=0.05), FailureModel(), settings()).run()
    assert out.state == CampaignState.RUNNING.value
    assert out.rings_finished == (0, 1, 2)
    assert out.total.unreachable == out.total.unpatched == 30
    assert out.slis.hosts_reporting == pytest.approx(0.95)
    assert any("unreachable" in note for note in out.notes)


def test_a_check_in_interval_not_shorter_than_silent_after_is_refused():
    from simulator.errors import SimError

    with pytest.raises(SimError, match=r"not shorter than the campaign's rollout\.silent_after"):
        Simulation(campaign(), fleet(), FailureModel(),
                   settings(checkin_interval=timedelta(minutes=20)))  # fmt: skip


REBOOTS = FailureModel(
    base=Odds(apply=0.01, regress=0.03, revert=0.2, precheck=0.01, dark=0.002,
              reboot_required=0.5, livepatch=0.4),
)  # fmt: skip


@pytest.mark.parametrize(
    ("packages", "patch"),
    [
        ('["openssl"]', 'reboot = "if-required"'),
        ('["linux-image-amd64"]', 'reboot = "if-required"\nlivepatch = "prefer"'),
        ('["linux-image-amd64"]', 'reboot = "never"'),
    ],
    ids=["reboot", "livepatch", "never-reboot"],
)
def test_the_agent_goes_through_the_agents_own_transitions(packages, patch):
    from agent.orders.states import TERMINAL, TRANSITIONS, State

    text = (
        CAMPAIGN.format(order="parallel", windows=WINDOWS)
        .replace('packages = ["openssl"]', f"packages = {packages}\n{patch}")
        .replace('min_success = 1.0, bake = "1h", failure_budget = 1', "min_success = 0.5")
        .replace('min_success = 0.9, failure_budget = "10%"', "min_success = 0.5")
        .replace("[rollout]", '[rollout]\ngate = { failure_budget = "50%" }')
    )
    spec = parse_campaign(text, "engine-test.toml")
    sim = Simulation(spec, fleet(), REBOOTS, settings(days=7))
    seen: dict[int, list[State]] = {}
    enter = sim._enter

    def spy(host, state):
        seen.setdefault(host.index, []).append(state)
        enter(host, state)

    sim._enter = spy  # type: ignore[method-assign]
    out = sim.run()
    allowed = {(a, b) for (a, _), b in TRANSITIONS.items()}
    visited = set()
    finals = set()
    for path in seen.values():
        assert path[0] is State.RECEIVED
        for a, b in itertools.pairwise(path):
            assert (a, b) in allowed
        visited |= set(path)
        finals.add(path[-1])
        if path[-1] not in TERMINAL:
            assert path[-1] is State.VERIFY  # went dark after applying
    assert {State.SUCCEEDED, State.REVERTED, State.REVERT_FAILED, State.FAILED} <= finals
    if "never" in patch:
        assert State.REBOOT not in visited
        assert State.PENDING_REBOOT in finals
        assert out.total.pending_reboot > 0
    elif "prefer" in patch:
        assert {State.LIVEPATCH, State.REBOOT, State.REBOOTED} <= visited
    else:
        assert {State.REBOOT, State.REBOOTED} <= visited
        assert State.LIVEPATCH not in visited  # not a kernel-only reboot: no live patch
        reverted_after_boot = [
            p for p in seen.values() if p.count(State.REBOOT) == 2 and p[-1] is State.REVERTED
        ]
        assert reverted_after_boot  # a regressed host reboots back before it is reverted


def test_an_agent_state_without_a_model_is_reported_not_guessed():
    from agent.orders.states import State
    from simulator.agentmodel import Agent, Order, draw_fate, rehearsed_patch
    from simulator.errors import ModelGap
    from simulator.failures import StepDurations

    fate = draw_fate(random.Random(1), Odds(), StepDurations())
    agent = Agent(rehearsed_patch(campaign()), 1, lambda t: START)
    with pytest.raises(ModelGap, match="PENDING_REBOOT"):
        agent.step(State.PENDING_REBOOT, fate, Order(None), 0)


@pytest.mark.parametrize("order", ["parallel", "sequential"])
@pytest.mark.parametrize("windows", [True, False], ids=["windows", "always-open"])
def test_waking_on_answers_gives_what_asking_at_every_check_in_gives(order, windows):
    """The naive simulation (every waiting host asks at every check-in, as on
    a real controller) and the event-driven one (hosts sleep until Wait.until,
    rooms wait for a change) rehearse the same campaign identically."""
    spec = campaign(order, windows)
    runs = [
        Simulation(spec, fleet(300, offline=0.02), FAILURES,
                   settings(seed=3, every_check_in=naive)).run()
        for naive in (False, True)
    ]  # fmt: skip
    fast, naive = (dataclasses.replace(r, events=0, decisions=0) for r in runs)
    assert fast == naive
    assert runs[1].decisions > 5 * runs[0].decisions


def test_a_slow_controller_delays_what_it_learns():
    from simulator.failures import ControllerMode, ControllerTrouble

    spec = campaign(windows=False)
    slow = FailureModel(
        controller=(
            ControllerTrouble(When(timedelta(0)), When(timedelta(days=1)), ControllerMode.SLOW,
                              timedelta(minutes=3)),
        )
    )  # fmt: skip
    quick = Simulation(spec, fleet(), FailureModel(), settings(days=1)).run()
    late = Simulation(spec, fleet(), slow, settings(days=1)).run()
    assert quick.rings[0].t50 is not None
    assert late.rings[0].t50 is not None
    # The first canary is assigned 3 minutes late and its result lands 3 late.
    assert late.rings[0].t50 - quick.rings[0].t50 >= timedelta(minutes=6)
    too_slow = dataclasses.replace(
        slow, controller=(dataclasses.replace(slow.controller[0], delay=timedelta(hours=1)),)
    )
    timed_out = Simulation(spec, fleet(), too_slow, settings(days=1)).run()
    # An hour behind, the controller hears from its canaries only after
    # silent_after and report_timeout: they count as silent, time out, and
    # the campaign halts.
    assert timed_out.total.timed_out > 0
    assert timed_out.state == "halted"


def test_the_real_fleet_is_read_from_the_admin_api():
    from fleetpatch.v1 import admin_pb2, types_pb2
    from google.protobuf.timestamp_pb2 import Timestamp

    from simulator.inventory import from_pb

    def host(host_id, status, seen):
        pb = admin_pb2.Host(
            host_id=host_id, region="eu", ring=1, labels={"role": "web"}, status=status,
            facts=types_pb2.HostFacts(os_id="debian", timezone="Europe/Berlin"),
        )  # fmt: skip
        if seen is not None:
            pb.last_seen.CopyFrom(Timestamp(seconds=int((START - seen).timestamp())))
        return pb

    active, revoked = admin_pb2.HOST_STATUS_ACTIVE, admin_pb2.HOST_STATUS_REVOKED
    hosts = from_pb(
        [host("h-3", active, timedelta(hours=2)), host("h-1", active, timedelta(seconds=30)),
         host("h-2", revoked, timedelta(0)), host("h-4", active, None)],
        START, timedelta(minutes=5),
    )  # fmt: skip
    assert [h.host_id for h in hosts] == ["h-1", "h-3", "h-4"]
    assert hosts[0].online
    assert hosts[0].labels == {"role": "web"}
    assert (hosts[0].os_id, hosts[0].timezone) == ("debian", "Europe/Berlin")
    assert not hosts[1].online
    assert hosts[1].last_seen == START - timedelta(hours=2)
    assert not hosts[2].online
    assert hosts[2].last_seen is None


def test_an_agent_update_campaign_rehearses_as_a_patch_that_never_reboots():
    text = CAMPAIGN.format(order="parallel", windows="").replace(
        '[patch]\npackages = ["openssl"]', '[agent_update]\nversion = "0.2.0"'
    )
    spec = parse_campaign(text, "agent-update.toml")
    assert spec.agent_update is not None
    out = Simulation(spec, fleet(), FailureModel(base=Odds(reboot_required=1.0)), settings()).run()
    assert out.state == "completed"
    assert out.total.succeeded == out.targeted == 600
    assert out.total.pending_reboot == 0  # an agent update never needs a reboot
    # The failure model's odds for the agent's package apply.
    selector = Selector(packages=frozenset({"fleetpatch-agent"}))
    broken = FailureModel(rules=(Rule(selector, (("regress", 1.0),)),))
    halted = Simulation(spec, fleet(), broken, settings()).run()
    assert halted.state == CampaignState.HALTED.value


def test_a_controller_outage_halts_nothing_and_times_nothing_out():
    """As on the real controller (`campaigns.lifecycle`): silence and report
    time-outs are counted from the restart, so an outage longer than both
    silent_after and report_timeout changes when things happen, not how the
    campaign ends."""
    from simulator.failures import ControllerMode, ControllerTrouble

    spec = campaign(windows=False)
    down = FailureModel(
        controller=(
            ControllerTrouble(When(timedelta(hours=1)), When(timedelta(hours=3)),
                              ControllerMode.DOWN, timedelta(0)),
        )
    )  # fmt: skip
    calm = Simulation(spec, fleet(), FailureModel(), settings()).run()
    outage = Simulation(spec, fleet(), down, settings()).run()
    assert calm.state == outage.state == CampaignState.COMPLETED.value
    assert outage.halts == ()
    assert outage.total.timed_out == 0
    assert outage.total.succeeded == calm.total.succeeded == 600
    assert outage.slis.hosts_reporting == 1.0
    assert outage.completed_after is not None
    assert calm.completed_after is not None
    assert outage.completed_after > calm.completed_after  # two hours without a controller
