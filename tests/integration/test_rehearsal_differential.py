"""Differential: a rehearsal and the real controller's engine, given the same
fleet (hosts, check-in phases, what each host's order does, outages),
agree on how a campaign goes: which rings finish, whether and where it
halts and why, and per ring how many hosts succeeded, failed, reverted,
failed to revert and timed out.

The real side (tests.support.enginedrive) is the controller's
CampaignEngine over a real SQLite store and a fake clock; the simulated
side is the rehearsal in its 'every host checks in' mode. One test per
failure mode the shipped scenarios rehearse, scaled down, and a property
test over random small campaigns and failure mixes.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.campaigns import parse_campaign
from simulator.engine import Settings, Simulation
from simulator.failures import ControllerMode, ControllerTrouble, FailureModel, Odds, When
from simulator.fleet import FleetSpec, RegionSpec, generate
from simulator.outcome import Outcome
from simulator.rehearsal import scenario_simulation
from simulator.scenario import Operator, Scenario, load_scenario
from tests.support.enginedrive import Driven, drive
from tests.support.ramdir import ram_dir

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
COUNTS = ("succeeded", "failed", "reverted", "revert_failed", "timed_out")


def _simulation(sc: Scenario, hosts: int) -> Simulation:
    return scenario_simulation(sc, hosts=hosts, operator=Operator(), every_check_in=True)


def _rehearsed(outcome: Outcome) -> Driven:
    rings = {row.ring: {name: getattr(row, name) for name in COUNTS} for row in outcome.rings}
    halts = [(h.kind, h.ring) for h in outcome.halts]
    return Driven(outcome.state, rings, halts)


def _real(driven: Driven) -> Driven:
    rings = {ring: {name: counts[name] for name in COUNTS} for ring, counts in driven.rings.items()}
    return Driven(driven.state, rings, driven.halts)


@pytest.mark.parametrize(
    ("scenario", "hosts"),
    [
        ("canary-regression", 120),
        ("failed-revert", 120),
        ("hosts-go-dark", 120),
        ("region-partition", 120),
        ("controller-outage", 120),
        ("window-too-short", 120),
        ("weekend-openssl", 120),
    ],
)
def test_the_rehearsal_and_the_real_engine_agree(scenario, hosts, tmp_path):
    sc = load_scenario(SCENARIOS / f"{scenario}.toml")
    rehearsed = _rehearsed(_simulation(sc, hosts).run())
    with ram_dir(tmp_path) as data:
        real = _real(drive(_simulation(sc, hosts), sc.campaign_path.read_text(), data))
    assert real == rehearsed


START = datetime(2026, 12, 5, 1, tzinfo=UTC)  # a Saturday, 01:00 UTC
RANDOM_CAMPAIGN = """
[campaign]
name = "random"

[patch]
packages = ["openssl"]

[verify]
timeout = "5m"

[rollout]
region_order = "{order}"
silent_after = "20m"
report_timeout = "40m"
silent_threshold = "{silent}%"
rings = [
  {{ ring = 0, concurrency = {c0}, gate = {{ min_success = {ok0}, failure_budget = {b0} }} }},
  {{ ring = 1, concurrency = "{c1}%", gate = {{ failure_budget = "{b1}%" }} }},
]
{windows}
"""


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    order=st.sampled_from(["parallel", "sequential"]),
    silent=st.sampled_from([0, 10, 50]),
    c0=st.integers(1, 4),
    ok0=st.sampled_from(["1.0", "0.8", "0.5"]),
    b0=st.integers(0, 3),
    c1=st.sampled_from([10, 25, 100]),
    b1=st.sampled_from([0, 10, 30]),
    windowed=st.booleans(),
    odds=st.tuples(*(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.3]) for _ in range(5))),
    outage=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_random_campaigns_and_failure_mixes_agree(
    tmp_path_factory, order, silent, c0, ok0, b0, c1, b1, windowed, odds, outage, seed
):
    windows = '[windows]\ntimezone = "UTC"\nweekly = ["Mon-Sun 02:00-04:00"]\ncutoff = "15m"\n'
    text = RANDOM_CAMPAIGN.format(
        order=order, silent=silent, c0=c0, ok0=ok0, b0=b0, c1=c1, b1=b1,
        windows=windows if windowed else "",
    )  # fmt: skip
    spec = parse_campaign(text, "random.toml")
    precheck, apply, regress, revert, dark = odds
    controller = (
        (ControllerTrouble(When(timedelta(hours=1)), When(timedelta(hours=2)),
                           ControllerMode.DOWN, timedelta(0)),)
        if outage else ()
    )  # fmt: skip
    failures = FailureModel(
        base=Odds(precheck=precheck, apply=apply, regress=regress, revert=revert, dark=dark),
        controller=controller,
    )
    fleet_spec = FleetSpec(
        hosts=40, regions=(RegionSpec("eu", "Europe/Berlin", 1), RegionSpec("us", "UTC", 1)),
        rings=((0, 1), (1, 3)), os_mix=(("debian", 1),), labels=(),
        checkin_interval=timedelta(minutes=5), campaign_tick=timedelta(seconds=30), offline=0.0,
    )  # fmt: skip

    def simulation() -> Simulation:
        settings = Settings(
            name="random", start=START, duration=timedelta(days=2), horizon=timedelta(days=2),
            checkin_interval=timedelta(minutes=5), campaign_tick=timedelta(seconds=30),
            seed=seed, every_check_in=True,
        )  # fmt: skip
        fleet = generate(fleet_spec, random.Random(seed), START)
        return Simulation(spec, fleet, failures, settings)

    rehearsed = _rehearsed(simulation().run())
    with ram_dir(tmp_path_factory.mktemp("ctl")) as data:
        real = _real(drive(simulation(), text, data))
    assert real == rehearsed
