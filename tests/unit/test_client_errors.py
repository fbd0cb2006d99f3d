"""agent.link.client: what a controller says when a call fails reaches the
terminal, the journal and the log as one line, escaped and cut short; and a
message past gRPC's size limit (RESOURCE_EXHAUSTED too) is not taken for an
overloaded controller. Against a real gRPC server on loopback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from fleetpatch import overload
from fleetpatch.logline import QUOTE_LIMIT
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from agent import daemon
from agent.backends.packages import Inventory
from agent.errors import AgentError, Overloaded, Refused, TooLarge, TransientError
from agent.link import client as client_module
from agent.link.checkin import CheckIns
from agent.orders.journal import Journal
from agent.statedir import AgentConfig
from tests.support.fakes import Ceiling, Floor, RecordingStop

FORGED = "line one\nfleetpatch-agent: error: forged second line\x1b[2J"
ESCAPED = "line one fleetpatch-agent: error: forged second line\\x1b[2J"
MIB = 1024 * 1024

Answer = Callable[[agent_pb2.CheckInRequest, grpc.ServicerContext], agent_pb2.CheckInResponse]


class _Controller(agent_pb2_grpc.AgentServiceServicer):
    """Answers check-ins as ``answer`` says."""

    def __init__(self) -> None:
        self.answer: Answer = lambda request, context: agent_pb2.CheckInResponse()

    def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CheckInResponse:
        return self.answer(request, context)


def _server(options: list[tuple[str, int]]) -> Iterator[tuple[_Controller, str]]:
    servicer = _Controller()  # type: ignore[abstract]  # only CheckIn is called
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def controller() -> Iterator[tuple[_Controller, str]]:
    """A controller with gRPC's default limits (4 MiB received, any size sent)."""
    yield from _server([])


@pytest.fixture
def strict_controller() -> Iterator[tuple[_Controller, str]]:
    """A controller that takes requests of 1 MiB and sends answers of 1 KiB at most."""
    yield from _server(
        [("grpc.max_receive_message_length", MIB), ("grpc.max_send_message_length", 1024)]
    )


def _abort(code: grpc.StatusCode, details: str, trailer: str | None = None) -> Answer:
    def answer(
        request: agent_pb2.CheckInRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CheckInResponse:
        if trailer is not None:
            context.set_trailing_metadata(((overload.RETRY_AFTER_KEY, trailer),))
        context.abort(code, details)
        raise AssertionError("abort returns only by raising")

    return answer


def _check_in(
    address: str, request: agent_pb2.CheckInRequest | None = None, *, options: object = None
) -> agent_pb2.CheckInResponse:
    with grpc.insecure_channel(address, options=options) as channel:  # type: ignore[arg-type]
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return client_module._call(
            address, lambda: stub.CheckIn(request or agent_pb2.CheckInRequest(), timeout=30)
        )


# -- the controller's words: one line, escaped, cut short ------------------------------


def test_forged_lines_and_escape_sequences_become_one_escaped_line(controller):
    servicer, address = controller
    servicer.answer = _abort(grpc.StatusCode.PERMISSION_DENIED, FORGED)
    with pytest.raises(Refused) as raised:
        _check_in(address)
    assert str(raised.value) == f"the controller refused: {ESCAPED}"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
     grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
     grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED],
)  # fmt: skip
def test_every_error_quotes_the_controller_as_one_line(controller, code):
    servicer, address = controller
    servicer.answer = _abort(code, FORGED)
    with pytest.raises(AgentError) as raised:
        _check_in(address)
    said = str(raised.value)
    assert said.endswith(ESCAPED)
    assert said.isprintable()  # no line break, no ESC, nothing a terminal obeys


def test_what_the_cli_prints_is_one_line(controller, capsys):
    """`fleetpatch-agent run --once` against such a controller: one line on
    stderr, not a second one of the controller's making."""
    servicer, address = controller
    servicer.answer = _abort(grpc.StatusCode.PERMISSION_DENIED, FORGED)

    def run_once() -> None:
        _check_in(address)

    with pytest.raises(SystemExit) as exited:
        daemon.exit_on_error(run_once)
    assert exited.value.code == 4
    assert (
        capsys.readouterr().err == f"fleetpatch-agent: error: the controller refused: {ESCAPED}\n"
    )


def test_what_the_journal_keeps_and_the_log_says_is_one_line(controller, tmp_path, caplog):
    """A failed check-in is stored as last_error (which `status` prints)
    and logged: both one escaped line."""
    servicer, address = controller
    servicer.answer = _abort(grpc.StatusCode.INTERNAL, FORGED)
    journal = Journal.open(tmp_path / "journal.db")

    class _Client:
        def check_in(self, request: agent_pb2.CheckInRequest) -> agent_pb2.CheckInResponse:
            return _check_in(address, request)

    checkins = CheckIns(
        AgentConfig("c:1", "c:2"), journal, _Client(),  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]), rng=Floor(),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="agent.link.checkin"):
        checkins.run(RecordingStop(1))
    error = journal.checkin_state().last_error
    assert error == f"the controller answered INTERNAL: {ESCAPED}"
    (record,) = caplog.records
    assert record.getMessage().startswith(f"check-in failed ({error}); retrying in ")
    assert record.getMessage().isprintable()


