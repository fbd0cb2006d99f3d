"""agent.link.checkin: the check-in interval a controller announces is taken
within bounds. A broken or hostile controller can neither crash the agent
with a Duration no datetime holds, nor make it check in (and list its
packages) in a tight loop, nor send it away for years."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleetpatch.v1 import agent_pb2
from google.protobuf.duration_pb2 import Duration

from agent.backends.packages import Inventory
from agent.link.checkin import MAX_INTERVAL, MIN_INTERVAL, CheckIns, announced_interval
from agent.orders.journal import Journal
from agent.statedir import AgentConfig
from tests.support.fakes import Floor, RecordingStop

MAX_DURATION = 315_576_000_000  # seconds: protobuf's largest valid Duration (10,000 years)
INT64 = 2**63 - 1


class _Announcing:
    """A controller client whose check-ins announce these next_checkin
    values in turn (the last one over and over)."""

    def __init__(self, *durations: Duration) -> None:
        self.durations = list(durations)
        self.calls = 0

    def check_in(self, request: object) -> agent_pb2.CheckInResponse:
        self.calls += 1
        duration = self.durations.pop(0) if len(self.durations) > 1 else self.durations[0]
        return agent_pb2.CheckInResponse(next_checkin=duration)


def _checkins(journal: Journal, client: _Announcing) -> CheckIns:
    return CheckIns(
        AgentConfig("c:1", "c:2"), journal, client,  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]), rng=Floor(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("duration", "expected", "outside"),
    [
        (Duration(seconds=300), timedelta(seconds=300), False),
        (Duration(seconds=299, nanos=123_456_789), timedelta(seconds=299.123456), False),
        (Duration(seconds=1), MIN_INTERVAL, False),
        (Duration(seconds=86_400), MAX_INTERVAL, False),
        (Duration(seconds=MAX_DURATION), MAX_INTERVAL, True),
        (Duration(seconds=10**10), MAX_INTERVAL, True),
        (Duration(seconds=86_400, nanos=1), MAX_INTERVAL, True),
        (Duration(seconds=INT64, nanos=999_999_999), MAX_INTERVAL, True),
        (Duration(seconds=-100), MIN_INTERVAL, True),
        (Duration(seconds=-MAX_DURATION), MIN_INTERVAL, True),
        (Duration(seconds=-INT64 - 1, nanos=-999_999_999), MIN_INTERVAL, True),
        (Duration(seconds=0), MIN_INTERVAL, True),
        (Duration(), MIN_INTERVAL, True),  # not set at all
        (Duration(nanos=500_000_000), MIN_INTERVAL, True),
        (Duration(seconds=2, nanos=-1_500_000_000), MIN_INTERVAL, True),  # invalid: 0.5 s
    ],
    ids=lambda v: repr(v) if not isinstance(v, Duration) else f"{v.seconds}s{v.nanos}ns",
)
def test_the_interval_is_taken_within_the_bounds(duration, expected, outside):
    assert announced_interval(duration) == (expected, outside)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(MAX_DURATION, MAX_INTERVAL), (10**10, MAX_INTERVAL), (-100, MIN_INTERVAL),
     (0, MIN_INTERVAL), (INT64, MAX_INTERVAL)],
)  # fmt: skip
def test_one_check_in_schedules_a_sane_time_and_does_not_raise(tmp_path, seconds, expected):
    """`run --once` as it was probed: the largest Duration raised
    OverflowError (date value out of range) with a traceback."""
    journal = Journal.open(tmp_path / "journal.db")
    before = datetime.now(UTC)
    report = _checkins(journal, _Announcing(Duration(seconds=seconds))).once()
    after = datetime.now(UTC)
    assert report.next_in == expected
    scheduled = journal.checkin_state().next_checkin
    assert scheduled is not None
    assert before + expected <= scheduled <= after + expected
    assert journal.checkin_state().interval is not None


@pytest.mark.parametrize(
    ("seconds", "delay"),
    [(0, 1.0), (-100, 1.0), (10**10, 86_400.0), (MAX_DURATION, 86_400.0)],
)
def test_the_loop_waits_a_sane_delay_whatever_the_controller_announces(tmp_path, seconds, delay):
    """0 or -100 made a tight loop (386 check-ins, each listing the packages,
    in 8 s); 10**10 killed the daemon in Event.wait (timestamp out of range
    for platform time_t). The delay each wait is given is what is checked."""
    client = _Announcing(Duration(seconds=seconds))
    stop = RecordingStop(5)
    _checkins(Journal.open(tmp_path / "journal.db"), client).run(stop)
    assert stop.waits == [delay] * 5
    assert client.calls == 5  # one check-in per wait: no check-in without a wait


def test_a_retry_after_a_bogus_interval_stays_within_the_bounds(tmp_path):
    """The backoff after a failure is capped by the last interval: the
    clamped one, so a controller that announced years keeps no host away."""
    from agent.errors import ControllerUnavailable

    class _ThenDown(_Announcing):
        def check_in(self, request: object) -> agent_pb2.CheckInResponse:
            if self.calls >= 1:
                self.calls += 1
                raise ControllerUnavailable("cannot reach the controller at c:1")
            return super().check_in(request)

    stop = RecordingStop(3)
    checkins = CheckIns(
        AgentConfig("c:1", "c:2"), Journal.open(tmp_path / "journal.db"),
        _ThenDown(Duration(seconds=MAX_DURATION)),  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]), rng=random.Random(1),
    )  # fmt: skip
    checkins.run(stop)
    assert stop.waits[0] == 86_400.0
    assert all(0 <= wait <= 300 for wait in stop.waits[1:])  # max_retry_delay's default


def test_an_interval_out_of_range_is_warned_of_once_while_it_lasts(tmp_path, caplog):
    client = _Announcing(
        Duration(seconds=0), Duration(seconds=0), Duration(seconds=-5), Duration(seconds=300),
        Duration(seconds=10**10), Duration(seconds=10**10),
    )  # fmt: skip
    stop = RecordingStop(6)
    with caplog.at_level(logging.INFO, logger="agent.link.checkin"):
        _checkins(Journal.open(tmp_path / "journal.db"), client).run(stop)
    assert stop.waits == [1.0, 1.0, 1.0, 300.0, 86_400.0, 86_400.0]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "check-in: the controller announced the next check-in in 0s, not within 1s to "
        "86400s; using 1s until it announces one within",
        "check-in: the controller announced the next check-in in 10000000000s, not within "
        "1s to 86400s; using 86400s until it announces one within",
    ]
    assert sum("within range again" in r.getMessage() for r in caplog.records) == 1


def test_an_interval_within_the_bounds_is_taken_as_announced_and_not_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = _Announcing(Duration(seconds=1), Duration(seconds=300), Duration(seconds=86_400))
    stop = RecordingStop(3)
    with caplog.at_level(logging.INFO, logger="agent.link.checkin"):
        _checkins(Journal.open(tmp_path / "journal.db"), client).run(stop)
    assert stop.waits == [1.0, 300.0, 86_400.0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
