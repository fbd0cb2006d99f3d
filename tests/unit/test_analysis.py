"""Rings gated on live metrics: the [[rollout.analysis]] fields, what a
reading does to the gates and the halt rule, how an answer of Prometheus
becomes one number, and the simulator rehearsing a breach."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.campaigns import (
    CampaignState,
    CellTally,
    HaltKind,
    Tallies,
    evaluate_halt,
    parse_campaign,
)
from controller.campaigns.errors import CampaignError
from controller.campaigns.gates import ring_open
from controller.campaigns.tallies import Reading
from controller.rollout.analysis import QueryError, value_of
from simulator.errors import ScenarioError
from simulator.rehearsal import scenario_simulation
from simulator.scenario import parse_scenario

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
CAMPAIGN = """
[campaign]
name = "gated"

[patch]
packages = ["openssl"]

[rollout]
prometheus = "http://prometheus.example:9090/"
{extra}
rings = [
  {{ ring = 0, concurrency = "100%", gate = {{ bake = "1h" }} }},
  {{ ring = 1, concurrency = "100%" }},
  {{ ring = 2, concurrency = "100%" }},
]
{analysis}
"""
ERRORS = """
[[rollout.analysis]]
name = "error-rate"
query = 'sum(rate(http_errors_total[5m])) / sum(rate(http_requests_total[5m]))'
max = 0.01
"""


def spec(analysis: str = ERRORS, extra: str = ""):
    return parse_campaign(CAMPAIGN.format(analysis=analysis, extra=extra), "gated.toml")


def test_an_analysis_guards_every_ring_after_the_first_by_default():
    s = spec()
    assert s.rollout.prometheus == "http://prometheus.example:9090"
    assert s.rollout.analysis_interval == timedelta(seconds=30)
    (analysis,) = s.rollout.analysis
    assert analysis.rings == (1, 2)
    assert analysis.holds(0.01)
    assert not analysis.holds(0.0101)
    lag = spec('[[rollout.analysis]]\nname = "lag"\nquery = "up"\nmin = 1\nrings = [2]\n')
    assert lag.rollout.analysis[0].rings == (2,)
    assert not lag.rollout.analysis[0].holds(0.5)
    assert lag.rollout.analysis[0].threshold == "min 1"


@pytest.mark.parametrize(
    ("analysis", "extra", "field", "problem"),
    [
        ('[[rollout.analysis]]\nname = "a"\nquery = "up"\n', "", "max",
         "exactly one of max and min"),
        ('[[rollout.analysis]]\nname = "a"\nquery = "up"\nmax = 1\nmin = 0\n', "", "max",
         "exactly one of max and min"),
        ('[[rollout.analysis]]\nname = "a"\nquery = "up"\nmax = 1\nrings = [7]\n', "", "rings",
         "not in [[rollout.rings]]"),
        ('[[rollout.analysis]]\nname = "a b"\nquery = "up"\nmax = 1\n', "", "name", "use letters"),
        ('[[rollout.analysis]]\nname = "a"\nquery = " "\nmax = 1\n', "", "query", "is empty"),
        (ERRORS + ERRORS, "", "name", "listed twice"),
        (ERRORS, 'analysis_interval = "soon"', "analysis_interval", "duration"),
    ],
)  # fmt: skip
def test_a_wrong_analysis_is_named_with_its_field(analysis, extra, field, problem):
    with pytest.raises(CampaignError) as caught:
        spec(analysis, extra)
    assert field in caught.value.field
    assert problem in str(caught.value)


def test_analyses_need_a_prometheus():
    text = CAMPAIGN.format(analysis=ERRORS, extra="").replace(
        'prometheus = "http://prometheus.example:9090/"', ""
    )
    with pytest.raises(CampaignError, match=r"rollout\.prometheus: is required"):
        parse_campaign(text, "gated.toml")


def tallies(*, ring0_done: bool = True, ring1: CellTally | None = None, reading=None):
    cells = {(0, "eu"): CellTally(eligible=2, succeeded=2 if ring0_done else 0,
                                  in_flight=0 if ring0_done else 2)}  # fmt: skip
    cells[(1, "eu")] = ring1 or CellTally(eligible=2)
    cells[(2, "eu")] = CellTally(eligible=2)
    analysis = {} if reading is None else {"error-rate": reading}
    return Tallies(CampaignState.RUNNING, cells, {0: NOW - timedelta(hours=2)}, analysis=analysis)


def test_a_guarded_ring_waits_until_a_reading_holds():
    s = spec()
    waits = ring_open(s, tallies(), 1, NOW)
    assert not waits.met
    assert "analysis error-rate: not asked yet" in waits.detail
    blind = ring_open(
        s, tallies(reading=Reading(None, NOW, "Prometheus cannot be reached")), 1, NOW
    )
    assert not blind.met
    assert "no answer (Prometheus cannot be reached)" in blind.detail
    assert ring_open(s, tallies(reading=Reading(0.002, NOW)), 1, NOW).met
    # The first ring is not guarded: it starts whatever the metric says.
    assert ring_open(s, tallies(ring0_done=False), 0, NOW).met


def test_a_breach_halts_while_a_guarded_ring_is_ahead_and_says_what_and_how_much():
    s = spec()
    halt = evaluate_halt(s, tallies(reading=Reading(0.05, NOW)))
    assert halt is not None
    assert halt.kind is HaltKind.ANALYSIS
    assert halt.ring == 1
    assert "analysis error-rate" in halt.message
    assert "sum(rate(http_errors_total[5m]))" in halt.message
    assert "= 0.05, beyond its max 0.01" in halt.message
    # No answer never halts (it holds the ring instead).
    assert evaluate_halt(s, tallies(reading=Reading(None, NOW, "down"))) is None
    assert evaluate_halt(s, tallies(reading=Reading(0.01, NOW))) is None


def test_a_breach_after_every_guarded_ring_is_past_its_gate_halts_nothing():
    s = spec()
    done = CellTally(eligible=2, succeeded=2)
    cells = {(r, "eu"): done for r in (0, 1, 2)}
    finished = {r: NOW - timedelta(hours=3) for r in (0, 1, 2)}
    over = Tallies(CampaignState.RUNNING, cells, finished,
                   analysis={"error-rate": Reading(0.5, NOW)})  # fmt: skip
    assert evaluate_halt(s, over) is None


def test_a_vector_answer_stands_for_its_worst_series():
    (high,) = spec().rollout.analysis
    vector = {"resultType": "vector", "result": [
        {"metric": {"i": "a"}, "value": [1, "0.001"]},
        {"metric": {"i": "b"}, "value": [1, "0.2"]},
        {"metric": {"i": "c"}, "value": [1, "NaN"]},
    ]}  # fmt: skip
    assert value_of(high, vector) == 0.2
    low = spec('[[rollout.analysis]]\nname = "n"\nquery = "up"\nmin = 1\n').rollout.analysis[0]
    assert value_of(low, vector) == 0.001
    assert value_of(high, {"resultType": "scalar", "result": [1, "3"]}) == 3.0
    for empty in ({"resultType": "vector", "result": []}, {"resultType": "matrix", "result": []},
                  None):  # fmt: skip
        with pytest.raises(QueryError):
            value_of(high, empty)


SCENARIO = """
[scenario]
name = "gated"
campaign = "gated.toml"
start = "2026-12-01T08:00:00+00:00"
duration = "2d"

