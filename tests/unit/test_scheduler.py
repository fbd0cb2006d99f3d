"""The scheduler's decisions, case by case, and the halt rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from controller.campaigns import (
    Assign,
    CampaignSpec,
    CampaignState,
    CellTally,
    Decision,
    HaltKind,
    HostFacts,
    Skip,
    Tallies,
    Wait,
    decide,
    evaluate_halt,
    gate_status,
    is_complete,
    is_silent,
    is_targeted,
    is_timed_out,
    parse_campaign,
    ring_done,
)
from controller.campaigns.errors import CampaignError
from controller.campaigns.quota import Quota, count, percent

NOW = datetime(2025, 1, 8, 12, tzinfo=UTC)  # a Wednesday
HOUR = timedelta(hours=1)

BASE = """
[campaign]
name = "t"
{head}

[patch]
packages = ["openssl"]

[targets]
regions = ["eu", "us", "ap"]
labels = {{ role = ["web", "db"] }}
os = ["debian", "ubuntu"]

[rollout]
{rollout}

[[rollout.rings]]
ring = 0
concurrency = 2
gate = {{ min_success = 0.9, bake = "1h", failure_budget = 1 }}

[[rollout.rings]]
ring = 1
concurrency = "10%"
region_concurrency = 2
gate = {{ failure_budget = "5%" }}

