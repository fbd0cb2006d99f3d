"""agent.backoff: exponential backoff with full jitter."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backends.packages import Inventory
from agent.errors import ControllerUnavailable
from agent.link.backoff import backoff_delay, retry_delay
from agent.link.checkin import CheckIns
from agent.orders.journal import Journal
from agent.statedir import AgentConfig, Timing
from tests.support.fakes import Ceiling, Floor, RecordingStop


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (8, 128), (9, 256), (10, 300), (50, 300), (10**6, 300)],
)
def test_ceiling_doubles_up_to_the_cap(attempt, ceiling):
    assert backoff_delay(attempt, Ceiling()) == ceiling


def test_floor_is_zero():
    assert backoff_delay(7, Floor()) == 0


def test_base_and_cap():
    assert backoff_delay(3, Ceiling(), base=0.5, cap=10) == 2.0
    assert backoff_delay(6, Ceiling(), base=0.5, cap=10) == 10


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.01, max_value=60),
    st.floats(min_value=0.1, max_value=3600),
    st.integers(min_value=0, max_value=2**32),
)
def test_delay_within_zero_and_the_ceiling(attempt, base, cap, seed):
    delay = backoff_delay(attempt, random.Random(seed), base=base, cap=cap)
    # beyond 2**40 the cap always wins here; keeps the float product finite
    ceiling = min(cap, base * 2 ** min(attempt - 1, 40))
    assert 0 <= delay <= ceiling * (1 + 1e-12)


def test_delays_grow_with_attempts():
    rng = random.Random(1234)

    def mean(attempt: int) -> float:
        return sum(backoff_delay(attempt, rng) for _ in range(400)) / 400

    means = [mean(a) for a in range(1, 10)]
    assert means == sorted(means)
    assert means[0] < 1 <= means[-1]
    assert 120 < mean(20) < 180  # capped at 300: mean of uniform(0, 300)


def test_full_jitter_spreads_a_fleet():
    rng = random.Random(5)
    delays = [backoff_delay(6, rng) for _ in range(1000)]
    assert len(set(delays)) == 1000
    assert min(delays) < 2
    assert max(delays) > 30


class _Down:
    """A controller client whose controller is down."""

    def check_in(self, request: object) -> object:
        raise ControllerUnavailable("cannot reach the controller at c:1")


def _checkins(tmp_path: Path, max_retry_delay: timedelta) -> CheckIns:
    config = AgentConfig("c:1", "c:2", timing=Timing(max_retry_delay=max_retry_delay))
    return CheckIns(
        config,
        Journal.open(tmp_path / "journal.db"),
        _Down(),  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]),
        rng=Ceiling(),
    )


@pytest.mark.parametrize(("cap", "expected"), [(3, [1, 2, 3, 3, 3]), (300, [1, 2, 4, 8, 16])])
def test_check_in_retries_back_off_up_to_max_retry_delay(tmp_path, cap, expected):
    stop = RecordingStop(5)
    _checkins(tmp_path, timedelta(seconds=cap)).run(stop)
    assert stop.waits == expected


def test_retry_delay_does_as_an_overloaded_controller_asks():
    rng = random.Random(3)
    delays = [retry_delay(1, rng, max_delay=300, interval=60, retry_after=5) for _ in range(500)]
    assert min(delays) >= 5
    assert max(delays) <= 10


@pytest.mark.parametrize(
    ("max_delay", "interval", "ceiling"),
    [(300, 60, 60), (300, None, 300), (30, 60, 30), (300, 0.2, 1.0)],
    ids=["interval-caps", "interval-unknown", "max-delay-caps", "at-least-1s"],
)
def test_after_an_outage_the_backoff_stops_at_the_interval(max_delay, interval, ceiling):
    assert retry_delay(40, Ceiling(), max_delay=max_delay, interval=interval) == ceiling
