"""No host can take the controller from the others: per-host and overall
bounds, tried against a real controller over real mutual TLS."""

from __future__ import annotations

import functools
import resource
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from fleetpatch.inventory import inventory_hash
from fleetpatch.overload import RETRY_AFTER_KEY
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from agent.statedir import StateDir
from controller.api import limits
from controller.datadir import split_address
from tests.conftest import STORES
from tests.support.controller import Controller
from tests.support.waiting import scaled, wait_for


def _enroll(ctl: Controller, state: Path) -> str:
    result = ctl.enroll(state, ctl.token())
    assert result.returncode == 0, result.stderr
    return StateDir(state).host_id()


def _channel(ctl: Controller, state: Path) -> grpc.Channel:
    sd = StateDir(state)
    creds = grpc.ssl_channel_credentials(
        root_certificates=sd.read(sd.ca), private_key=sd.read(sd.key),
        certificate_chain=sd.read(sd.cert),
    )  # fmt: skip
    return grpc.secure_channel(
        ctl.address, creds, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )


def _checkin(packages: list[tuple[str, str, str]], **facts: str) -> agent_pb2.CheckInRequest:
    reported = types_pb2.HostFacts(hostname="h")
    for name, value in facts.items():
        setattr(reported, name, value)
    return agent_pb2.CheckInRequest(
        facts=reported,
        inventory_hash=inventory_hash(packages),
        inventory=types_pb2.Inventory(
            packages=[types_pb2.Package(name=n, version=v, arch=a) for n, v, a in packages]
        ),
    )


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        trailers: Sequence[tuple[str, object]] = exc.trailing_metadata() or ()  # type: ignore[assignment]
        delay = next((str(v) for k, v in trailers if k == RETRY_AFTER_KEY), "")
        return exc.code(), delay
    return grpc.StatusCode.OK, ""


