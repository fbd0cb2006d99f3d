"""The simulator's memos give exactly what the scheduler's functions give."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.campaigns import gates, scheduler
from controller.campaigns.quota import Quota, count, percent
from controller.campaigns.windows import evaluate_windows, load_zone, parse_weekly
from simulator.speedups import HaltMemo, WindowMemo, installed

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
def test_the_window_memo_answers_what_evaluate_windows_answers(policy, steps):
    weekly, zone, blackout, cutoff = policy
    memo = WindowMemo()
    now = BASE
    for seconds in steps:
        now += timedelta(seconds=seconds)
        assert memo(weekly, zone, blackout, cutoff, now) == evaluate_windows(
            weekly, zone, blackout, cutoff, now
        )
    assert memo.misses <= memo.calls


def test_the_window_memo_saves_most_evaluations():
    weekly = (parse_weekly("Mon-Fri 22:00-04:00"),)
    zone = ZoneInfo("Europe/Berlin")
    memo = WindowMemo()
    blackout: frozenset[date] = frozenset()
    for minute in range(0, 7 * 24 * 60, 5):
        memo(weekly, zone, blackout, timedelta(0), BASE + timedelta(minutes=minute))
    assert memo.calls == 2016
    assert memo.misses < 30  # about two a day: at each change and each local midnight


@given(total=st.integers(0, 10**6), amount=st.integers(0, 100))
def test_quota_memos_agree(total, amount):
    quotas = [count(amount), percent(amount)]
    expected = [(q.ceil_of(total), q.floor_of(total)) for q in quotas]
    with installed(WindowMemo(), HaltMemo()):
        assert [(q.ceil_of(total), q.floor_of(total)) for q in quotas] == expected
        assert [(q.ceil_of(total), q.floor_of(total)) for q in quotas] == expected


def test_installed_puts_the_originals_back():
    names = ("evaluate_windows", "evaluate_halt")
    originals = [getattr(scheduler, n) for n in names] + [Quota.ceil_of, Quota.floor_of]
    with installed(WindowMemo(), HaltMemo()):
        assert all(getattr(scheduler, n) is not o for n, o in zip(names, originals, strict=False))
    after = [getattr(scheduler, n) for n in names] + [Quota.ceil_of, Quota.floor_of]
    assert after == originals


def test_the_halt_memo_recomputes_for_a_new_snapshot(monkeypatch):
    calls = []

    def fake(campaign, tallies):
        calls.append(tallies)

    monkeypatch.setattr(gates, "evaluate_halt", fake)
    memo = HaltMemo()
    campaign, first, second = object(), object(), object()
    memo(campaign, first)  # type: ignore[arg-type]
    memo(campaign, first)  # type: ignore[arg-type]
    memo(campaign, second)  # type: ignore[arg-type]
    assert calls == [first, second]
