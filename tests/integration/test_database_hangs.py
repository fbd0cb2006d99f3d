"""A PostgreSQL database that hangs rather than fails: a frozen server, a
network cut off without a reset, where the kernel still acknowledges and
no socket error ever comes (a `FreezingProxy` between the controller and
the server). Calls are answered UNAVAILABLE with a retry delay once
`[store] timeout` has passed, the next at once while it lasts, and served
again when it ends; a leader replica cut off so loses the lead to another
within its lease, and the admin CLI's reads go to the replica that
answers. Real server, real controllers, real gRPC with mutual TLS."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from fleetpatch.inventory import inventory_hash
from fleetpatch.overload import RETRY_AFTER_KEY
from fleetpatch.v1 import agent_pb2_grpc

from tests.integration.test_enrollment import Raw, _enroll
from tests.integration.test_limits import _checkin
from tests.integration.test_replicas import FOLLOWING, LEADING, replica_of
from tests.support.controller import Controller
from tests.support.postgres import PostgresServer
from tests.support.tcpproxy import FreezingProxy
from tests.support.waiting import scaled, wait_for

TIMEOUT = 2.0  # [store] timeout here (20 s by default)


@pytest.fixture
def proxied(postgres: PostgresServer, postgres_url: str) -> Iterator[tuple[str, FreezingProxy]]:
    """This test's database: its URL through a proxy that can freeze."""
    database = postgres_url.partition("@/")[2].partition("?")[0]
    with FreezingProxy(str(postgres.socket_dir / ".s.PGSQL.5432")) as proxy:
        yield f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}", proxy


def _controller(data_dir: Path, url: str) -> Controller:
    ctl = Controller(data_dir, store_url=url)
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    text = config.read_text()
    assert 'timeout = "20s"' in text
    assert 'tick = "10s"' in text
    config.write_text(
        text.replace('timeout = "20s"', f'timeout = "{TIMEOUT:.0f}s"').replace(
            'tick = "10s"', 'tick = "1s"'
        )
    )
    return ctl


def _check_in(ctl: Controller, host: Raw, version: str) -> tuple[grpc.StatusCode, float, str]:
    """A check-in that must be written before it is answered (a new
    inventory): its code, how long it took, the retry delay asked."""
    request = _checkin([("pkg", version, "amd64")])
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        private_key=host.key_pem,
        certificate_chain=host.cert_pem,
    )
    started = time.monotonic()
    with grpc.secure_channel(ctl.address, creds) as channel:
        try:
            agent_pb2_grpc.AgentServiceStub(channel).CheckIn(request, timeout=60)
        except grpc.RpcError as exc:
            trailers: Sequence[tuple[str, str]] = exc.trailing_metadata() or ()  # type: ignore[assignment]
            delay = dict(trailers).get(RETRY_AFTER_KEY, "")
            return exc.code(), time.monotonic() - started, delay
    return grpc.StatusCode.OK, time.monotonic() - started, ""


def test_a_database_that_hangs_is_unavailable_after_the_timeout_then_at_once(tmp_path, proxied):
    url, proxy = proxied
    ctl = _controller(tmp_path / "ctl", url)
    ctl.start()
    try:
        host = _enroll(ctl, ctl.token())
        assert _check_in(ctl, host, "1")[0] is grpc.StatusCode.OK
        proxy.freeze()
        code, took, delay = _check_in(ctl, host, "2")
        assert code is grpc.StatusCode.UNAVAILABLE
        assert TIMEOUT - 0.5 <= took < TIMEOUT + scaled(5), took
        assert float(delay) > 0
        # While the call on the store thread still hangs: refused at once.
        for version in ("3", "4", "5"):
            code, took, delay = _check_in(ctl, host, version)
            assert (code, took < 1.0) == (grpc.StatusCode.UNAVAILABLE, True), (code, took)
            assert float(delay) > 0
        proxy.thaw()
        wait_for("check-ins to be served again", lambda: _check_in(ctl, host, "6")[0],
                 lambda code: code is grpc.StatusCode.OK, timeout=30, interval=0.5)  # fmt: skip
        assert ctl.host(host.host_id)["inventory_hash"] == inventory_hash([("pkg", "6", "amd64")])
    finally:
        proxy.thaw()
        ctl.stop()
    log = ctl.log.read_text()
    assert "Traceback" not in log
    assert log.count("the database has not answered a call for") == 1, log
    assert "the database answers again" in log


def test_a_leader_cut_off_from_the_database_loses_the_lead_and_reads_go_on(
    tmp_path, proxied, postgres_url
):
    """Replica A reaches the database through the proxy and leads; B is
    connected directly. The proxy frozen, A's session looks alive to
    PostgreSQL (no reset, no keepalive answer missed yet), but it says
    nothing for its lease (three ticks, at least 10 s): PostgreSQL ends it
    (idle_session_timeout), and B takes the lead. An admin's read given
    both replicas is answered by B."""
    url, proxy = proxied
    first = _controller(tmp_path / "a", url)
    second = replica_of(first, tmp_path / "b")
    config = second.data_dir / "controller.toml"
    config.write_text(config.read_text().replace(url, postgres_url))  # the same database
    second.store_url = postgres_url
    first.start()
    try:
        wait_for("A to lead", first.log.read_text, lambda t: LEADING in t, timeout=30)
        second.start()
        wait_for("B to follow", second.log.read_text, lambda t: FOLLOWING in t, timeout=30)
        proxy.freeze()
        frozen = time.monotonic()
        wait_for("B to take the lead", second.log.read_text, lambda t: LEADING in t, timeout=60)
        assert time.monotonic() - frozen < scaled(40)
        both = f"{first.address},{second.address}"
        listed = first.admin("campaign", "list", "--controller", both, "--json")
        assert f"asking {second.address} instead of {first.address}" in listed.stderr
        assert listed.stdout.strip().startswith("[")
    finally:
        proxy.thaw()
        second.stop()
        first.stop()
    for replica in (first, second):
        assert "Traceback" not in replica.log.read_text()
