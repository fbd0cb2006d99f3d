"""A controller on PostgreSQL whose database is out of reach: at start-up
one clear line and exit 3; at run time agents are answered UNAVAILABLE with
a retry delay (never an internal error) once the outage is seen, and served
again once it is back, with nothing acknowledged lost. Real server, real gRPC with mutual TLS."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from fleetpatch.overload import RETRY_AFTER_KEY
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from tests.integration.test_enrollment import Raw, _enroll
from tests.support.controller import BIN, Controller, cli
from tests.support.postgres import PostgresServer, missing_reason, running
from tests.support.waiting import scaled, sigint_not_ignored

OUTAGE_SECONDS = 40.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, which it may stop and start."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with running() as server:
        yield server


def _check_in(ctl: Controller, host: Raw, hostname: str) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        private_key=host.key_pem,
        certificate_chain=host.cert_pem,
    )
    with grpc.secure_channel(ctl.address, creds) as channel:
        agent_pb2_grpc.AgentServiceStub(channel).CheckIn(
            agent_pb2.CheckInRequest(facts=types_pb2.HostFacts(hostname=hostname)), timeout=30
        )


def _refused_until(ctl: Controller, host: Raw, until: float) -> list[float]:
    """Check in every half second until ``until`` (monotonic), each call
    refused UNAVAILABLE: how long each refusal took."""
    took: list[float] = []
    while time.monotonic() < until:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            _check_in(ctl, host, "during")
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
        took.append(time.monotonic() - started)
        time.sleep(0.5)
    return took


def _served_again(ctl: Controller, host: Raw) -> float:
    """Check in every half second until one is served (refusals meanwhile
    must be UNAVAILABLE): how long that took."""
    started = time.monotonic()
    for _ in range(int(scaled(60) / 0.5)):
        try:
            _check_in(ctl, host, "after")
            return time.monotonic() - started
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
        time.sleep(0.5)
    raise AssertionError("not served again within a minute")


def _serve_fails(tmp_path: Path, url: str) -> str:
    """`serve` on the database at ``url``: exit 3 and one line, which is
    returned."""
    ctl = Controller(tmp_path / "ctl", store_url=url)
    ctl.init()
    result = ctl.serve_to_exit()
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_an_unreachable_database_stops_serve_with_one_line(tmp_path: Path, postgres):
    line = _serve_fails(tmp_path, f"postgresql://fleet:s3cret@/fleetpatch?host={tmp_path}/nowhere")
    assert "cannot connect to PostgreSQL (database fleetpatch on " in line
    assert "s3cret" not in line


def test_rotate_ca_with_the_database_out_of_reach_changes_nothing(tmp_path: Path, postgres):
    """The rotation's commands use the fleet's store (`[store] url`), as
    serve does: out of reach, one line, exit 3, and no rotation begun."""
    ctl = Controller(tmp_path / "ctl", store_url=f"postgresql://fleet@/fp?host={tmp_path}/none")
    ctl.init()
    before = sorted(p.name for p in ctl.data_dir.iterdir())
    result = cli("fleetpatch", "controller", "rotate-ca", "--data-dir", ctl.data_dir)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot connect to PostgreSQL (database fp on " in result.stderr
    assert sorted(p.name for p in ctl.data_dir.iterdir()) == before


def test_ctrl_c_while_the_database_is_slow_to_answer_stops_serve_at_once(tmp_path: Path):
    """A server that takes the connection and says nothing: serve waits
    for libpq's connect_timeout (10 s), but Ctrl-C ends it meanwhile, as
    anywhere else: "aborted", exit 130."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        ctl = Controller(tmp_path / "ctl", store_url=f"postgresql://fleet@127.0.0.1:{port}/fp")
        ctl.init()
        argv = [str(BIN / "fleetpatch"), "controller", "serve", "--data-dir",
                str(ctl.data_dir), "--listen", ctl.address]  # fmt: skip
        with sigint_not_ignored(), subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        ) as serve:  # fmt: skip
            try:
                silent.settimeout(scaled(30))
                accepted, _ = silent.accept()  # it is connecting now
                serve.send_signal(signal.SIGINT)
                sent = time.monotonic()
                _, stderr = serve.communicate(timeout=scaled(30))
                took = time.monotonic() - sent
                accepted.close()
            finally:
                serve.kill()
    assert (serve.returncode, stderr) == (130, "aborted\n")
    assert took < 5, took


def test_a_database_that_refuses_writes_at_start_is_one_line(tmp_path: Path, postgres_url: str):
    """A standby (here a session made read-only) cannot be migrated: one
    line naming why, exit 3; not the warnings of each connection lost."""
    line = _serve_fails(tmp_path, f"{postgres_url}&options=-c%20default_transaction_read_only%3Don")
    assert "read-only transaction" in line or "refuses writes" in line, line


