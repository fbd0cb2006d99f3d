"""Properties of the scheduler over random fleets, campaigns and event orders.

A small controller loop (`Sim`) runs `decide` for hosts checking in at
random, applies random results, silences hosts, pauses, resumes and lets
time pass, in virtual time. After every step it checks, with its own
oracles rather than the scheduler's helpers:

* concurrency is never exceeded (per ring and per region of a ring);
* no assignment outside a window unless the campaign is an emergency;
* no ring starts before every earlier ring met its gate, and with
  sequential regions at most one region of a ring is in flight;
* the halt rule fires exactly when failures exceed the budget (or silent
  hosts the threshold), and nothing is assigned while exceeded, halted,
  paused or past the deadline;
* every Wait and Skip has a reason, and ``Wait.until`` is a true lower bound.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from controller.campaigns import (
    HOST_LOCAL,
    Assign,
    CampaignSpec,
    CampaignState,
    CellTally,
    HaltKind,
    HostFacts,
    Quota,
    RegionOrder,
    Skip,
    SkipReason,
    Tallies,
    Wait,
    WaitReason,
    decide,
    evaluate_halt,
    parse_campaign,
)
from controller.campaigns.windows import load_zone

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
REGIONS = ["ap", "eu", "us"]
WINDOWS = ["Sat,Sun 02:00-05:00", "Mon-Fri 22:00-04:00", "Wed 00:00-24:00", "Sun 01:30-02:30"]
OUTCOMES = ["succeeded", "failed", "reverted", "revert_failed", "timed_out"]
START = datetime(2025, 3, 1, tzinfo=UTC)  # DST changes in both hemispheres follow
STEPS = [timedelta(minutes=1), timedelta(minutes=10), timedelta(hours=1), timedelta(hours=8)]


# --- random campaigns and fleets -------------------------------------------


def quotas(minimum: int) -> st.SearchStrategy[str]:
    counts = st.integers(minimum, 4).map(str)
    shares = st.sampled_from(["1%", "10%", "25%", "50%", "100%"] + ([] if minimum else ["0%"]))
    return st.one_of(counts, shares.map(lambda s: f'"{s}"'))


Fleet = list[tuple[int, str, str, str, str, bool]]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, Fleet]:
    """A campaign file and a fleet, most of whose hosts it targets."""
    rings = draw(st.permutations([0, 1, 2, 3]).map(lambda p: p[: 1 + p[3] % 3]))
    lines = [
        "[campaign]",
        'name = "prop"',
        f"emergency = {str(draw(st.booleans() | st.just(False))).lower()}",
    ]
    if draw(st.booleans()):
        deadline = START + timedelta(days=draw(st.integers(1, 20)))
        lines.append(f"deadline = {deadline.isoformat()}")
    lines += [
        "[patch]",
        'packages = ["openssl"]',
        "[targets]",
        'labels = { role = "web" }',
        'os = ["debian", "ubuntu"]',
        "[rollout]",
        f'region_order = "{draw(st.sampled_from(list(RegionOrder)))}"',
        f"silent_threshold = {draw(quotas(0))}",
    ]
    for ring in rings:
        lines += [
            "[[rollout.rings]]",
            f"ring = {ring}",
            f"concurrency = {draw(quotas(1))}",
        ]
        if draw(st.booleans()):
            lines.append(f"region_concurrency = {draw(quotas(1))}")
        min_success = draw(st.sampled_from(["0", "0.5", "0.8", "1.0"]))
        bake = draw(st.sampled_from(["0s", "30m", "2h", "1d"]))
        budget = draw(quotas(0))
        lines.append(
            f'gate = {{ min_success = {min_success}, bake = "{bake}", failure_budget = {budget} }}'
        )
    if draw(st.booleans()):
        weekly = draw(st.lists(st.sampled_from(WINDOWS), min_size=1, max_size=2, unique=True))
        blackout = draw(st.lists(st.integers(0, 20), max_size=3, unique=True))
        lines += [
            "[windows]",
            f'timezone = "{draw(st.sampled_from([*ZONES, HOST_LOCAL]))}"',
            f"weekly = {weekly!r}".replace("'", '"'),
            "blackout = ["
            + ", ".join(str(START.date() + timedelta(days=d)) for d in blackout)
            + "]",
            f'cutoff = "{draw(st.sampled_from(["0s", "15m", "45m"]))}"',
        ]
    size = draw(st.integers(1, 40))  # uniform: plain lists stay short
    fleet = draw(
        st.lists(
            st.tuples(
                st.sampled_from(rings) | st.sampled_from([0, 1, 2, 3, 7]),
                st.sampled_from(REGIONS),
                st.sampled_from(["web"] * 9 + ["db"]),
                st.sampled_from(["debian"] * 5 + ["ubuntu"] * 4 + ["rhel"]),
                st.sampled_from(ZONES * 3 + [""]),
                st.sampled_from([False] * 9 + [True]),
            ),
            min_size=size,
            max_size=size,
        )
    )
    return "\n".join(lines) + "\n", fleet


@dataclass
class SimHost:
    facts: HostFacts
    offline: bool  # never checks in: unreachable while unassigned
    status: str = "idle"  # idle | in_flight | one of OUTCOMES
    silent: bool = False


# --- oracles (independent of the scheduler's helpers) ------------------------


def ceil_limit(quota: Quota, total: int) -> int:
    if not quota.percent:
        return int(quota.amount)
    share = quota.amount * total  # exact Fraction, in percent units
    return max(1, -(-share.numerator // (share.denominator * 100)))


def floor_limit(quota: Quota, total: int) -> int:
    if not quota.percent:
        return int(quota.amount)
    share = quota.amount * total
    return share.numerator // (share.denominator * 100)


def wall_clock_inside(spec: CampaignSpec, zone_name: str, now: datetime) -> bool | None:
    """Whether ``now`` is inside a window by the local wall clock; None when a
    UTC offset change is near (the DST semantics are tested in test_windows)."""
    assert spec.windows is not None
    zone = load_zone(zone_name)
    assert zone is not None
    near = [(now + timedelta(hours=h)).astimezone(zone).utcoffset() for h in (-30, 0, 30)]
    if len(set(near)) > 1:
        return None
    local = now.astimezone(zone)
    if local.date() in spec.windows.blackout:
        return False
    for window in spec.windows.weekly:
        for back in (0, 1):
            day = local.date() - timedelta(days=back)
            minute = back * 1440 + local.hour * 60 + local.minute
            if day.weekday() in window.days and window.start <= minute < window.end:
                return True
    return False


@dataclass
class Sim:
    spec: CampaignSpec
    hosts: list[SimHost]
    rnd: random.Random
    now: datetime = START
    state: CampaignState = CampaignState.RUNNING
    finished_at: dict[int, datetime] = field(default_factory=dict)
    accepted_failures: dict[int, int] = field(default_factory=dict)
    accepted_silent: dict[int, int] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)
    assignments: int = 0
    halts: int = 0
    window_checks: int = 0

    def __post_init__(self) -> None:
        t = self.spec.targets
        self.eligible = [
            h
            for h in self.hosts
            if h.facts.ring in self.spec.rollout.positions
            and (not t.regions or h.facts.region in t.regions)
            and all(h.facts.labels.get(k) in v for k, v in t.labels)
            and (not t.os_ids or h.facts.os_id in t.os_ids)
        ]

    def targeted(self, h: SimHost) -> bool:
        return h in self.eligible

    def tallies(self) -> Tallies:
        counts: dict[tuple[int, str], Counter[str]] = {}
        for h in self.eligible:
            c = counts.setdefault((h.facts.ring, h.facts.region), Counter())
            c["eligible"] += 1
            if h.status == "idle":
                c["unreachable"] += h.offline
            else:
                c[h.status] += 1
            c["silent"] += h.silent
        cells = {key: CellTally(**c) for key, c in counts.items()}
        return Tallies(
            self.state,
            cells,
            dict(self.finished_at),
            dict(self.accepted_failures),
            dict(self.accepted_silent),
        )

    def ring_hosts(self, ring: int, region: str | None = None) -> list[SimHost]:
        return [
            h for h in self.eligible if h.facts.ring == ring and region in (None, h.facts.region)
        ]

    def ring_is_done(self, ring: int) -> bool:
        return all(
            h.status in OUTCOMES or (h.status == "idle" and h.offline)
            for h in self.ring_hosts(ring)
        )

    def exceeded(self) -> tuple[HaltKind, int] | None:
        for stage in self.spec.rollout.rings:
            members = self.ring_hosts(stage.ring)
            failures = sum(h.status in OUTCOMES[1:] for h in members)
            failures -= self.accepted_failures.get(stage.ring, 0)
            if failures > floor_limit(stage.gate.failure_budget, len(members)):
                return HaltKind.FAILURE_BUDGET, stage.ring
            silent = sum(h.silent for h in members) - self.accepted_silent.get(stage.ring, 0)
            if silent > floor_limit(self.spec.rollout.silent_threshold, len(members)):
                return HaltKind.SILENT_HOSTS, stage.ring
        return None

    def gate_met(self, position: int) -> bool:
        stage = self.spec.rollout.rings[position]
        members = self.ring_hosts(stage.ring)
        if not members:
            return True
        finished = [h for h in members if h.status in OUTCOMES]
        if not self.ring_is_done(stage.ring) or not finished:
            return False
        succeeded = sum(h.status == "succeeded" for h in finished)
        if Fraction(succeeded, len(finished)) < stage.gate.min_success:
            return False
        return self.finished_at[stage.ring] + stage.gate.bake <= self.now

    # --- the controller's bookkeeping after every change ---

    def settle(self) -> None:
        for stage in self.spec.rollout.rings:
            if self.ring_is_done(stage.ring):
                self.finished_at.setdefault(stage.ring, self.now)
            else:
                self.finished_at.pop(stage.ring, None)
        oracle = self.exceeded()
        reason = evaluate_halt(self.spec, self.tallies())
        # Halt exactly when a limit is exceeded, and for that limit.
        assert (reason is None) == (oracle is None), (reason, oracle)
        if reason is not None and oracle is not None:
            assert (reason.kind, reason.ring) == oracle
            assert reason.count > reason.limit
        # The controller writes the halt, sometimes late: decide must refuse anyway.
        if reason is not None and self.state is CampaignState.RUNNING and self.rnd.random() < 0.7:
            self.state = CampaignState.HALTED
            self.halts += 1

    # --- events ---

    def step(self) -> None:
        roll = self.rnd.random()
        if roll < 0.5:
            self.check_in()
        elif roll < 0.75:
            self.result()
        elif roll < 0.77:
            self.go_silent()
        elif roll < 0.8:
            self.person()
        else:
            self.now += self.rnd.choice(STEPS)
        self.settle()

    def check_in(self) -> None:
        # Mostly hosts of the campaign: the others only ever get Skip.
        pool = self.eligible if self.rnd.random() < 0.9 else self.hosts
        idle = [h for h in pool if h.status == "idle" and not h.offline]
        if not idle:
            return
        h = self.rnd.choice(idle)
        tallies = self.tallies()
        decision = decide(self.spec, h.facts, tallies, self.now)
        if not self.targeted(h):
            assert decision == Skip(SkipReason.NOT_TARGETED, decision.detail)  # type: ignore[union-attr]
            return
        if isinstance(decision, Skip):
            assert decision.reason is not SkipReason.NOT_TARGETED
            assert decision.detail
            if decision.reason is SkipReason.DEADLINE_PASSED:
                assert self.spec.deadline is not None
                assert self.now >= self.spec.deadline
            return
        if isinstance(decision, Wait):
            self.check_wait(h, tallies, decision)
            return
        self.check_assign(h, decision)

    def check_wait(self, h: SimHost, tallies: Tallies, wait: Wait) -> None:
        assert isinstance(wait.reason, WaitReason)
        assert wait.detail
        if wait.reason is WaitReason.WINDOW_CLOSED:
            assert wait.until is not None  # windows always know when they open
        if wait.until is not None:
            assert wait.until > self.now
            # A lower bound: asking again any time before it gives no Assign.
            gap = wait.until - self.now
            probe = self.now + min(gap * self.rnd.random(), gap - timedelta(microseconds=1))
            assert not isinstance(decide(self.spec, h.facts, tallies, probe), Assign)

    def check_assign(self, h: SimHost, assign: Assign) -> None:
        spec, ring, region = self.spec, h.facts.ring, h.facts.region
        assert self.state is CampaignState.RUNNING
        assert self.exceeded() is None
        assert spec.deadline is None or self.now < spec.deadline
        # Gates: the first assignment of a ring needs every earlier gate met.
        position = spec.rollout.positions[ring]
        if ring not in self.started:
            assert all(self.gate_met(p) for p in range(position))
            self.started.add(ring)
        # Sequential regions: every smaller region of the ring is done first.
        if spec.rollout.region_order is RegionOrder.SEQUENTIAL:
            mine = (len(self.ring_hosts(ring, region)), region)
            for other in REGIONS:
                members = self.ring_hosts(ring, other)
                if members and (len(members), other) < mine:
                    assert all(
                        m.status in OUTCOMES or (m.status == "idle" and m.offline) for m in members
                    )
        # Windows.
        if spec.windows is not None and not spec.emergency:
            assert assign.window_closes_at is not None
            assert assign.window_closes_at > self.now
            zone = (
                h.facts.timezone if spec.windows.timezone == HOST_LOCAL else spec.windows.timezone
            )
            inside = wall_clock_inside(spec, zone, self.now)
            assert inside in (True, None)
            self.window_checks += inside is True
        else:
            assert assign.window_closes_at is None
        h.status = "in_flight"
        self.assignments += 1
        # Concurrency after this assignment.
        stage = spec.rollout.rings[position]
        members = self.ring_hosts(ring)
        in_flight = sum(m.status == "in_flight" for m in members)
        assert in_flight <= ceil_limit(stage.concurrency, len(members))
        if stage.region_concurrency is not None:
            cell = self.ring_hosts(ring, region)
            in_cell = sum(m.status == "in_flight" for m in cell)
            assert in_cell <= ceil_limit(stage.region_concurrency, len(cell))
        if spec.rollout.region_order is RegionOrder.SEQUENTIAL:
            busy = {m.facts.region for m in members if m.status == "in_flight"}
            assert len(busy) <= 1

    def result(self) -> None:
        busy = [h for h in self.hosts if h.status == "in_flight"]
        if busy:
            h = self.rnd.choice(busy)
            h.status = "succeeded" if self.rnd.random() < 0.9 else self.rnd.choice(OUTCOMES[1:])

    def go_silent(self) -> None:
        touched = [h for h in self.hosts if h.status != "idle" and not h.silent]
        if touched:
            self.rnd.choice(touched).silent = True

    def person(self) -> None:
        if self.state is CampaignState.RUNNING:
            if self.rnd.random() < 0.2:
                self.state = CampaignState.PAUSED
        elif self.state is CampaignState.PAUSED:
            self.state = CampaignState.RUNNING
        elif self.state is CampaignState.HALTED:
            # Resume: the person accepts what happened so far.
            for stage in self.spec.rollout.rings:
                members = self.ring_hosts(stage.ring)
                self.accepted_failures[stage.ring] = sum(h.status in OUTCOMES[1:] for h in members)
                self.accepted_silent[stage.ring] = sum(h.silent for h in members)
            self.state = CampaignState.RUNNING


def build(text: str, fleet: Fleet, rnd: random.Random) -> Sim:
    spec = parse_campaign(text, "property")
    hosts = [
        SimHost(HostFacts(f"h{i}", region, ring, {"role": role}, os_id, tz), offline)
        for i, (ring, region, role, os_id, tz, offline) in enumerate(fleet)
    ]
    return Sim(spec, hosts, rnd)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios(), seed=st.integers(0, 2**32))
def test_random_rollouts_keep_every_invariant(scenario: tuple[str, Fleet], seed: int) -> None:
    text, fleet = scenario
    # The event order comes from a seeded generator: hundreds of draws per
    # example would make hypothesis' own buffer the bottleneck.
    sim = build(text, fleet, random.Random(seed))
    sim.settle()
    for _ in range(400):
        sim.step()
    # Statistics (--hypothesis-show-statistics), to see the runs do something.
    event(f"assignments: {next(b for b in (20, 10, 5, 1, 0) if sim.assignments >= b)}+")
    event(f"rings started: {len(sim.started)} of {len(sim.spec.rollout.rings)}")
    event(f"halted {min(sim.halts, 2)}+ times")
    event(f"assignments checked against the wall clock: {min(sim.window_checks, 5)}+")


@settings(max_examples=300, deadline=None)
@given(
    budget=st.one_of(
        st.integers(0, 5).map(str), st.sampled_from(['"0%"', '"5%"', '"12.5%"', '"50%"'])
    ),
    eligible=st.integers(0, 60),
    failures=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    accepted=st.integers(0, 4),
)
def test_halt_exactly_when_budget_exceeded(
    budget: str, eligible: int, failures: list[int], accepted: int
) -> None:
    spec = parse_campaign(
        f'[campaign]\nname = "b"\n[patch]\npackages = ["x"]\n[rollout]\nsilent_threshold = "100%"\n'
        f"[[rollout.rings]]\nring = 0\ngate = {{ failure_budget = {budget} }}\n",
        "budget",
    )
    failed, reverted, revert_failed, timed_out = failures
    tally = CellTally(
        eligible=eligible + sum(failures),
        succeeded=eligible,
        failed=failed,
        reverted=reverted,
        revert_failed=revert_failed,
        timed_out=timed_out,
    )
    tallies = Tallies(CampaignState.RUNNING, {(0, "eu"): tally}, accepted_failures={0: accepted})
    quota = spec.rollout.rings[0].gate.failure_budget
    limit = quota.amount if not quota.percent else quota.amount * tally.eligible / 100
    exceeded = sum(failures) - accepted > math.floor(limit)
    reason = evaluate_halt(spec, tallies)
    assert (reason is not None) == exceeded
    # And decide assigns nothing while it is exceeded.
    facts = HostFacts("h", "eu", 0, {}, "debian")
    decision = decide(spec, facts, tallies, START)
    assert isinstance(decision, Assign) != exceeded


def test_a_healthy_rollout_patches_every_reachable_host() -> None:
    # Liveness, so the properties above cannot pass by never assigning.
    text = """
