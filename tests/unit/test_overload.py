"""An overloaded controller (RESOURCE_EXHAUSTED + fleetpatch-retry-after-ms)
is left alone for at least the delay it asks, spread, logged once per
episode; after an outage a fleet comes back within one check-in interval."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from fleetpatch import overload
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from agent.backends.packages import Inventory
from agent.errors import AgentError, ControllerUnavailable, Overloaded, TransientError
from agent.link import client as client_module
from agent.link import convert
from agent.link.checkin import CheckIns
from agent.link.reporting import Reports
from agent.orders.journal import Journal
from agent.statedir import AgentConfig, Timing
from agent.textfile import Textfile
from tests.support.fakes import Ceiling, Floor, RecordingStop

# -- the client: RESOURCE_EXHAUSTED becomes Overloaded with its delay -----------------


class _Busy(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, hint: str | None) -> None:
        self.hint = hint

    def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CheckInResponse:
        if self.hint is not None:
            context.set_trailing_metadata(((overload.RETRY_AFTER_KEY, self.hint),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many check-ins")
        raise AssertionError("abort returns only by raising")


@pytest.fixture
def busy_server() -> Iterator[tuple[_Busy, str]]:
    servicer = _Busy(None)  # type: ignore[abstract]  # only CheckIn is called
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.mark.parametrize(
    ("hint", "expected"),
    [("1500", 1.5), ("0", 0.0), (None, None), ("soon", None), ("-5", None), ("", None),
     (str(10**12), overload.MAX_RETRY_AFTER_SECONDS)],
)  # fmt: skip
def test_resource_exhausted_is_overloaded_with_the_delay_asked(busy_server, hint, expected):
    servicer, address = busy_server
    servicer.hint = hint
    with grpc.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(Overloaded, match="is overloaded: too many check-ins") as raised:
            client_module._call(address, lambda: stub.CheckIn(agent_pb2.CheckInRequest()))
    assert raised.value.retry_after == expected
    assert raised.value.exit_code == 3


class _NoDatabase(agent_pb2_grpc.AgentServiceServicer):
    """A controller whose database is down, as its servicers answer."""

    def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CheckInResponse:
        context.set_trailing_metadata(overload.retry_after_trailer(5.0))
        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable")
        raise AssertionError("abort returns only by raising")


def test_unavailable_with_a_delay_is_controller_unavailable_with_it():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(_NoDatabase(), server)  # type: ignore[abstract]
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(ControllerUnavailable, match="database is unavailable") as raised:
                client_module._call(address, lambda: stub.CheckIn(agent_pb2.CheckInRequest()))
    finally:
        server.stop(None)
    assert raised.value.retry_after == 5.0


# -- the check-in loop ----------------------------------------------------------------


class _Script:
    """A controller client that answers check-ins from a script: a number
    is a successful check-in announcing that interval, an exception is raised."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls = 0

    def check_in(self, request: object) -> agent_pb2.CheckInResponse:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, int)
        return agent_pb2.CheckInResponse(next_checkin=Duration(seconds=answer))


def _run(
    tmp_path: Path, client: _Script, n: int, rng: random.Random, max_retry: int = 300,
    journal: Journal | None = None,
) -> list[float]:  # fmt: skip
    config = AgentConfig("c:1", "c:2", timing=Timing(max_retry_delay=timedelta(seconds=max_retry)))
    stop = RecordingStop(n)
    CheckIns(
        config, journal or Journal.open(tmp_path / "journal.db"), client,  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]), rng=rng,
    ).run(stop)  # fmt: skip
    return stop.waits


BUSY = Overloaded("the controller at c:1 is overloaded: busy", retry_after=40.0)
DOWN = ControllerUnavailable("cannot reach the controller at c:1")


@pytest.mark.parametrize(("rng", "wait"), [(Floor(), 40.0), (Ceiling(), 80.0)])
def test_check_ins_wait_once_to_twice_the_delay_the_controller_asks(tmp_path, rng, wait):
    # Not the backoff (1, 2, 4 s): at least what was asked, however many attempts.
    assert _run(tmp_path, _Script(BUSY), 4, rng) == [wait] * 4


def test_a_controller_without_its_database_is_asked_again_when_it_says(tmp_path):
    no_db = ControllerUnavailable("cannot reach the controller at c:1: no db", retry_after=5.0)
    assert _run(tmp_path, _Script(no_db), 3, Floor()) == [5.0] * 3
    assert _run(tmp_path, _Script(DOWN), 3, Ceiling()) == [1, 2, 4]  # unreachable: backoff


def test_overload_without_a_delay_backs_off_as_usual(tmp_path):
    busy = Overloaded("overloaded", retry_after=None)
    assert _run(tmp_path, _Script(busy), 4, Ceiling()) == [1, 2, 4, 8]


def test_overload_is_logged_once_per_episode(tmp_path, caplog):
    client = _Script(BUSY, BUSY, BUSY, 30, BUSY, BUSY)
    with caplog.at_level(logging.INFO, logger="agent.link.checkin"):
        _run(tmp_path, client, 6, Floor())
    overloaded = [r for r in caplog.records if "overloaded" in r.getMessage()]
    assert len(overloaded) == 2  # the first episode, and the second
    assert all(r.levelno == logging.WARNING for r in overloaded)
    assert sum("takes check-ins again" in r.getMessage() for r in caplog.records) == 1