{windows}
"""

BERLIN_WEEKEND = """
[windows]
timezone = "{tz}"
weekly = ["Sat,Sun 02:00-05:00"]
cutoff = "30m"
"""


def campaign(
    head: str = "", rollout: str = "region_order = 'parallel'", windows: str = ""
) -> CampaignSpec:
    return parse_campaign(BASE.format(head=head, rollout=rollout, windows=windows), "test")


def host(**changes: object) -> HostFacts:
    facts: dict[str, object] = {
        "host_id": "h1",
        "region": "eu",
        "ring": 0,
        "labels": {"role": "web"},
        "os_id": "debian",
        "timezone": "Europe/Berlin",
    }
    facts.update(changes)
    return HostFacts(**facts)  # type: ignore[arg-type]


def cells(**by_cell: CellTally) -> dict[tuple[int, str], CellTally]:
    """cells(r0_eu=CellTally(...)) -> {(0, "eu"): CellTally(...)}"""
    out = {}
    for key, tally in by_cell.items():
        ring, region = key.split("_")
        out[(int(ring[1:]), region)] = tally
    return out


def summary(decision: Decision) -> tuple[object, ...]:
    if isinstance(decision, Assign):
        return ("assign", decision.window_closes_at)
    if isinstance(decision, Wait):
        return ("wait", decision.reason.value, decision.until)
    return ("skip", decision.reason.value)


def T(minutes: int = 0, *, hours: int = 0, days: int = 0) -> datetime:
    return NOW + timedelta(minutes=minutes, hours=hours, days=days)


EU3 = CellTally(eligible=3)
DONE10 = CellTally(eligible=10, succeeded=10)
SAT_0100 = datetime(2025, 1, 11, 1, tzinfo=UTC)  # Saturday 02:00 in Berlin


@dataclass
class Case:
    id: str
    expect: tuple[object, ...]
    host: dict[str, object] = field(default_factory=dict)
    cells: dict[tuple[int, str], CellTally] = field(default_factory=lambda: cells(r0_eu=EU3))
    state: CampaignState = CampaignState.RUNNING
    finished_at: dict[int, datetime] = field(default_factory=dict)
    now: datetime = NOW
    head: str = ""
    rollout: str = "region_order = 'parallel'"
    windows: str = ""


CASES = [
    Case("assign", ("assign", None)),
    # Targeting.
    Case("region-not-targeted", ("skip", "not_targeted"), host={"region": "sa"}),
    Case("label-mismatch", ("skip", "not_targeted"), host={"labels": {"role": "cache"}}),
    Case("label-missing", ("skip", "not_targeted"), host={"labels": {}}),
    Case("os-not-targeted", ("skip", "not_targeted"), host={"os_id": "rhel"}),
    Case("ring-not-in-rollout", ("skip", "not_targeted"), host={"ring": 5}),
    # Campaign state.
    Case("completed", ("skip", "campaign_ended"), state=CampaignState.COMPLETED),
    Case("aborted", ("skip", "campaign_ended"), state=CampaignState.ABORTED),
    Case("draft", ("wait", "not_started", None), state=CampaignState.DRAFT),
    Case("approved", ("wait", "not_started", None), state=CampaignState.APPROVED),
    Case("paused", ("wait", "paused", None), state=CampaignState.PAUSED),
    Case("halted", ("wait", "halted", None), state=CampaignState.HALTED),
    Case(
        "over-budget-not-yet-halted",
        ("wait", "halted", None),
        cells=cells(r0_eu=CellTally(eligible=10, failed=1, timed_out=1)),
    ),
    # Deadline.
    Case("deadline-passed", ("skip", "deadline_passed"), head="deadline = 2025-01-08T11:00:00Z"),
    Case("deadline-is-now", ("skip", "deadline_passed"), head="deadline = 2025-01-08T12:00:00Z"),
    Case(
        "deadline-before-pause",
        ("skip", "deadline_passed"),
        head="deadline = 2025-01-08T11:00:00Z",
        state=CampaignState.PAUSED,
    ),
    # Ring gate.
    Case(
        "ring0-in-flight",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=10, in_flight=1, succeeded=9), r1_eu=EU3),
    ),
    Case(
        "ring0-not-all-patched",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=10, succeeded=9), r1_eu=EU3),
    ),
    Case(
        "ring0-success-ratio-low",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=10, succeeded=8, failed=1, unreachable=1)),
        finished_at={0: T(hours=-5)},
    ),
    Case(
        "ring0-baking",
        ("wait", "ring_gate", T(30)),
        host={"ring": 1},
        cells=cells(r0_eu=DONE10, r1_eu=EU3),
        finished_at={0: T(-30)},
    ),
    Case(
        "ring0-baked",
        ("assign", None),
        host={"ring": 1},
        cells=cells(r0_eu=DONE10, r1_eu=EU3),
        finished_at={0: T(-60)},
    ),
    Case(
        "ring0-ratio-at-min-with-unreachable",
        ("assign", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=11, succeeded=9, failed=1, unreachable=1)),
        finished_at={0: T(hours=-2)},
    ),
    Case(
        "ring0-finish-time-missing",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=DONE10, r1_eu=EU3),
    ),
    Case("ring0-empty", ("assign", None), host={"ring": 1}, cells=cells(r1_eu=EU3)),
    Case(
        "ring0-all-unreachable",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=4, unreachable=4), r1_eu=EU3),
    ),
    Case(
        "ring1-started-stays-open",
        ("assign", None),
        host={"ring": 1},
        cells=cells(
            r0_eu=CellTally(eligible=11, succeeded=10), r1_eu=CellTally(eligible=30, in_flight=1)
        ),
    ),
    Case(
        "bake-ends-after-deadline",
        ("skip", "deadline_unreachable"),
        host={"ring": 1},
        cells=cells(r0_eu=DONE10, r1_eu=EU3),
        finished_at={0: T(-30)},
        head="deadline = 2025-01-08T12:20:00Z",
    ),
    # Region order.
    Case(
        "sequential-smallest-first-waits",
        ("wait", "region_order", None),
        cells=cells(r0_eu=EU3, r0_us=CellTally(eligible=2)),
        rollout="",
    ),
    Case(
        "sequential-smallest-first-goes",
        ("assign", None),
        host={"region": "us"},
        cells=cells(r0_eu=EU3, r0_us=CellTally(eligible=2)),
        rollout="",
    ),
    Case(
        "sequential-tie-by-name",
        ("wait", "region_order", None),
        host={"region": "us"},
        cells=cells(r0_ap=CellTally(eligible=2), r0_us=CellTally(eligible=2)),
        rollout="region_order = 'sequential'",
    ),
    Case(
        "sequential-started-region-keeps-its-turn",
        ("wait", "region_order", None),
        host={"region": "us"},
        cells=cells(r0_eu=CellTally(eligible=3, in_flight=1), r0_us=CellTally(eligible=2)),
        rollout="",
    ),
    Case(
        "sequential-next-after-done",
        ("assign", None),
        cells=cells(r0_eu=EU3, r0_us=CellTally(eligible=2, succeeded=1, unreachable=1)),
        rollout="",
    ),
    Case(
        "parallel-all-regions",
        ("assign", None),
        cells=cells(r0_eu=EU3, r0_us=CellTally(eligible=2)),
    ),
    # Windows.
    Case(
        "window-closed",
        ("wait", "window_closed", SAT_0100),
        windows=BERLIN_WEEKEND.format(tz="Europe/Berlin"),
    ),
    Case(
        "window-open",
        ("assign", SAT_0100 + timedelta(hours=2, minutes=30)),
        now=SAT_0100 + HOUR,
        windows=BERLIN_WEEKEND.format(tz="Europe/Berlin"),
    ),
    Case(
        "window-in-cutoff",
        ("wait", "window_closed", SAT_0100 + timedelta(days=1)),
        now=SAT_0100 + timedelta(hours=2, minutes=30),
        windows=BERLIN_WEEKEND.format(tz="Europe/Berlin"),
    ),
    Case(
        "emergency-ignores-window",
        ("assign", None),
        head="emergency = true",
        windows=BERLIN_WEEKEND.format(tz="Europe/Berlin"),
    ),
    Case(
        "host-local-uses-host-zone",
        ("wait", "window_closed", datetime(2025, 1, 11, 7, tzinfo=UTC)),
        host={"timezone": "America/New_York"},
        windows=BERLIN_WEEKEND.format(tz="host-local"),
    ),
    Case(
        "host-local-no-zone",
        ("wait", "timezone_unknown", None),
        host={"timezone": ""},
        windows=BERLIN_WEEKEND.format(tz="host-local"),
    ),
    Case(
        "host-local-bad-zone",
        ("wait", "timezone_unknown", None),
        host={"timezone": "Mars/Base"},
        windows=BERLIN_WEEKEND.format(tz="host-local"),
    ),
    Case(
        "host-local-no-zone-emergency",
        ("assign", None),
        host={"timezone": ""},
        head="emergency = true",
        windows=BERLIN_WEEKEND.format(tz="host-local"),
    ),
    Case(
        "window-after-deadline",
        ("skip", "deadline_unreachable"),
        head="deadline = 2025-01-10T00:00:00Z",
        windows=BERLIN_WEEKEND.format(tz="Europe/Berlin"),
    ),
    # Concurrency.
    Case(
        "ring-budget-full",
        ("wait", "budget_full", None),
        cells=cells(r0_eu=CellTally(eligible=9, in_flight=2)),
    ),
    Case(
        "ring-budget-room", ("assign", None), cells=cells(r0_eu=CellTally(eligible=9, in_flight=1))
    ),
    Case(
        "percent-rounds-up-room",
        ("assign", None),
        host={"ring": 1, "region": "us"},
        cells=cells(r1_eu=CellTally(eligible=20, in_flight=2), r1_us=CellTally(eligible=5)),
    ),
    Case(
        "percent-rounds-up-full",
        ("wait", "budget_full", None),
        host={"ring": 1, "region": "us"},
        cells=cells(
            r1_eu=CellTally(eligible=20, in_flight=2), r1_us=CellTally(eligible=5, in_flight=1)
        ),
    ),
    Case(
        "region-budget-full",
        ("wait", "budget_full", None),
        host={"ring": 1},
        cells=cells(r1_eu=CellTally(eligible=20, in_flight=2), r1_us=CellTally(eligible=30)),
    ),
    Case(
        "emergency-keeps-gates",
        ("wait", "ring_gate", None),
        host={"ring": 1},
        cells=cells(r0_eu=CellTally(eligible=3, in_flight=1)),
        head="emergency = true",
    ),
    Case(
        "emergency-keeps-concurrency",
        ("wait", "budget_full", None),
        cells=cells(r0_eu=CellTally(eligible=9, in_flight=2)),
        head="emergency = true",
    ),
    Case(
        "emergency-keeps-halts",
        ("wait", "halted", None),
        cells=cells(r0_eu=CellTally(eligible=9, reverted=2)),
        head="emergency = true",
    ),
    # Agents first: rollout.min_agent_version.
    *(
        Case(
            f"agent-{version or 'unknown'}-min-0.2.0",
            expect,
            host={"agent_version": version},
            rollout="region_order = 'parallel'\nmin_agent_version = '0.2.0'",
        )
        for version, expect in (
            ("0.1.9", ("wait", "agent_outdated", None)),
            ("0.2.0rc1", ("wait", "agent_outdated", None)),
            ("", ("wait", "agent_outdated", None)),
            ("dev-build", ("wait", "agent_outdated", None)),
            ("0.2.0", ("assign", None)),
            ("0.2.0.post1", ("assign", None)),
            ("0.10.0", ("assign", None)),
        )
    ),
    Case("no-min-agent-version", ("assign", None), host={"agent_version": ""}),
    Case(
        "agent-outdated-after-targeting",
        ("skip", "not_targeted"),
        host={"agent_version": "0.1.0", "region": "sa"},
        rollout="region_order = 'parallel'\nmin_agent_version = '0.2.0'",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    spec = campaign(case.head, case.rollout, case.windows)
    tallies = Tallies(case.state, case.cells, ring_finished_at=case.finished_at)
    decision = decide(spec, host(**case.host), tallies, case.now)
    assert summary(decision) == case.expect
    if not isinstance(decision, Assign):
        assert decision.detail  # every wait and skip says why, for a person


def test_decide_details_say_why() -> None:
    spec = campaign()
    tallies = Tallies(
        CampaignState.RUNNING, cells(r0_eu=CellTally(eligible=10, in_flight=1, succeeded=9))
    )
    decision = decide(spec, host(ring=1), tallies, NOW)
    assert isinstance(decision, Wait)
    assert decision.detail == "ring 1 waits for ring 0's gate: ring 0: 1 host(s) still in flight"
    over = Tallies(CampaignState.RUNNING, cells(r0_eu=CellTally(eligible=10, failed=1, reverted=1)))
    halted = decide(spec, host(), over, NOW)
    assert isinstance(halted, Wait)
    assert "2 failed host(s) exceed the failure budget of 1" in halted.detail
    skip = decide(spec, host(region="sa"), over, NOW)
    assert isinstance(skip, Skip)
    assert skip.detail == "region 'sa' is not targeted"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(campaign(), host(), Tallies(CampaignState.RUNNING), datetime(2025, 1, 1))


def test_targeting_matches_is_targeted() -> None:
    spec = campaign()
    assert is_targeted(spec, host())
    assert is_targeted(spec, host(labels={"role": "db", "extra": "x"}, os_id="ubuntu", region="ap"))
    assert not is_targeted(spec, host(ring=2))


# --- halts -----------------------------------------------------------------

HALT = """
[campaign]
name = "h"
[patch]
packages = ["openssl"]
[rollout]
silent_threshold = "{silent}"
[[rollout.rings]]
ring = 3
gate = {{ failure_budget = {budget} }}
[[rollout.rings]]
ring = 0
gate = {{ failure_budget = {budget} }}
"""


def halt_campaign(budget: str = "0", silent: str = "10%") -> CampaignSpec:
    return parse_campaign(HALT.format(budget=budget, silent=silent), "halt")


@pytest.mark.parametrize(
    ("budget", "tally", "halts"),
    [
        ("0", CellTally(eligible=30, succeeded=5), False),
        ("0", CellTally(eligible=30, failed=1), True),
        ("0", CellTally(eligible=30, reverted=1), True),
        ("0", CellTally(eligible=30, revert_failed=1), True),
        ("0", CellTally(eligible=30, timed_out=1), True),
        ("2", CellTally(eligible=30, failed=1, timed_out=1), False),
        ("2", CellTally(eligible=30, failed=1, timed_out=1, reverted=1), True),
        ('"5%"', CellTally(eligible=30, failed=1), False),  # 1.5 rounds down to 1
        ('"5%"', CellTally(eligible=30, failed=2), True),
        ('"5%"', CellTally(eligible=19, failed=1), True),  # 0.95 rounds down to 0
        ('"10%"', CellTally(eligible=30, failed=3), False),  # exactly 3, not 3.0000000000000004
        ('"10%"', CellTally(eligible=30, failed=4), True),
    ],
)
def test_failure_budget_halts_when_exceeded(budget: str, tally: CellTally, halts: bool) -> None:
    spec = halt_campaign(budget)
    reason = evaluate_halt(spec, Tallies(CampaignState.RUNNING, {(0, "eu"): tally}))
    if not halts:
        assert reason is None
        return
    assert reason is not None
    assert reason.kind is HaltKind.FAILURE_BUDGET
    assert reason.ring == 0
    assert reason.count == tally.failures
    assert reason.count > reason.limit
    assert f"ring 0: {tally.failures} failed host(s) exceed the failure budget" in str(reason)


def test_failure_budget_is_per_ring_summed_over_regions() -> None:
    spec = halt_campaign("1")
    split = {(0, "eu"): CellTally(eligible=5, failed=1), (0, "us"): CellTally(eligible=5, failed=1)}
    reason = evaluate_halt(spec, Tallies(CampaignState.RUNNING, split))
    assert reason is not None
    assert reason.count == 2


def test_accepted_failures_are_not_counted_again() -> None:
    spec = halt_campaign("1")
    tally = {(0, "eu"): CellTally(eligible=10, failed=2)}
    assert evaluate_halt(spec, Tallies(CampaignState.RUNNING, tally)) is not None
    resumed = Tallies(CampaignState.RUNNING, tally, accepted_failures={0: 2})
    assert evaluate_halt(spec, resumed) is None
    worse = Tallies(
        CampaignState.RUNNING,
        {(0, "eu"): CellTally(eligible=10, failed=4)},
        accepted_failures={0: 2},
    )
    reason = evaluate_halt(spec, worse)
    assert reason is not None
    assert "2 accepted earlier" in reason.message


def test_silent_hosts_halt_when_over_threshold() -> None:
    spec = halt_campaign(silent="10%")
    quiet = Tallies(
        CampaignState.RUNNING, {(0, "eu"): CellTally(eligible=20, succeeded=5, silent=2)}
    )
    assert evaluate_halt(spec, quiet) is None
    blind = Tallies(
        CampaignState.RUNNING, {(0, "eu"): CellTally(eligible=20, succeeded=5, silent=3)}
    )
    reason = evaluate_halt(spec, blind)
    assert reason is not None
    assert reason.kind is HaltKind.SILENT_HOSTS
    assert (reason.count, reason.limit) == (3, 2)
    accepted = Tallies(blind.state, blind.cells, accepted_silent={0: 1})
    assert evaluate_halt(spec, accepted) is None


def test_halt_reports_first_ring_in_rollout_order() -> None:
    spec = halt_campaign("0")  # ring 3 is listed before ring 0
    both = {(0, "eu"): CellTally(eligible=5, failed=1), (3, "eu"): CellTally(eligible=5, failed=1)}
    reason = evaluate_halt(spec, Tallies(CampaignState.RUNNING, both))
    assert reason is not None
    assert reason.ring == 3


# --- helpers the controller calls ------------------------------------------


def test_gate_status_and_ring_done() -> None:
    spec = campaign()
    stage = spec.rollout.rings[0]
    tallies = Tallies(CampaignState.RUNNING, cells(r0_eu=DONE10), ring_finished_at={0: T(-10)})
    assert ring_done(tallies, 0)
    status = gate_status(spec, tallies, stage, NOW)
    assert (status.met, status.until) == (False, T(50))
    assert gate_status(spec, tallies, stage, T(50)).met
    assert not ring_done(Tallies(CampaignState.RUNNING, cells(r0_eu=EU3)), 0)


def test_is_silent_and_is_timed_out() -> None:
    spec = campaign()  # silent_after 30m, report_timeout 5m + 30m
    assert not is_silent(spec, T(-30), NOW)
    assert is_silent(spec, T(-31), NOW)
    assert is_silent(spec, None, NOW)
    assert not is_timed_out(spec, T(-35), NOW)
    assert is_timed_out(spec, T(-36), NOW)


def test_is_complete() -> None:
    spec = campaign(head="deadline = 2025-01-09T00:00:00Z")
    running = Tallies(
        CampaignState.RUNNING, cells(r0_eu=CellTally(eligible=3, succeeded=2, unreachable=1))
    )
    assert not is_complete(spec, running, NOW)  # the unreachable host may come back
    assert is_complete(spec, running, T(hours=12))  # past the deadline
    busy = Tallies(CampaignState.RUNNING, cells(r0_eu=CellTally(eligible=3, in_flight=1)))
    assert not is_complete(spec, busy, T(hours=12))
    done = Tallies(CampaignState.RUNNING, cells(r0_eu=CellTally(eligible=3, succeeded=2, failed=1)))
    assert is_complete(spec, done, NOW)


@pytest.mark.parametrize(
    ("quota", "total", "ceil", "floor"),
    [
        (percent(10), 30, 3, 3),
        (percent(10), 25, 3, 2),
        (percent(10), 0, 1, 0),
        (percent(1), 5, 1, 0),
        (percent("12.5"), 8, 1, 1),
        (percent(100), 7, 7, 7),
        (count(4), 2, 4, 4),
        (Quota(Fraction(33), percent=True), 300, 99, 99),
    ],
)
def test_quota_rounding(quota: Quota, total: int, ceil: int, floor: int) -> None:
    assert quota.ceil_of(total) == ceil
    assert quota.floor_of(total) == floor


def test_negative_tally_is_refused() -> None:
    with pytest.raises(ValueError, match="failed is negative"):
        CellTally(eligible=1, failed=-1)


def test_min_agent_version_must_be_a_version() -> None:
    with pytest.raises(CampaignError, match=r"rollout\.min_agent_version: 'latest' is not a"):
        campaign(rollout="min_agent_version = 'latest'")