class _Status(grpc.RpcError):
    """A failed call as gRPC raises it, with any details at all (a real
    server's are bounded by the client's metadata limit)."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


def _raise(error: grpc.RpcError) -> Callable[[], object]:
    def call() -> object:
        raise error

    return call


def test_four_megabytes_of_details_are_cut_short():
    details = "refused because " + "\n\x1bA" * (4 * MIB // 3)
    with pytest.raises(Refused) as raised:
        client_module._call("c:1", _raise(_Status(grpc.StatusCode.PERMISSION_DENIED, details)))
    said = str(raised.value)
    assert said.startswith("the controller refused: refused because \\x1bA \\x1bA")
    assert said.endswith("...")
    assert len(said) <= len("the controller refused: ") + QUOTE_LIMIT
    assert said.isprintable()


def test_a_status_without_details_names_its_code():
    with pytest.raises(TransientError, match=r"^the controller answered ABORTED: ABORTED$"):
        client_module._call("c:1", _raise(_Status(grpc.StatusCode.ABORTED, None)))


# -- gRPC's size limits are not overload ----------------------------------------------


def test_an_answer_larger_than_the_agent_accepts_is_too_large_not_overloaded(controller):
    servicer, address = controller
    answer = agent_pb2.CheckInResponse(known_inventory_hash="x" * (5 * MIB))
    servicer.answer = lambda request, context: answer
    with pytest.raises(TooLarge) as raised:
        _check_in(address)
    assert str(raised.value) == (
        f"the answer of the controller at {address} is larger than this agent accepts "
        f"({answer.ByteSize()} bytes, at most {4 * MIB})"
    )
    assert raised.value.exit_code == 4  # by hand: asking again at once cannot help


def test_a_request_larger_than_the_controller_accepts_is_too_large(strict_controller):
    _, address = strict_controller
    big = agent_pb2.CheckInRequest(inventory_hash="y" * (2 * MIB))
    with pytest.raises(TooLarge) as raised:
        _check_in(address, big)
    assert str(raised.value) == (
        f"this agent's request is larger than the controller at {address} accepts "
        f"({big.ByteSize()} bytes, at most {MIB})"
    )
    assert raised.value.exit_code == 4


def test_an_answer_larger_than_the_controller_may_send_is_too_large(strict_controller):
    servicer, address = strict_controller
    answer = agent_pb2.CheckInResponse(known_inventory_hash="x" * 2000)
    servicer.answer = lambda request, context: answer
    with pytest.raises(TooLarge) as raised:
        _check_in(address)
    assert str(raised.value) == (
        f"the controller at {address} cannot send its answer: larger than it may send "
        f"({answer.ByteSize()} bytes, at most 1024)"
    )


def test_a_request_larger_than_the_agent_may_send_is_too_large(controller):
    _, address = controller
    big = agent_pb2.CheckInRequest(inventory_hash="y" * 2000)
    with pytest.raises(TooLarge) as raised:
        _check_in(address, big, options=[("grpc.max_send_message_length", 1000)])
    assert str(raised.value) == (
        f"this agent's request is larger than this agent may send ({big.ByteSize()} bytes, "
        "at most 1000)"
    )


def test_a_size_limit_that_does_not_say_whose_is_too_large_all_the_same():
    status = _Status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                     "Received message larger than max (5242885 vs. 4194304)")  # fmt: skip
    with pytest.raises(TooLarge, match=r"^a message to or from the controller at c:1 is larger "
                       r"than gRPC accepts \(5242885 bytes, at most 4194304\)$"):  # fmt: skip
        client_module._call("c:1", _raise(status))


def test_a_genuinely_overloaded_controller_is_still_overloaded(controller):
    servicer, address = controller
    servicer.answer = _abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many check-ins", "1500")
    with pytest.raises(Overloaded) as raised:
        _check_in(address)
    assert str(raised.value) == f"the controller at {address} is overloaded: too many check-ins"
    assert raised.value.retry_after == 1.5
    assert raised.value.exit_code == 3


def test_the_service_keeps_trying_with_back_off_after_a_message_too_large(controller, tmp_path):
    """Not a reason to stop: a controller bug that answered every host too
    much would otherwise leave the whole fleet's agents stopped (exit 4 is
    not restarted) once it is mended. Nor retried at once, as if the next
    answer could differ: with back-off, and said in the journal."""
    servicer, address = controller
    servicer.answer = lambda request, context: agent_pb2.CheckInResponse(
        known_inventory_hash="x" * (5 * MIB)
    )

    class _Client:
        def check_in(self, request: agent_pb2.CheckInRequest) -> agent_pb2.CheckInResponse:
            return _check_in(address, request)

    stop = RecordingStop(3)
    journal = Journal.open(tmp_path / "journal.db")
    checkins = CheckIns(
        AgentConfig("c:1", "c:2"), journal, _Client(),  # type: ignore[arg-type]
        take_inventory=lambda manager: Inventory([]), rng=Ceiling(),
    )  # fmt: skip
    checkins.run(stop)
    assert len(stop.waits) == 3
    assert stop.waits == sorted(stop.waits)
    assert stop.waits[0] >= 1
    assert "is larger than this agent accepts" in (journal.checkin_state().last_error or "")
