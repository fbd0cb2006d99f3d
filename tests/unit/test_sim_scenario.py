"""Scenario and failure-model files: every field read, every mistake named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.campaigns import CampaignError, CampaignState, HaltKind
from simulator.errors import ScenarioError
from simulator.failures import ControllerMode, Odds
from simulator.scenario import load_scenario, parse_scenario

CAMPAIGN = """
[campaign]
name = "t"

[patch]
packages = ["openssl"]

[rollout]
rings = [{ ring = 0, concurrency = 1 }, { ring = 1 }]
"""

SCENARIO = """
[scenario]
name = "s"
campaign = "c.toml"
start = 2026-12-05T00:00:00Z
{scenario}

[fleet]
hosts = 100
{fleet}

[[fleet.regions]]
name = "eu"
timezone = "Europe/Berlin"

[[fleet.rings]]
ring = 0
share = "10%"

[[fleet.rings]]
ring = 1
share = "90%"

{rest}
"""


def _parse(tmp_path: Path, scenario: str = "", fleet: str = "", rest: str = ""):
    (tmp_path / "c.toml").write_text(CAMPAIGN)
    text = SCENARIO.format(scenario=scenario, fleet=fleet, rest=rest)
    return parse_scenario(text, "s.toml", tmp_path)


def test_a_minimal_scenario_gets_the_documented_defaults(tmp_path):
    sc = _parse(tmp_path)
    assert sc.start == datetime(2026, 12, 5, tzinfo=UTC)
    assert sc.duration == sc.horizon == timedelta(days=7)
    assert sc.seed == 1
    assert sc.fleet.checkin_interval == timedelta(minutes=5)
    assert sc.fleet.campaign_tick == timedelta(seconds=10)
    assert sc.fleet.os_mix == (("debian", 1.0),)
    assert sc.fleet.rings == ((0, 10.0), (1, 90.0))
    assert sc.failures.base == Odds()
    assert sc.operator.resume_after is None
    assert sc.expect.empty
    assert sc.campaign.name == "t"
    assert sc.campaign_path == (tmp_path / "c.toml").resolve()


def test_every_section_is_read(tmp_path):
    sc = _parse(
        tmp_path,
        scenario='duration = "2d"\nhorizon = "3w"\nseed = 9',
        fleet='offline = "2.5%"\ncheckin_interval = "1m"\n[fleet.labels]\nenv = "prod"\n'
        "role = { web = 3, db = 1 }",
        rest="""
[operator]
resume_after = "1h"
resumes = 2

[failures]
apply = 0.5

[failures.durations]
apply = "1m-2m"
reboot = "30s"

[[failures.rules]]
ring = [0, 1]
package = "openssl"
regress = 1.0

[[failures.outages]]
region = "eu"
share = 0.5
from = "+1h"
to = 2026-12-05T05:00:00Z

[[failures.controller]]
from = "+1d"
to = "+1d1h"
mode = "slow"
delay = "2m"

