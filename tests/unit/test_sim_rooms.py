"""The simulator's waiting rooms assume that `decide` cannot tell apart two
hosts that differ only in their id (and last_seen): one host asks for its
whole room (simulator/waiting.py). If this test fails, the scheduler has
started reading the host id, and the rooms must become per host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.campaigns import (
    CampaignState,
    CellTally,
    HostFacts,
    Tallies,
    decide,
    parse_campaign,
)

CAMPAIGN = """
[campaign]
name = "rooms"
deadline = 2027-01-20T00:00:00Z

[patch]
packages = ["openssl"]

[targets]
labels = {{ role = ["web", "db"] }}

[rollout]
region_order = "{order}"
region_concurrency = "30%"
rings = [
  {{ ring = 0, concurrency = 2, gate = {{ min_success = 1.0, bake = "2h", failure_budget = 1 }} }},
  {{ ring = 1, concurrency = "10%", gate = {{ min_success = 0.9, failure_budget = "10%" }} }},
  {{ ring = 2, concurrency = "25%" }},
]

[windows]
timezone = "host-local"
weekly = ["Mon-Fri 22:00-04:00", "Sat,Sun 01:00-07:00"]
blackout = [2026-12-25]
cutoff = "30m"
"""
SPECS = [parse_campaign(CAMPAIGN.format(order=o), "rooms.toml") for o in ("sequential", "parallel")]
START = datetime(2026, 12, 1, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "", "Nowhere/Atlantis"]


@st.composite
def tallies(draw: st.DrawFn) -> Tallies:
    cells = {}
    for ring in (0, 1, 2):
        for region in ("eu", "us"):
            eligible = draw(st.integers(0, 40))
            parts = draw(st.lists(st.integers(0, 8), min_size=7, max_size=7))
            while sum(parts[:6]) > eligible:
                parts[parts.index(max(parts))] -= 1
            in_flight, ok, failed, reverted, revert_failed, timed_out, silent = parts
            rest = eligible - sum(parts[:6])
            cells[(ring, region)] = CellTally(
                eligible, in_flight, ok, failed, reverted, revert_failed, timed_out,
                unreachable=draw(st.integers(0, rest)), silent=min(silent, eligible - rest),
            )  # fmt: skip
    finished = {
        ring: START + timedelta(minutes=draw(st.integers(0, 30 * 24 * 60)))
        for ring in draw(st.sets(st.sampled_from([0, 1, 2])))
    }
    state = draw(st.sampled_from([CampaignState.RUNNING] * 4 + [CampaignState.HALTED]))
    return Tallies(state, cells, finished)


@settings(max_examples=300, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    counts=tallies(),
    minutes=st.integers(0, 60 * 24 * 60),
    ring=st.sampled_from([0, 1, 2, 3]),
    region=st.sampled_from(["eu", "us"]),
    zone=st.sampled_from(ZONES),
    role=st.sampled_from(["web", "db", "mail"]),
    seen=st.sampled_from([None, START]),
)
def test_decide_does_not_read_the_host_id(spec, counts, minutes, ring, region, zone, role, seen):
    now = START + timedelta(minutes=minutes)
    one = HostFacts("h-00001", region, ring, {"role": role}, "debian", zone, seen)
    other = HostFacts("h-99999", region, ring, {"role": role}, "debian", zone, None)
    assert decide(spec, one, counts, now) == decide(spec, other, counts, now)
