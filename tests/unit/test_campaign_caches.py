"""The campaign rules' caches give exactly what they cache: the window
cache what `evaluate_windows` gives, shares what exact arithmetic gives, a
snapshot's kept halt what a fresh evaluation gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.campaigns import CampaignState, CellTally, Tallies, gates, parse_campaign
from controller.campaigns.quota import count, percent
from controller.campaigns.windows import WindowCache, evaluate_windows, load_zone, parse_weekly

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Mon-Fri", "Sat,Sun", "Fri-Mon"]
BASE = datetime(2026, 3, 20, tzinfo=UTC)  # a week before the EU clocks go forward


@st.composite
def windows(draw: st.DrawFn) -> tuple[tuple[object, ...], object, frozenset[date], timedelta]:
    weekly = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 47)) * 30
        length = draw(st.integers(1, 48)) * 30
        end = (start + length) % 1440
        if end == start:
            end = (end + 30) % 1440
        text = f"{draw(st.sampled_from(DAYS))} {start // 60:02d}:{start % 60:02d}-"
        text += "24:00" if end == 0 else f"{end // 60:02d}:{end % 60:02d}"
        weekly.append(parse_weekly(text))
    shortest = min(w.length for w in weekly)
    cutoff = timedelta(minutes=draw(st.integers(0, int(shortest / timedelta(minutes=1)) - 1)))
    blackout = frozenset(
        BASE.date() + timedelta(days=d) for d in draw(st.lists(st.integers(0, 30), max_size=3))
    )
    zone = load_zone(draw(st.sampled_from(ZONES)))
    return tuple(weekly), zone, blackout, cutoff


@settings(max_examples=60, deadline=None)
@given(policy=windows(), steps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=40))
def test_the_window_cache_answers_what_evaluate_windows_answers(policy, steps):
    weekly, zone, blackout, cutoff = policy
    memo = WindowCache()
    now = BASE
    for seconds in steps:
        now += timedelta(seconds=seconds)
        assert memo(weekly, zone, blackout, cutoff, now) == evaluate_windows(
            weekly, zone, blackout, cutoff, now
        )
    assert memo.misses <= memo.calls


def test_the_window_cache_saves_most_evaluations():
    weekly = (parse_weekly("Mon-Fri 22:00-04:00"),)
    zone = ZoneInfo("Europe/Berlin")
    memo = WindowCache()
    blackout: frozenset[date] = frozenset()
    for minute in range(0, 7 * 24 * 60, 5):
        memo(weekly, zone, blackout, timedelta(0), BASE + timedelta(minutes=minute))
    assert memo.calls == 2016
    assert memo.misses < 30  # about two a day: at each change and each local midnight


@given(total=st.integers(0, 10**6), amount=st.integers(0, 100))
def test_shares_are_exact(total, amount):
    assert count(amount).ceil_of(total) == count(amount).floor_of(total) == amount
    exact = amount * total
    assert percent(amount).floor_of(total) == exact // 100
    assert percent(amount).ceil_of(total) == max(1, -(-exact // 100))


SPEC = parse_campaign(
    '[campaign]\nname = "h"\n[patch]\npackages = ["openssl"]\n'
    "[rollout]\nrings = [{ ring = 0, gate = { failure_budget = 1 } }]\n",
    "h.toml",
)


def test_a_snapshot_keeps_its_halt_and_a_new_snapshot_gets_its_own():
    fine = Tallies(CampaignState.RUNNING, {(0, "eu"): CellTally(eligible=10, reverted=1)})
    assert gates.evaluate_halt(SPEC, fine) is None
    assert gates.evaluate_halt(SPEC, fine) is None  # kept
    broken = Tallies(CampaignState.RUNNING, {(0, "eu"): CellTally(eligible=10, reverted=2)})
    halt = gates.evaluate_halt(SPEC, broken)
    assert halt is not None
    assert halt.count == 2
    assert gates.evaluate_halt(SPEC, broken) is halt
    other = parse_campaign(
        '[campaign]\nname = "h"\n[patch]\npackages = ["openssl"]\n'
        "[rollout]\nrings = [{ ring = 0, gate = { failure_budget = 5 } }]\n",
        "h.toml",
    )
    assert gates.evaluate_halt(other, broken) is None  # another campaign, its own answer