def test_a_database_outage_is_unavailable_with_a_retry_delay_then_served(
    tmp_path: Path, own_postgres: PostgresServer
):
    ctl = Controller(tmp_path / "ctl", store_url=own_postgres.url(own_postgres.create_database()))
    ctl.init()
    ctl.start()
    try:
        host = _enroll(ctl, ctl.token())
        _check_in(ctl, host, "before")
        own_postgres.halt()
        halted = time.monotonic()
        # A check-in that brings nothing new may still be answered from
        # memory until the controller sees the outage (within a second,
        # controller/store/heartbeats.py); it is kept and written later.
        answered, deadline = 0, time.monotonic() + scaled(30)
        while True:
            try:
                _check_in(ctl, host, "during")
            except grpc.RpcError as exc:
                caught = exc
                break
            answered += 1
            assert time.monotonic() < deadline, "still answered with the database down"
        assert caught.code() is grpc.StatusCode.UNAVAILABLE, caught.details()
        metadata: Sequence[tuple[str, str]] = caught.trailing_metadata()  # type: ignore[assignment]
        trailers = dict(metadata)
        assert float(trailers[RETRY_AFTER_KEY]) > 0
        # A longer outage: once it is seen, calls are refused at once (the
        # store thread runs one call at a time: 3 s waits would queue up),
        # and the pool keeps trying with a back-off that starts again, so
        # the database is found soon after it is back, however long it was
        # gone (psycopg_pool's own back-off doubles for as long as it lasts:
        # 40 s down, it would next try at 63 s).
        refusals = _refused_until(ctl, host, halted + OUTAGE_SECONDS)
        assert max(refusals) < 1.0, refusals
        own_postgres.resume()
        assert _served_again(ctl, host) < scaled(10)
        # Nothing acknowledged is lost: before, those answered during the
        # outage, after (the refused one is not counted), once written behind.
        deadline = time.monotonic() + scaled(30)
        while (shown := ctl.host(host.host_id))["checkins"] != 2 + answered:
            assert time.monotonic() < deadline, f"{shown['checkins']} of {2 + answered} written"
            time.sleep(0.2)
        assert shown["status"] == "active"
        assert ctl.proc is not None
        assert ctl.proc.poll() is None  # it served on through the outage
    finally:
        ctl.stop()
    log = ctl.log.read_text()
    assert "Traceback" not in log
    assert "answers again" in log
    # One record, one line: libpq's errors hold line breaks of their own.
    assert not [line for line in log.splitlines() if line[:1].isspace()], log
    # The pool's line for each failed attempt is passed on once a minute.
    assert log.count("error connecting in 'fleetpatch'") <= 4, log


def test_a_database_that_refuses_writes_answers_nothing_from_memory_and_says_so_once(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
):
    """The database turned read-only under the controller (as a standby is,
    or a primary just demoted): once a write behind has failed, no
    check-in is answered from memory (reads still succeed, and must not
    make it trusted again) until writes do; the lines that each refused
    call would repeat are said once; nothing acknowledged is lost."""
    database = postgres_url.partition("@/")[2].partition("?")[0]
    ctl = Controller(tmp_path / "ctl", store_url=postgres_url)
    ctl.init()
    ctl.start()

    def reconnect_all() -> None:  # new sessions take the database's setting
        postgres.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608 - a test's own name
            f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )

    try:
        host = _enroll(ctl, ctl.token())
        _check_in(ctl, host, "before")
        _check_in(ctl, host, "before")
        postgres.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        reconnect_all()
        answered, outcomes, until = 2, [], time.monotonic() + scaled(8)
        while time.monotonic() < until:
            try:
                _check_in(ctl, host, "during")
                outcomes.append("ok")
                answered += 1
            except grpc.RpcError as exc:
                outcomes.append("refused" if exc.code() is grpc.StatusCode.UNAVAILABLE
                                else f"{exc.code().name}: {exc.details()}")  # fmt: skip
            time.sleep(0.1)
        assert set(outcomes) <= {"ok", "refused"}, outcomes
        assert "refused" in outcomes
        first = outcomes.index("refused")
        assert "ok" not in outcomes[first:], outcomes  # never trusted again while read-only
        postgres.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        reconnect_all()
        _served_again(ctl, host)
        answered += 1
        deadline = time.monotonic() + scaled(30)
        while (written := int(str(ctl.host(host.host_id)["checkins"]))) < answered:
            assert time.monotonic() < deadline, f"{written} of {answered} written"
            time.sleep(0.2)
    finally:
        postgres.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        ctl.stop()
    log = ctl.log.read_text()
    assert "Traceback" not in log
    assert log.count("refuses writes, a standby") <= 1, log
    assert log.count("discarding closed connection") <= 1, log


def test_stopping_while_the_database_is_down_runs_every_shutdown_step(
    tmp_path: Path, own_postgres: PostgresServer
):
    """SIGTERM during an outage: the audit checkpoint cannot be written, and
    that is one warning; the steps after it still run (the check-ins
    answered from memory are tried, and said to be lost if they are), and
    the controller ends as stopped, exit 0."""
    ctl = Controller(tmp_path / "ctl", store_url=own_postgres.url(own_postgres.create_database()))
    ctl.init()
    ctl.start()
    host = _enroll(ctl, ctl.token())
    _check_in(ctl, host, "before")
    own_postgres.halt()
    try:
        assert ctl.stop() == 0
    finally:
        own_postgres.resume()
    log = ctl.log.read_text()
    assert "Traceback" not in log
    assert "stopping audit keeping: " in log
    assert log.rstrip().endswith("controller stopped"), log[-2000:]
