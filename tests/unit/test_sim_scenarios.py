"""Every shipped scenario states its expected outcome, and meets it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from functools import cache
from pathlib import Path

import pytest

from controller.campaigns import CampaignState, HaltKind
from simulator.expect import Expectations, check
from simulator.outcome import Outcome
from simulator.rehearsal import scenario_simulation
from simulator.scenario import Scenario, load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "examples" / "scenarios").glob("*.toml"))
REQUIRED = {  # the failure modes operators fear, each rehearsed by a shipped scenario
    "canary-regression", "failed-revert", "hosts-go-dark", "region-partition", "window-too-short",
}  # fmt: skip


# Scenarios bigger than this run here at this size (their expectations hold
# at any scale); benchmarks/sim_fleet.py checks them at full size.
UNIT_TEST_HOSTS = 10_000


@cache
def rehearse(path: Path) -> tuple[Scenario, Outcome]:
    sc = load_scenario(path)
    hosts = min(sc.fleet.hosts, UNIT_TEST_HOSTS)
    return sc, scenario_simulation(sc, hosts=hosts).run()


def by_name(name: str) -> tuple[Scenario, Outcome]:
    return rehearse(next(p for p in SCENARIOS if p.stem == name))


def test_the_feared_failure_modes_are_all_shipped():
    assert {p.stem for p in SCENARIOS} >= REQUIRED


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_scenario_states_its_outcome_and_meets_it(path):
    sc, outcome = rehearse(path)
    assert sc.expect.summary, "state the expected outcome in words"
    assert not sc.expect.empty, "state the expected outcome as checks"
    assert check(sc.expect, outcome) == []


def test_a_two_thousand_host_week_runs_to_its_outcome():
    _sc, outcome = by_name("weekend-openssl")
    assert outcome.fleet_hosts == 2000
    assert outcome.simulated == timedelta(days=7)
    assert outcome.rings_finished == (0, 1, 2)
    assert outcome.slis.coverage > 0.98
    assert outcome.total.unreachable == 7  # 0.5% offline throughout, of the targeted
    ring0 = outcome.rings[0]
    assert ring0.t100 is not None
    assert outcome.rings[1].t50 is not None
    assert ring0.t100 < outcome.rings[1].t50  # canaries first


def test_the_canary_regression_never_leaves_ring_zero():
    _, outcome = by_name("canary-regression")
    assert outcome.halts[0].after < timedelta(hours=3)
    assert all(row.succeeded + row.reverted == 0 for row in outcome.rings[1:])


def test_the_partitioned_region_is_patched_after_it_heals():
    sc, outcome = by_name("region-partition")
    heal = sc.failures.outages[0].end
    assert heal is not None
    assert heal.offset is not None
    ap = [row for row in outcome.rows if row.region == "ap-south"]
    assert all(row.t50 is not None and row.t50 > heal.offset for row in ap)
    assert outcome.slis.hosts_reporting_min < 0.6  # ap-south (45%) was cut off meanwhile


def test_the_short_window_says_when_it_would_finish():
    _, outcome = by_name("window-too-short")
    assert not outcome.finished_in_time
    assert outcome.completed_after is not None
    assert outcome.completed_after > outcome.duration + timedelta(days=14)


def test_a_miss_is_reported():
    _, outcome = by_name("canary-regression")
    wrong = Expectations(
        state=CampaignState.COMPLETED, halt_kind=HaltKind.SILENT_HOSTS, halt_ring=1,
        rings_untouched=(2,), completed_before=timedelta(days=1), at_least=(("coverage", 0.5),),
        at_most=(("reverted", 0),),
    )  # fmt: skip
    misses = check(wrong, outcome)
    assert [m.split(":")[0] for m in misses] == [
        "state", "halt_kind", "halt_ring", "rings_untouched", "completed_before", "coverage",
        "reverted",
    ]  # fmt: skip
    assert check(dataclasses.replace(wrong, state=None), outcome)[0].startswith("halt_kind")