[fleet]
hosts = 60
[[fleet.regions]]
name = "eu"
timezone = "Europe/Berlin"
[[fleet.rings]]
ring = 0
share = 1
[[fleet.rings]]
ring = 1
share = 2
[[fleet.rings]]
ring = 2
share = 3
{analysis}
"""


def rehearse(tmp_path: Path, analysis: str):
    (tmp_path / "gated.toml").write_text(CAMPAIGN.format(analysis=ERRORS, extra=""))
    sc = parse_scenario(SCENARIO.format(analysis=analysis), "gated-scenario.toml", tmp_path)
    return scenario_simulation(sc).run()


def test_the_simulator_rehearses_where_a_breach_would_halt(tmp_path):
    calm = rehearse(tmp_path, "")
    assert calm.halts == ()
    assert calm.state == "completed"
    breach = rehearse(tmp_path, '[analysis]\nerror-rate = [["0m", 0.001], ["70m", 0.04]]\n')
    assert len(breach.halts) == 1
    halt = breach.halts[0]
    assert halt.kind == HaltKind.ANALYSIS
    assert "= 0.04, beyond its max 0.01" in halt.message
    assert breach.state == "halted"


def test_a_scenario_series_must_name_an_analysis_and_grow(tmp_path):
    (tmp_path / "gated.toml").write_text(CAMPAIGN.format(analysis=ERRORS, extra=""))
    for analysis, problem in (
        ('[analysis]\nlatency = [["0m", 1]]\n', "no [[rollout.analysis]] named 'latency'"),
        ('[analysis]\nerror-rate = [["1h", 1], ["30m", 2]]\n', "offsets must grow"),
        ("[analysis]\nerror-rate = [[1, 1]]\n", 'must be ["OFFSET", VALUE]'),
    ):
        with pytest.raises(ScenarioError, match=re.escape(problem)):
            parse_scenario(SCENARIO.format(analysis=analysis), "s.toml", tmp_path)