[expect]
summary = "it halts"
state = "halted"
halt_kind = "silent_hosts"
halt_ring = 1
rings_finished = [0]
completed_after = "+1d"
at_least = { coverage = 0.5 }
""",
    )
    assert sc.duration == timedelta(days=2)
    assert sc.horizon == timedelta(weeks=3)
    assert sc.seed == 9
    assert sc.fleet.offline == pytest.approx(0.025)
    assert sc.fleet.labels == (("env", (("prod", 1.0),)), ("role", (("db", 1.0), ("web", 3.0))))
    assert sc.operator.resume_after == timedelta(hours=1)
    assert sc.operator.resumes == 2
    assert sc.failures.base.apply == 0.5
    assert sc.failures.durations.apply.low == timedelta(minutes=1)
    assert sc.failures.durations.reboot.high == timedelta(seconds=30)
    rule = sc.failures.rules[0]
    assert rule.selector.rings == {0, 1}
    assert rule.overrides == (("regress", 1.0),)
    outage = sc.failures.outages[0]
    assert outage.start.resolve(sc.start) == sc.start + timedelta(hours=1)
    assert outage.end is not None
    assert outage.end.resolve(sc.start) == sc.start + timedelta(hours=5)
    trouble = sc.failures.controller[0]
    assert trouble.mode is ControllerMode.SLOW
    assert trouble.delay == timedelta(minutes=2)
    assert sc.expect.state is CampaignState.HALTED
    assert sc.expect.halt_kind is HaltKind.SILENT_HOSTS
    assert sc.expect.rings_finished == (0,)
    assert sc.expect.completed_after == timedelta(days=1)
    assert sc.expect.at_least == (("coverage", 0.5),)


@pytest.mark.parametrize(
    ("where", "text", "field", "problem"),
    [
        ("scenario", "colour = 1", "scenario.colour", "unknown key"),
        ("scenario", 'horizon = "1d"', "scenario.horizon", "not be shorter than duration"),
        ("fleet", "hostz = 3", "fleet.hostz", "did you mean 'hosts'"),
        ("fleet", "offline = 1.5", "fleet.offline", "between 0 and 1"),
        ("fleet", 'offline = "lots"', "fleet.offline", "percentage"),
        ("fleet", 'checkin_interval = "soon"', "fleet.checkin_interval", "not a duration"),
        ("rest", "[failures]\napply = 2", "failures.apply", "probability"),
        ("rest", '[failures.durations]\napply = "3m-1m"', "failures.durations.apply", "ends"),
        ("rest", "[[failures.rules]]\nring = 0", "failures.rules[0]", "at least one probability"),
        ("rest", "[[failures.rules]]\nhosts = []\napply = 1", "failures.rules[0].hosts",
         "match no host"),
        ("rest", '[[failures.outages]]\nto = "+1h"', "failures.outages[0].from", "required"),
        ("rest", '[[failures.outages]]\nfrom = "+2h"\nto = "+1h"', "failures.outages[0]",
         "not after"),
        ("rest", '[[failures.controller]]\nfrom = "+1h"\nto = "+2h"\nmode = "slow"',
         "failures.controller[0].delay", "required"),
        ("rest", '[expect]\nat_least = { happiness = 1 }', "expect.at_least.happiness",
         "unknown measure"),
        ("rest", '[expect]\nstate = "paused"', "expect.state", "not one of"),
        ("rest", "[operator]\nresumes = 2", "operator.resumes", "needs resume_after"),
    ],
)  # fmt: skip
def test_mistakes_name_the_field(tmp_path, where, text, field, problem):
    parts = {"scenario": "", "fleet": "", "rest": ""}
    parts[where] = text
    with pytest.raises(ScenarioError) as caught:
        _parse(tmp_path, **parts)
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"s.toml: {field}: ")


def test_a_bad_region_time_zone_is_named(tmp_path):
    (tmp_path / "c.toml").write_text(CAMPAIGN)
    text = SCENARIO.format(scenario="", fleet="", rest="").replace("Europe/Berlin", "Mars/Olympus")
    with pytest.raises(ScenarioError, match=r"fleet.regions\[0\].timezone: unknown time zone"):
        parse_scenario(text, "s.toml", tmp_path)


def test_start_must_carry_an_offset(tmp_path):
    (tmp_path / "c.toml").write_text(CAMPAIGN)
    text = SCENARIO.format(scenario="", fleet="", rest="").replace(
        "2026-12-05T00:00:00Z", "2026-12-05T00:00:00"
    )
    with pytest.raises(ScenarioError, match=r"scenario\.start: must include a UTC offset"):
        parse_scenario(text, "s.toml", tmp_path)


def test_the_campaign_file_is_read_by_the_controllers_parser(tmp_path):
    (tmp_path / "c.toml").write_text(CAMPAIGN.replace("[rollout]", "[rollout]\nconcurrensy = 2"))
    text = SCENARIO.format(scenario="", fleet="", rest="")
    with pytest.raises(CampaignError) as caught:
        parse_scenario(text, "s.toml", tmp_path)
    assert caught.value.field == "rollout.concurrensy"
    assert caught.value.source.endswith("c.toml")


def test_a_missing_campaign_file_is_named(tmp_path):
    text = SCENARIO.format(scenario="", fleet="", rest="")
    with pytest.raises(ScenarioError, match=r"scenario\.campaign: cannot read"):
        parse_scenario(text, "s.toml", tmp_path)


def test_not_toml_and_unreadable(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("[scenario", "s.toml", tmp_path)
    with pytest.raises(ScenarioError, match="cannot read it"):
        load_scenario(tmp_path / "missing.toml")