def test_after_an_outage_retries_stay_within_the_announced_interval(tmp_path):
    """A 20 s interval, max_retry_delay 300 s: the fleet is back within 20 s."""
    waits = _run(tmp_path, _Script(20, DOWN), 9, Ceiling())
    assert waits == [20, 1, 2, 4, 8, 16, 20, 20, 20]


def test_the_interval_cap_survives_a_restart(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    now = datetime.now(UTC)
    journal.record_checkin("", now + timedelta(seconds=10), now=now)
    assert _run(tmp_path, _Script(DOWN), 6, Ceiling(), journal=journal) == [1, 2, 4, 8, 10, 10]


def test_max_retry_delay_still_caps_a_long_interval(tmp_path):
    waits = _run(tmp_path, _Script(3600, DOWN), 8, Ceiling(), max_retry=30)
    assert waits == [3600, 1, 2, 4, 8, 16, 30, 30]


def test_the_metrics_textfile_follows_every_check_in_attempt(tmp_path):
    """``after`` runs once the attempt's outcome is journaled: the textfile
    says failed after a failure and succeeded after a success."""
    journal = Journal.open(tmp_path / "journal.db")
    path = tmp_path / "fleetpatch.prom"
    seen: list[str] = []

    def after() -> None:
        Textfile(path, journal).write()
        line = next(x for x in path.read_text().splitlines()
                    if x.startswith("fleetpatch_agent_last_checkin_success "))  # fmt: skip
        seen.append(line.split()[1])

    config = AgentConfig("c:1", "c:2")
    CheckIns(
        config, journal, _Script(DOWN, 20, DOWN), take_inventory=lambda manager: Inventory([]),  # type: ignore[arg-type]
        rng=Floor(), after=after,
    ).run(RecordingStop(3))  # fmt: skip
    assert seen == ["0", "1", "0"]


# -- reports --------------------------------------------------------------------------


class _Reports:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls = 0

    def report_progress(
        self, request: agent_pb2.ReportProgressRequest
    ) -> agent_pb2.ReportProgressResponse:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return agent_pb2.ReportProgressResponse(
            acknowledged_keys=[r.idempotency_key for r in request.reports]
        )


def _queued(tmp_path: Path) -> Journal:
    journal = Journal.open(tmp_path / "journal.db")
    journal.refuse(
        "o-1", "bad-signature", "x",
        lambda key: convert.progress_report(key, "o-1", "REFUSED", "x", final=True),
    )  # fmt: skip
    return journal


def test_reports_hold_back_while_the_controller_is_overloaded(tmp_path, caplog):
    journal = _queued(tmp_path)
    client = _Reports(Overloaded("the controller at c:1 is overloaded: busy", retry_after=10.0))
    now = [1000.0]
    reports = Reports(journal, client, clock=lambda: now[0], rng=Ceiling())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="agent.link.reporting"):
        assert reports.flush() == 0
        for at in (1001.0, 1010.0, 1019.9):  # within twice the delay (Ceiling): not sent
            now[0] = at
            assert reports.flush() == 0
        assert client.calls == 1
        now[0] = 1020.0
        assert reports.flush() == 0  # tried again: still overloaded
        assert client.calls == 2
    assert sum("overloaded" in r.getMessage() for r in caplog.records) == 1
    client.error = None
    now[0] = 1040.0
    assert reports.flush() == 1
    assert journal.pending_reports() == []


def test_reports_without_overload_are_sent_every_time(tmp_path):
    journal = _queued(tmp_path)
    client = _Reports(DOWN)
    reports = Reports(journal, client, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert reports.flush() == 0
    assert reports.flush() == 0
    assert client.calls == 2  # a controller that is down is simply tried again


# -- downloads wait out a busy controller ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_download_asks_again_as_a_busy_controller_says():
    clock = _Clock()
    refusals = [Overloaded("busy", 30.0), Overloaded("busy", None)]

    def fetch() -> str:
        if refusals:
            raise refusals.pop(0)
        return "package"

    got = client_module.patiently(fetch, 900, clock.sleep, Floor(), lambda: clock.now)
    assert got == "package"
    assert clock.slept == [30.0, client_module.DEFAULT_OVERLOAD_WAIT]


def test_a_download_gives_up_when_the_wait_would_pass_its_patience():
    clock = _Clock()

    def fetch() -> str:
        raise Overloaded("busy", 100.0)

    with pytest.raises(Overloaded, match="busy"):
        client_module.patiently(fetch, 250, clock.sleep, Floor(), lambda: clock.now)
    assert clock.slept == [100.0, 100.0]  # a third wait would end past 250 s


class _Failing(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CheckInResponse:
        context.abort(self.code, "cut off")
        raise AssertionError("abort returns only by raising")


@pytest.mark.parametrize(
    ("code", "transient"),
    [(grpc.StatusCode.CANCELLED, True), (grpc.StatusCode.INTERNAL, True),
     (grpc.StatusCode.ABORTED, True), (grpc.StatusCode.UNIMPLEMENTED, False)],
)  # fmt: skip
def test_a_controller_in_passing_trouble_is_retried_not_fatal(code, transient):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(_Failing(code), server)  # type: ignore[abstract]
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(AgentError, match=f"answered {code.name}: cut off") as raised:
                client_module._call(address, lambda: stub.CheckIn(agent_pb2.CheckInRequest()))
    finally:
        server.stop(None)
    assert isinstance(raised.value, TransientError) is transient
