"""The admin CLI's replicas: the list, from `--controller` or `[cli]
controllers`; a read or an idempotent verb asked of the next replica when
one cannot be reached; a call that creates something never sent twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from fleetpatch.overload import RETRY_AFTER_KEY

from controller.cli.admin_client import AdminClient, _wait_subscribed, wait_connected
from controller.datadir import DataDir, split_addresses
from controller.errors import ControllerUnavailable, NotFound, UsageError


def test_addresses_are_split_and_checked():
    assert split_addresses("a:7443, b:7443,") == ["a:7443", "b:7443"]
    assert split_addresses("[::1]:7443") == ["[::1]:7443"]
    with pytest.raises(UsageError, match="'b' is not an address"):
        split_addresses("a:7443,b")
    with pytest.raises(UsageError, match="names no address"):
        split_addresses(" , ")
    # Addresses to call: port 0 (any free one) is only for listening.
    with pytest.raises(UsageError, match=r"'a:0' is not an address \(use HOST:PORT, port 1"):
        split_addresses("a:0")
    assert split_addresses("a:7443,b:7443,a:7443") == ["a:7443", "b:7443"]


def _datadir(tmp_path: Path, text: str) -> DataDir:
    (tmp_path / "controller.toml").write_text(text)
    return DataDir(tmp_path)


def test_the_settings_list_comes_before_the_running_server(tmp_path):
    data = _datadir(tmp_path, "[server]\nadvertise = 'ctl.example:7443'\n")
    assert data.client_addresses() == ["ctl.example:7443"]
    data.write_endpoints("127.0.0.1:40001", "127.0.0.1:40002")
    assert data.client_addresses() == ["127.0.0.1:40001"]
    (tmp_path / "controller.toml").write_text("[cli]\ncontrollers = ['a:7443', 'b:7443']\n")
    assert data.client_addresses() == ["a:7443", "b:7443"]
    (tmp_path / "controller.toml").write_text("[cli]\ncontrollers = ['a:7443', 'a:7443']\n")
    assert data.client_addresses() == ["a:7443"]


def test_an_endpoints_file_that_names_no_address_is_passed_over(tmp_path):
    data = _datadir(tmp_path, "[server]\nadvertise = 'ctl.example:7443'\n")
    for doc in ('{"address": 5}', '{"address": "nowhere"}', '{"address": null}', "[]"):
        data.endpoints.write_text(doc)
        assert data.client_addresses() == ["ctl.example:7443"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cli]\ncontrollers = 'a:7443'\n", "cli.controllers must be an array"),
        ("[cli]\ncontrollers = ['a']\n", "cli.controllers: 'a' is not an address"),
        ("[cli]\ncontrollers = [' a:7443']\n", "cli.controllers: ' a:7443' is not an address"),
        ("[cli]\ncontrollers = ['a:0']\n", "cli.controllers: 'a:0' is not an address"),
        ("[cli]\ncontroller = ['a:1']\n", "unknown key cli.controller"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        _datadir(tmp_path, text).settings()


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "Socket closed"


class _Channel:
    def close(self) -> None:
        pass


def _client(monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> tuple[AdminClient, list[str]]:
    """An AdminClient whose connections always succeed (recorded), with
    no trust problem anywhere: what is tested is what it asks again."""
    admin = object.__new__(AdminClient)
    admin.addresses, admin.address = addresses, addresses[0]
    admin._channel, admin._stubs = None, None
    connected: list[str] = []

    def connect() -> None:
        if admin._channel is None:
            connected.append(admin.address)
            admin._channel = _Channel()  # type: ignore[assignment]

    monkeypatch.setattr(admin, "_connect", connect)
    monkeypatch.setattr(admin, "_trust_problem", lambda address: None)
    return admin, connected


def _answers(*outcomes: object):
    calls: list[int] = []

    def call() -> object:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, grpc.StatusCode):
            raise _Failed(outcome)
        return outcome

    return call, calls


def test_a_read_goes_to_the_next_replica_when_one_is_unreachable(monkeypatch):
    admin, connected = _client(monkeypatch, ["a:1", "b:1", "c:1"])
    call, _calls = _answers(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, "listed")
    assert admin._ask(call) == "listed"
    assert connected == ["a:1", "b:1", "c:1"]
    assert admin.address == "c:1"


def test_a_read_goes_to_the_next_replica_when_one_does_not_answer_in_time(monkeypatch):
    """A replica cut off from the database while the others are not: its
    read runs out of time (the store's own timeout may be longer than the
    CLI's); the next replica is asked."""
    admin, connected = _client(monkeypatch, ["a:1", "b:1"])
    call, _calls = _answers(grpc.StatusCode.DEADLINE_EXCEEDED, "listed")
    assert admin._ask(call) == "listed"
    assert connected == ["a:1", "b:1"]


class _Answered(_Failed):
    """UNAVAILABLE from the controller itself: it asks to be asked later."""

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return ((RETRY_AFTER_KEY, "5"),)

    def details(self) -> str:
        return "the database is unavailable; try again shortly"


def test_a_controller_whose_database_is_down_is_not_said_unreachable(monkeypatch):
    admin, _connected = _client(monkeypatch, ["a:1"])
    said = admin._error(_Answered(grpc.StatusCode.UNAVAILABLE))
    assert str(said) == (
        "the controller at a:1 cannot serve it now: the database is unavailable; try again shortly"
    )
    assert isinstance(said, ControllerUnavailable)
    assert str(admin._error(_Failed(grpc.StatusCode.UNAVAILABLE))) == (
        "cannot reach the controller at a:1: Socket closed"
    )


def test_each_replica_is_asked_once_then_unreachable(monkeypatch):
    admin, _connected = _client(monkeypatch, ["a:1", "b:1"])
    call, calls = _answers(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ControllerUnavailable, match="b:1"):
        admin._ask(call)
    assert len(calls) == 2


def test_an_answer_is_not_a_reason_to_ask_another(monkeypatch):
    admin, connected = _client(monkeypatch, ["a:1", "b:1"])
    call, _calls = _answers(grpc.StatusCode.NOT_FOUND, "never")
    with pytest.raises(NotFound):
        admin._ask(call)
    assert connected == ["a:1"]


def test_what_creates_is_not_sent_again_once_it_may_have_arrived(monkeypatch):
    admin, connected = _client(monkeypatch, ["a:1", "b:1"])
    call, calls = _answers(grpc.StatusCode.UNAVAILABLE, "created twice")
    with pytest.raises(ControllerUnavailable, match="may have reached it"):
        admin._send(call)
    assert len(calls) == 1
    assert connected == ["a:1"]


# -- waiting for a connection -------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[str]:
    """A real gRPC server (no services: a connection is all that is asked)."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def refusing() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"  # closed: connections are refused


@pytest.fixture
def silent() -> Iterator[str]:
    """Accepts TCP connections and never says a word of HTTP/2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


WAYS = [wait_connected, _wait_subscribed]  # on grpc's core channel; grpc's subscribe()


@pytest.mark.parametrize("wait", WAYS)
def test_a_listening_server_is_connected(listening, wait):
    with grpc.insecure_channel(listening) as channel:
        assert wait(channel, 10) is True


def test_this_grpcio_is_watched_on_its_core_channel(listening):
    """Not the fallback, which costs every admin command 0.2 s."""
    with grpc.insecure_channel(listening) as channel:
        core = getattr(channel, "_channel", None)
        assert hasattr(core, "check_connectivity_state")
        assert hasattr(core, "watch_connectivity_state")


@pytest.mark.parametrize("wait", WAYS)
def test_a_refused_connection_fails_at_once(refusing, wait):
    with grpc.insecure_channel(refusing) as channel:
        assert wait(channel, 10) is False


@pytest.mark.parametrize("wait", WAYS)
def test_silence_is_neither(silent, wait):
    with grpc.insecure_channel(silent) as channel:
        assert wait(channel, 0.5) is None