[campaign]
name = "live"
[patch]
packages = ["openssl"]
[rollout]
region_order = "sequential"
[[rollout.rings]]
ring = 0
concurrency = 1
gate = { bake = "2h" }
[[rollout.rings]]
ring = 1
concurrency = "20%"
region_concurrency = 2
[windows]
timezone = "host-local"
weekly = ["Mon-Fri 22:00-04:00", "Sat,Sun 01:00-06:00"]
cutoff = "30m"
blackout = [2025-03-05]
"""
    fleet = [
        (ring, region, "web", "debian", zone, False)
        for ring, count in ((0, 3), (1, 24))
        for i in range(count)
        for region, zone in [(REGIONS[i % 3], ZONES[i % 5])]
    ]
    rnd = random.Random(7)
    sim = build(text, fleet, rnd)
    for h in sim.hosts:
        h.facts = HostFacts(
            h.facts.host_id, h.facts.region, h.facts.ring, {}, "debian", h.facts.timezone
        )
    sim.settle()
    while sim.now < START + timedelta(days=30):
        idle = [h for h in sim.hosts if h.status == "idle"]
        for h in idle:
            decision = decide(sim.spec, h.facts, sim.tallies(), sim.now)
            if isinstance(decision, Assign):
                sim.check_assign(h, decision)
        for h in sim.hosts:
            if h.status == "in_flight":
                h.status = "succeeded"
        sim.settle()
        sim.now += timedelta(minutes=20)
    assert all(h.status == "succeeded" for h in sim.hosts)
    assert sim.halts == 0
    assert sim.assignments == len(fleet)
    assert date(2025, 3, 1) <= sim.finished_at[0].date() < sim.finished_at[1].date()
