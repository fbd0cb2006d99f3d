"""controller.api.checkin: when a host should check in next."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.checkin import Pace


def next_checkin(interval: timedelta, jitter: float, rng: random.Random) -> timedelta:
    """One answer's next_checkin, as the agent reads it."""
    return Pace(interval, jitter, rng).next().ToTimedelta()


@given(
    st.integers(min_value=1, max_value=7 * 86400),
    st.floats(min_value=0, max_value=0.99),
    st.integers(min_value=0, max_value=2**32),
)
def test_stays_within_jitter_and_never_below_one_second(interval_s, jitter, seed):
    interval = timedelta(seconds=interval_s)
    got = next_checkin(interval, jitter, random.Random(seed)).total_seconds()
    spread = interval_s * jitter
    assert got >= max(1.0, interval_s - spread) - 1e-6
    assert got <= max(1.0, interval_s + spread) + 1e-6


def test_no_jitter_is_exact():
    rng = random.Random(1)
    assert {next_checkin(timedelta(minutes=5), 0.0, rng) for _ in range(20)} == {
        timedelta(minutes=5)
    }


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(milliseconds=200)])
def test_floor_is_one_second(interval):
    rng = random.Random(7)
    assert all(next_checkin(interval, 0.5, rng) == timedelta(seconds=1) for _ in range(50))


def test_floor_applies_when_jitter_reaches_below_one_second():
    rng = random.Random(3)
    values = [next_checkin(timedelta(seconds=2), 0.9, rng) for _ in range(500)]
    assert min(values) == timedelta(seconds=1)
    assert max(values) > timedelta(seconds=3)


def test_spreads_a_fleet_across_the_whole_window():
    rng = random.Random(42)
    interval = timedelta(minutes=5)
    values = [next_checkin(interval, 0.2, rng).total_seconds() for _ in range(2000)]
    assert len(set(values)) > 1900
    assert min(values) < 300 * 0.81
    assert max(values) > 300 * 1.19
    # uniform: both halves of the window get a fair share, and the mean is the interval
    below = sum(v < 300 for v in values)
    assert 800 < below < 1200
    assert abs(sum(values) / len(values) - 300) < 3


def test_uses_the_rng_it_is_given():
    a = [next_checkin(timedelta(minutes=5), 0.2, random.Random(9)) for _ in range(3)]
    b = [next_checkin(timedelta(minutes=5), 0.2, random.Random(9)) for _ in range(3)]
    assert a == b
    assert next_checkin(timedelta(minutes=5), 0.2, random.Random(10)) != a[0]


def test_the_duration_is_valid_and_the_spread_value_to_the_nanosecond():
    pace, same = Pace(timedelta(minutes=5), 0.2, random.Random(5)), random.Random(5)
    for _ in range(1000):
        got = pace.next()
        wanted = 300 + same.uniform(-60, 60)
        assert 0 <= got.nanos < 1_000_000_000
        assert abs(wanted - (got.seconds + got.nanos / 1e9)) < 1e-9
