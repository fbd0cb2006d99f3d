"""Maintenance windows: parsing, DST in two zones, midnight, blackouts, cutoff."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.campaigns.windows import (
    WindowClosed,
    WindowOpen,
    evaluate_windows,
    load_zone,
    parse_weekly,
    resolve_local,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ZERO = timedelta(0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def at(spec: str | list[str], tz: ZoneInfo, now: datetime, cutoff: timedelta = ZERO, blackout=()):
    specs = [spec] if isinstance(spec, str) else spec
    return evaluate_windows([parse_weekly(s) for s in specs], tz, frozenset(blackout), cutoff, now)


def open_span(spec: str, tz: ZoneInfo, inside: datetime) -> tuple[datetime, datetime]:
    """The (opening, closing) of the window open at ``inside``."""
    state = at(spec, tz, inside)
    assert isinstance(state, WindowOpen), state
    assert state.closes_at is not None
    before = at(spec, tz, inside - timedelta(days=1))
    assert isinstance(before, WindowClosed)
    assert before.opens_at is not None
    return before.opens_at, state.closes_at


# --- parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("Sat,Sun 02:00-05:00", {5, 6}, 120, 300),
        ("Mon-Fri 22:00-04:00", {0, 1, 2, 3, 4}, 1320, 1440 + 240),
        ("Fri-Mon 00:00-24:00", {4, 5, 6, 0}, 0, 1440),
        ("sunday 23:30-00:15", {6}, 1410, 1440 + 15),
        ("Tue,Thu-Sat  9:05 - 9:35", {1, 3, 4, 5}, 545, 575),
    ],
)
def test_parse_weekly(text: str, days: set[int], start: int, end: int) -> None:
    window = parse_weekly(text)
    assert window.days == days
    assert (window.start, window.end) == (start, end)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Sat", "is not a window"),
        ("Caturday 02:00-03:00", "'Caturday' is not a day"),
        ("Sat 02:60-03:00", "is not a time of day"),
        ("Sat 24:30-03:00", "is not a time of day"),
        ("Sat 03:00-03:00", "empty"),
        ("Sat 24:00-03:00", "cannot start at 24:00"),
    ],
)
def test_parse_weekly_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_weekly(text)


def test_load_zone_unknown_is_none() -> None:
    assert load_zone("Europe/Berlin") is BERLIN
    assert load_zone("Mars/Olympus") is None
    assert load_zone("") is None
    assert load_zone("../etc/passwd") is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        at("Sat 02:00-05:00", BERLIN, datetime(2025, 1, 1))


# --- an ordinary week ----------------------------------------------------


def test_open_reports_usable_close_and_closed_reports_next_opening() -> None:
    # Saturday 2025-01-04, Berlin is UTC+1: 02:00-05:00 local is 01:00-04:00 UTC.
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 2), cutoff=timedelta(minutes=30))
    assert state == WindowOpen(closes_at=utc(2025, 1, 4, 3, 30), ends_at=utc(2025, 1, 4, 4))
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 5))
    assert state == WindowClosed(opens_at=utc(2025, 1, 11, 1), searched_until=state.searched_until)


def test_start_is_inclusive_and_usable_end_exclusive() -> None:
    cutoff = timedelta(minutes=30)
    assert isinstance(at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 1), cutoff), WindowOpen)
    assert isinstance(at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 0, 59), cutoff), WindowClosed)
    # Inside the cutoff no patch may start: closed, next opening a week later.
    assert isinstance(at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 3, 29), cutoff), WindowOpen)
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 4, 3, 30), cutoff)
    assert state == WindowClosed(utc(2025, 1, 11, 1), state.searched_until)


# --- midnight ------------------------------------------------------------


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    # Friday 2025-01-10 22:00 Berlin to Saturday 04:00.
    assert open_span("Fri 22:00-04:00", BERLIN, utc(2025, 1, 11, 1)) == (
        utc(2025, 1, 10, 21),
        utc(2025, 1, 11, 3),
    )
    # Saturday 22:00 opens nothing: only Friday starts a window.
    state = at("Fri 22:00-04:00", BERLIN, utc(2025, 1, 11, 22))
    assert state == WindowClosed(utc(2025, 1, 17, 21), state.searched_until)


def test_crossing_midnight_with_cutoff_after_midnight() -> None:
    cutoff = timedelta(minutes=45)
    state = at("Mon-Fri 22:00-04:00", NEW_YORK, utc(2025, 1, 7, 7, 0), cutoff)  # Tue 02:00 EST
    assert state == WindowOpen(closes_at=utc(2025, 1, 7, 8, 15), ends_at=utc(2025, 1, 7, 9))
    state = at("Mon-Fri 22:00-04:00", NEW_YORK, utc(2025, 1, 7, 8, 20), cutoff)
    assert state == WindowClosed(utc(2025, 1, 8, 3), state.searched_until)  # Tue 22:00 EST


def test_touching_windows_merge_and_cutoff_applies_at_the_end() -> None:
    specs = ["Mon 22:00-24:00", "Tue 00:00-02:00"]
    state = at(specs, BERLIN, utc(2025, 1, 6, 22, 50), cutoff=timedelta(minutes=30))
    assert state == WindowOpen(closes_at=utc(2025, 1, 7, 0, 30), ends_at=utc(2025, 1, 7, 1))


def test_always_open_has_no_closing_time() -> None:
    state = at("Mon-Sun 00:00-24:00", BERLIN, utc(2025, 6, 1, 12))
    assert state == WindowOpen(closes_at=None, ends_at=None)


# --- DST: Europe/Berlin (last Sunday of March / October, at 02:00/03:00) --


def test_berlin_spring_forward_window_inside_skipped_hour_does_not_open() -> None:
    # 2025-03-30: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:00-03:00 never happens.
    state = at("Sun 02:00-03:00", BERLIN, utc(2025, 3, 29, 12))
    assert isinstance(state, WindowClosed)
    assert state.opens_at == utc(2025, 4, 6, 0)  # the next Sunday, 02:00 CEST


def test_berlin_spring_forward_window_across_the_jump_is_an_hour_shorter() -> None:
    # 01:00 CET (00:00 UTC) to 05:00 CEST (03:00 UTC): 3 hours, not 4.
    assert open_span("Sun 01:00-05:00", BERLIN, utc(2025, 3, 30, 1)) == (
        utc(2025, 3, 30, 0),
        utc(2025, 3, 30, 3),
    )


def test_berlin_spring_forward_start_inside_gap_opens_at_the_jump() -> None:
    assert open_span("Sun 02:30-04:00", BERLIN, utc(2025, 3, 30, 1, 30)) == (
        utc(2025, 3, 30, 1),  # the instant of the jump
        utc(2025, 3, 30, 2),  # 04:00 CEST
    )


def test_berlin_fall_back_window_over_repeated_hour_lasts_two_hours() -> None:
    # 2025-10-26: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:00-03:00 repeats.
    assert open_span("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 1, 30)) == (
        utc(2025, 10, 26, 0),  # 02:00 CEST, first pass
        utc(2025, 10, 26, 2),  # 03:00 CET
    )


def test_berlin_fall_back_window_ending_in_repeated_hour_ends_in_first_pass() -> None:
    # 01:30-02:30: from 01:30 CEST to the first 02:30 (CEST); the second pass is closed.
    assert open_span("Sun 01:30-02:30", BERLIN, utc(2025, 10, 25, 23, 45)) == (
        utc(2025, 10, 25, 23, 30),
        utc(2025, 10, 26, 0, 30),
    )
    assert isinstance(at("Sun 01:30-02:30", BERLIN, utc(2025, 10, 26, 1, 15)), WindowClosed)


def test_berlin_fall_back_cutoff_counts_real_time() -> None:
    # Window 02:00-03:00 lasts 2 h this night; a 30 min cutoff leaves 1.5 h.
    state = at("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 1), cutoff=timedelta(minutes=30))
    assert state == WindowOpen(closes_at=utc(2025, 10, 26, 1, 30), ends_at=utc(2025, 10, 26, 2))


# --- DST: America/New_York (2nd Sunday of March, 1st Sunday of November) --


def test_new_york_spring_forward() -> None:
    # 2025-03-09: 02:00 EST (07:00 UTC) jumps to 03:00 EDT.
    state = at("Sun 02:00-03:00", NEW_YORK, utc(2025, 3, 8, 12))
    assert isinstance(state, WindowClosed)
    assert state.opens_at == utc(2025, 3, 16, 6)  # 02:00 EDT the next Sunday
    assert open_span("Sun 01:00-04:00", NEW_YORK, utc(2025, 3, 9, 7, 30)) == (
        utc(2025, 3, 9, 6),  # 01:00 EST
        utc(2025, 3, 9, 8),  # 04:00 EDT: 2 hours
    )


def test_new_york_fall_back() -> None:
    # 2025-11-02: 02:00 EDT (06:00 UTC) falls back to 01:00 EST; 01:00-02:00 repeats.
    assert open_span("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 6, 30)) == (
        utc(2025, 11, 2, 5),  # 01:00 EDT
        utc(2025, 11, 2, 7),  # 02:00 EST
    )


def test_new_york_window_crossing_midnight_on_dst_night() -> None:
    # Saturday 2025-03-08 22:00 EST to Sunday 04:00 EDT: 5 hours.
    assert open_span("Sat 22:00-04:00", NEW_YORK, utc(2025, 3, 9, 5)) == (
        utc(2025, 3, 9, 3),
        utc(2025, 3, 9, 8),
    )


def test_resolve_local_in_gap_and_fold() -> None:
    assert resolve_local(date(2025, 3, 30), 150, BERLIN) == utc(2025, 3, 30, 1)
    assert resolve_local(date(2025, 10, 26), 150, BERLIN) == utc(2025, 10, 26, 0, 30)
    assert resolve_local(date(2025, 3, 9), 24 * 60 + 60, NEW_YORK) == utc(2025, 3, 10, 5)
    # A zone that jumps at midnight: America/Havana skipped 00:00-01:00 on 2025-03-09.
    havana = ZoneInfo("America/Havana")
    assert resolve_local(date(2025, 3, 9), 0, havana) == utc(2025, 3, 9, 5)


# --- blackout dates ------------------------------------------------------


def test_blackout_day_is_closed_and_next_week_opens() -> None:
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 3, 12), blackout=[date(2025, 1, 4)])
    assert state == WindowClosed(utc(2025, 1, 11, 1), state.searched_until)


def test_window_crossing_into_blackout_closes_at_local_midnight() -> None:
    cutoff = timedelta(minutes=30)
    state = at("Fri 22:00-04:00", BERLIN, utc(2025, 1, 10, 21), cutoff, [date(2025, 1, 11)])
    # Saturday starts at 23:00 UTC Friday; minus the cutoff.
    assert state == WindowOpen(closes_at=utc(2025, 1, 10, 22, 30), ends_at=utc(2025, 1, 10, 23))


def test_blackout_on_start_day_leaves_the_part_after_midnight() -> None:
    state = at("Fri 22:00-04:00", BERLIN, utc(2025, 1, 10, 12), blackout=[date(2025, 1, 10)])
    assert state == WindowClosed(utc(2025, 1, 10, 23), state.searched_until)


def test_blackout_dates_are_local_days_of_the_window_zone() -> None:
    # Monday 22:00 in New York is Tuesday 03:00 UTC; the blackout is Monday in
    # New York, so that occurrence is closed and the next is a week later.
    state = at("Mon 22:00-23:00", NEW_YORK, utc(2025, 1, 6, 12), blackout=[date(2025, 1, 6)])
    assert state == WindowClosed(utc(2025, 1, 14, 3), state.searched_until)


def test_long_blackout_is_searched_past() -> None:
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(90)]
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 1), blackout=days)
    assert isinstance(state, WindowClosed)
    assert state.opens_at == utc(2025, 4, 5, 0)  # first Saturday after, CEST


def test_endless_blackout_gives_no_opening_and_a_time_to_ask_again() -> None:
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(500)]
    state = at("Sat 02:00-05:00", BERLIN, utc(2025, 1, 1), blackout=days)
    assert isinstance(state, WindowClosed)
    assert state.opens_at is None
    assert state.searched_until > utc(2026, 1, 1)


# --- properties ------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
SPECS = ["Sat,Sun 02:00-05:00", "Mon-Fri 22:00-04:00", "Sun 01:30-02:30", "Wed 00:00-24:00"]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    specs=st.lists(st.sampled_from(SPECS), min_size=1, max_size=3, unique=True),
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)),
    cutoff_minutes=st.integers(0, 50),
)
def test_answers_are_consistent(
    zone: str, specs: list[str], now: datetime, cutoff_minutes: int
) -> None:
    tz = ZoneInfo(zone)
    now = now.replace(tzinfo=UTC)
    cutoff = timedelta(minutes=cutoff_minutes)
    state = at(specs, tz, now, cutoff)
    if isinstance(state, WindowOpen):
        assert state.closes_at is not None
        assert state.ends_at is not None
        assert now < state.closes_at == state.ends_at - cutoff
        # Just before the usable close it is still open; at it, closed.
        assert isinstance(at(specs, tz, state.closes_at - timedelta(seconds=1), cutoff), WindowOpen)
        assert isinstance(at(specs, tz, state.closes_at, cutoff), WindowClosed)
    else:
        assert state.opens_at is not None
        assert state.opens_at > now
        assert isinstance(at(specs, tz, state.opens_at, cutoff), WindowOpen)
        assert isinstance(
            at(specs, tz, state.opens_at - timedelta(seconds=1), cutoff), WindowClosed
        )
        # Nothing opens in between: halfway is closed too.
        halfway = now + (state.opens_at - now) / 2
        assert isinstance(at(specs, tz, halfway, cutoff), WindowClosed)