def test_parallel_check_ins_of_one_host_are_served_one_at_a_time(controller, tmp_path):
    """A host's parallel check-ins beyond the first are answered
    RESOURCE_EXHAUSTED with a retry delay; another host is unaffected."""
    _enroll(controller, tmp_path / "greedy")
    _enroll(controller, tmp_path / "other")
    packages = [(f"package-{i}", f"1.{i}-1", "amd64") for i in range(40_000)]
    big = _checkin(packages)
    seen: list[tuple[grpc.StatusCode, str]] = []
    with (
        _channel(controller, tmp_path / "greedy") as greedy,
        _channel(controller, tmp_path / "other") as other,
        ThreadPoolExecutor(6) as pool,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(greedy)

        def burst() -> list[tuple[grpc.StatusCode, str]]:
            calls = [pool.submit(_code, lambda: stub.CheckIn(big, timeout=60)) for _ in range(6)]
            seen.extend(f.result() for f in calls)
            return seen

        wait_for(
            "a parallel check-in of the same host to be turned away",
            burst,
            lambda s: any(code is grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in s),
            timeout=scaled(120),
            interval=0,
        )
        polite = agent_pb2_grpc.AgentServiceStub(other)
        started = time.monotonic()
        polite.CheckIn(_checkin([("bash", "5.2", "amd64")]), timeout=10)
        assert time.monotonic() - started < scaled(2)
    assert {code for code, _ in seen} <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert any(code is grpc.StatusCode.OK for code, _ in seen)
    delays = [int(ms) for code, ms in seen if code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert delays
    assert all(ms >= 1000 for ms in delays)
    assert "Traceback" not in controller.log.read_text()


@pytest.mark.parametrize(
    ("request_", "complaint"),
    [
        (_checkin([(f"p{i}", "1", "all") for i in range(limits.MAX_INVENTORY_ENTRIES + 1)]),
         "at most 50000 are taken"),
        (_checkin([("n" * 201, "1", "all")]), "inventory.packages.name is 201 characters"),
        (_checkin([("bash", "1\n" * 150, "all")]), "inventory.packages.version is 300"),
        (_checkin([], kernel="6.1" * 1000), "facts.kernel is 3000 characters"),
    ],
    ids=["too-many-packages", "long-name", "long-version", "long-fact"],
)  # fmt: skip
def test_oversized_check_ins_are_invalid_argument(controller, tmp_path, request_, complaint):
    _enroll(controller, tmp_path / "a")
    with _channel(controller, tmp_path / "a") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CheckIn(request_, timeout=60)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (caught.value.details() or "")
    assert "Traceback" not in controller.log.read_text()


def test_a_revoked_host_asking_again_and_again_is_a_log_line_per_interval(controller, tmp_path):
    """Refused every time, but logged once per 30 s for that host (a
    revoked or broken agent retrying, or a hostile one, cannot fill the
    disk); another host's refusal still has its own line."""
    hosts = [_enroll(controller, tmp_path / name) for name in ("a", "b")]
    for host_id in hosts:
        controller.admin("hosts", "revoke", host_id)
    for name in ("a", "b"):
        with _channel(controller, tmp_path / name) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            ask = functools.partial(stub.CheckIn, _checkin([]), timeout=60)
            codes = {_code(ask)[0] for _ in range(20)}
            assert codes == {grpc.StatusCode.PERMISSION_DENIED}
    lines = [line for line in controller.log.read_text().splitlines() if "refused for" in line]
    assert [hosts[0] in line for line in lines].count(True) == 1, lines
    assert [hosts[1] in line for line in lines].count(True) == 1, lines


@pytest.mark.parametrize(("seconds", "nanos"), [(253_402_300_800, 0), (0, -5), (2**62, 0)])
def test_a_health_time_out_of_range_is_invalid_argument(controller, tmp_path, seconds, nanos):
    """Also once the host's check-ins are answered from memory: their
    health is made JSON later, on the store thread, and a time without a
    JSON form must not get that far."""
    _enroll(controller, tmp_path / "a")
    first = _checkin([("bash", "5.2", "amd64")])
    with _channel(controller, tmp_path / "a") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stub.CheckIn(first, timeout=10)  # written through; the next ones bring nothing new
        again = agent_pb2.CheckInRequest(facts=first.facts, inventory_hash=first.inventory_hash)
        stub.CheckIn(again, timeout=10)
        again.health.observed_at.seconds, again.health.observed_at.nanos = seconds, nanos
        with pytest.raises(grpc.RpcError) as caught:
            stub.CheckIn(again, timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "a timestamp is out of range" in (caught.value.details() or "")
    assert "Traceback" not in controller.log.read_text()


def test_a_message_over_the_size_cap_is_refused_before_it_is_read(controller, tmp_path):
    _enroll(controller, tmp_path / "a")
    huge = _checkin([("bash", "5.2", "amd64")], hostname="h" * (limits.MAX_MESSAGE_BYTES + 1))
    with _channel(controller, tmp_path / "a") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        code, _ = _code(lambda: stub.CheckIn(huge, timeout=60))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: stub.CheckIn(_checkin([]), timeout=10))[0] is grpc.StatusCode.OK


@pytest.fixture
def service_like_controller(tmp_path: Path) -> Iterator[Controller]:
    """A controller started with the 1,024 open files systemd gives a
    service by default (soft limit), as the shipped unit once ran it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"the hard open-file limit here is {hard}; the test needs 2,048")
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        ctl.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield ctl
    ctl.stop()


def test_the_controller_raises_its_file_limit_to_the_hard_limit(service_like_controller):
    ctl = service_like_controller
    assert ctl.proc is not None
    limits_text = Path(f"/proc/{ctl.proc.pid}/limits").read_text()
    soft, hard = next(
        line.split()[3:5] for line in limits_text.splitlines() if line.startswith("Max open files")
    )
    assert soft == hard
    assert int(soft) >= 2048


def test_idle_connections_are_dropped_and_do_not_lock_anyone_out(service_like_controller, tmp_path):
    """Bare TCP connections that never complete TLS are closed after the
    handshake timeout; while 1,200 of them are open (more than the 1,024
    files the controller started with) hosts still check in."""
    ctl = service_like_controller
    _enroll(ctl, tmp_path / "a")
    host, port = split_address(ctl.address)
    idle: list[socket.socket] = []
    try:
        idle.extend(socket.create_connection((host, port), timeout=10) for _ in range(1200))
        with _channel(ctl, tmp_path / "a") as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            started = time.monotonic()
            stub.CheckIn(_checkin([("bash", "5.2", "amd64")]), timeout=10)
            assert time.monotonic() - started < scaled(2)
        probe = idle[0]
        probe.settimeout(scaled(30))
        started = time.monotonic()
        assert probe.recv(1) == b""  # closed by the controller, not by us
        assert time.monotonic() - started < scaled(30)
    finally:
        for conn in idle:
            conn.close()


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_host_sending_nul_characters_stops_nobody(controller, tmp_path):
    """On PostgreSQL, a hostname holding a NUL was kept as JSON that its
    JSON type refuses: every later enrollment failed (the machine-id twin
    lookup reads every host's facts), after its token use was spent; a
    renewal error holding one was an internal error. Now: a name or id
    holding one is refused, INVALID_ARGUMENT, on both stores; free text
    shows it as U+FFFD; the others enroll and check in."""
    hostile = _enroll(controller, tmp_path / "hostile")
    with _channel(controller, tmp_path / "hostile") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CheckIn(_checkin([], hostname="evil\x00", machine_id="m-1"), timeout=60)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == (
            "CheckInRequest.facts.hostname holds a NUL character (U+0000), which no text here may"
        )
        stub.CheckIn(agent_pb2.CheckInRequest(
            facts=types_pb2.HostFacts(hostname="evil", machine_id="m-1"),
            health=types_pb2.HealthSummary(checks=[
                types_pb2.CheckResult(name="app", kind="command", detail="out\x00put")]),
            renewal_failures=1, renewal_error="tls\x00"), timeout=60)  # fmt: skip
    shown = controller.host(hostile)
    assert "out\ufffdput" in str(shown), shown
    assert shown["renewal_error"] == "tls\ufffd"
    # Another host enrolls (its machine-id looked up among every host's
    # facts) and checks in.
    other = _enroll(controller, tmp_path / "other")
    with _channel(controller, tmp_path / "other") as channel:
        agent_pb2_grpc.AgentServiceStub(channel).CheckIn(_checkin([], machine_id="m-2"), timeout=60)
    assert controller.host(other)["status"] == "active"
    assert "Traceback" not in controller.log.read_text()
