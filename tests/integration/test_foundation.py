"""Enrollment, mutual TLS and check-ins against a real controller process.

Everything goes through the console scripts a user runs, a controller
serving real TLS on loopback, and a real SQLite file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from fleetpatch.identity import Identity, Role
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.backends.packages import Inventory, installed
from agent.errors import AgentError, Refused
from agent.link.checkin import CheckIns
from agent.link.client import ControllerClient
from agent.orders.journal import Journal
from agent.statedir import StateDir
from controller.fleet.pki import CertificateAuthority, new_key
from tests.support.controller import BIN, Controller, cli, ok
from tests.support.waiting import scaled, wait_for


def _enroll(ctl: Controller, state: Path, *labels: str, token: str | None = None) -> str:
    result = ctl.enroll(state, token or ctl.token(), *labels)
    assert result.returncode == 0, result.stderr
    return StateDir(state).host_id()


def _checkin(state: Path) -> str:
    return ok("fleetpatch-agent", "run", "--state-dir", state, "--once").stdout


def _client(ctl: Controller, state: Path) -> ControllerClient:
    sd = StateDir(state)
    return ControllerClient(ctl.address, sd.read(sd.ca), sd.read(sd.key), sd.read(sd.cert))


def test_enroll_check_in_and_list_show_this_hosts_real_packages(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state, "role=web")
    assert "inventory sent" in _checkin(state)

    hosts = controller.admin_json("hosts", "list")
    assert isinstance(hosts, list)
    assert [h["host_id"] for h in hosts] == [host_id]
    assert hosts[0]["region"] == "eu-west"
    assert hosts[0]["ring"] == 1
    assert hosts[0]["labels"] == {"role": "web"}

    shown = controller.host(host_id)
    real = installed("apt")  # this machine's dpkg database
    assert len(real) > 50
    assert shown["package_count"] == len(real)
    packages = shown["packages"]
    assert isinstance(packages, list)
    assert {(p["name"], p["version"], p["arch"]) for p in packages} == set(real)
    facts = shown["facts"]
    assert isinstance(facts, dict)
    assert facts["kernel"] == os.uname().release
    assert facts["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    health = shown["health"]
    assert isinstance(health, dict)
    assert {c["name"] for c in health["checks"]} == {"load", "memory", "disk"}

    table = controller.admin("hosts", "list").stdout
    assert host_id in table
    assert "eu-west" in table


def test_keys_are_private_and_only_the_host_holds_its_key(controller, tmp_path):
    state = tmp_path / "a1"
    _enroll(controller, state)
    assert stat.S_IMODE((state / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("ca.key", "server.key", "admin.key", "signing.key"):
        assert stat.S_IMODE((controller.data_dir / name).stat().st_mode) == 0o600, name
    # The controller never saw the agent's private key: nothing in its
    # data dir contains it.
    key = (state / "key.pem").read_bytes()
    body = b"".join(key.splitlines()[1:-1])
    for path in controller.data_dir.iterdir():
        assert body not in path.read_bytes(), path


def test_token_used_past_its_uses_is_refused_and_leaves_nothing(controller, tmp_path):
    token = controller.token(uses=1)
    _enroll(controller, tmp_path / "a1", token=token)
    second = controller.enroll(tmp_path / "a2", token)
    assert second.returncode == 4
    assert "used up (1 of 1 uses)" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert "Traceback" not in second.stderr
    assert not (tmp_path / "a2" / "key.pem").exists()
    assert not (tmp_path / "a2" / "cert.pem").exists()
    assert len(controller.admin_json("hosts", "list")) == 1


def test_expired_revoked_and_unknown_tokens_are_refused(controller, tmp_path):
    expired = controller.token(ttl="1s")
    time.sleep(1.5)
    result = controller.enroll(tmp_path / "a1", expired)
    assert result.returncode == 4
    assert "expired" in result.stderr

    revoked = controller.token()
    controller.admin("token", "revoke", revoked.split("_")[1])
    result = controller.enroll(tmp_path / "a2", revoked)
    assert result.returncode == 4
    assert "revoked" in result.stderr

    forged = revoked[:-4] + "AAAA"
    result = controller.enroll(tmp_path / "a3", forged)
    assert result.returncode == 4
    assert "unknown" in result.stderr

    tokens = controller.admin_json("token", "list")
    assert isinstance(tokens, list)
    assert sorted(t.get("revoked", False) for t in tokens) == [False, True]
    assert controller.admin_json("hosts", "list") == []


def test_certificate_from_another_ca_is_refused_at_the_handshake(controller, tmp_path):
    host_id = _enroll(controller, tmp_path / "a1")
    _checkin(tmp_path / "a1")
    # A rogue CA issues a certificate naming the real host.
    rogue = CertificateAuthority.create("rogue CA")
    key = new_key()
    cert = rogue.issue_client(Identity(Role.HOST, host_id), key.public_key())
    creds = grpc.ssl_channel_credentials(
        root_certificates=(controller.data_dir / "ca.pem").read_bytes(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )
    with grpc.secure_channel(controller.address, creds) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CheckIn(
                agent_pb2.CheckInRequest(facts=types_pb2.HostFacts(hostname="rogue")), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake failed
    shown = controller.host(host_id)
    assert shown["checkins"] == 1
    assert shown["facts"]["hostname"] != "rogue"


def test_one_host_cannot_change_another_hosts_record(controller, tmp_path):
    a = _enroll(controller, tmp_path / "a")
    b = _enroll(controller, tmp_path / "b")
    _checkin(tmp_path / "b")
    before = controller.host(b)

    # Host A claims, in the body, every fact of host B. The body carries no
    # host id at all: identity comes from A's certificate.
    client = _client(controller, tmp_path / "a")
    try:
        request = agent_pb2.CheckInRequest(
            facts=types_pb2.HostFacts(hostname="impostor-of-b", boot_id="b-boot"),
            inventory_hash="sha256:" + "0" * 64,
        )
        client.check_in(request)
    finally:
        client.close()
    after = controller.host(b)
    assert after == before
    assert controller.host(a)["facts"]["hostname"] == "impostor-of-b"


def test_host_certificate_cannot_call_the_admin_service(controller, tmp_path):
    state = StateDir(tmp_path / "a")
    _enroll(controller, state.path)
    creds = grpc.ssl_channel_credentials(
        root_certificates=state.read(state.ca),
        private_key=state.read(state.key),
        certificate_chain=state.read(state.cert),
    )
    with grpc.secure_channel(controller.address, creds) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListHosts(admin_pb2.ListHostsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_enrollment_port_serves_nothing_but_enroll(controller, tmp_path):
    creds = grpc.ssl_channel_credentials((controller.data_dir / "ca.pem").read_bytes())
    with grpc.secure_channel(controller.enroll_address, creds) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            agent_pb2_grpc.AgentServiceStub(channel).CheckIn(agent_pb2.CheckInRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.AdminServiceStub(channel).ListHosts(
                admin_pb2.ListHostsRequest(), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_revoked_host_is_refused_even_after_a_controller_restart(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    _checkin(state)
    assert f"revoked host {host_id}" in controller.admin("hosts", "revoke", host_id).stdout

    refused = cli("fleetpatch-agent", "run", "--state-dir", state, "--once")
    assert refused.returncode == 4
    assert f"host {host_id} has been revoked" in refused.stderr

    assert controller.stop() == 0
    controller.start()
    refused = cli("fleetpatch-agent", "run", "--state-dir", state, "--once")
    assert refused.returncode == 4
    assert controller.host(host_id)["status"] == "revoked"
    assert controller.host(host_id)["checkins"] == 1


def test_unchanged_inventory_is_not_sent_again(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    assert "inventory sent" in _checkin(state)
    assert "inventory unchanged" in _checkin(state)
    shown = controller.host(host_id)
    assert shown["checkins"] == 2
    assert shown["inventory_updates"] == 1

    # A package changes on the host: the next check-in carries it, once.
    sd = StateDir(state)
    real = installed("apt")
    changed = [*real, ("fp-new-package", "1.0", "all")]
    journal = Journal.open(sd.journal)
    client = _client(controller, state)
    try:
        checkins = CheckIns(
            sd.config(), journal, client, take_inventory=lambda _: Inventory(changed)
        )
        assert checkins.once().inventory_sent
        assert not checkins.once().inventory_sent
    finally:
        client.close()
        journal.close()
    shown = controller.host(host_id)
    assert shown["inventory_updates"] == 2
    assert shown["package_count"] == len(changed)


def test_controller_restart_between_check_ins_loses_nothing(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state, "role=db")
    _checkin(state)
    before = controller.host(host_id)

    assert controller.stop() == 0
    assert "controller stopped" in controller.log.read_text()
    controller.start()

    # The controller still holds the inventory: the agent need not resend it.
    assert "inventory unchanged" in _checkin(state)
    after = controller.host(host_id)
    assert after["checkins"] == 2
    assert after["inventory_updates"] == 1
    for key in ("labels", "region", "ring", "packages", "inventory_hash", "enrolled_at"):
        assert after[key] == before[key], key


def test_agent_sends_inventory_again_when_the_controller_lost_it(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    _checkin(state)
    # Forget the acknowledgement on the agent side only: the controller
    # still has the inventory, so nothing needs to travel.
    journal = Journal.open(StateDir(state).journal)
    journal.record_checkin("sha256:stale", datetime.now(UTC))
    journal.close()
    assert "inventory sent" in _checkin(state)
    assert controller.host(host_id)["inventory_updates"] == 2


def test_agent_loop_survives_a_controller_that_is_down(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init(interval="1s")
    ctl.start()
    state = tmp_path / "a1"
    host_id = _enroll(ctl, state)
    # A short back-off cap, so the agent's delay after the outage is bounded
    # by the setting and not by how long the outage happened to last.
    config = state / "agent.toml"
    config.write_text(
        config.read_text().replace('max_retry_delay = "5m"', 'max_retry_delay = "1s"')
    )
    before = _checkins(ctl, host_id)
    ctl.stop()

    once = cli("fleetpatch-agent", "run", "--state-dir", state, "--once")
    assert once.returncode == 3
    assert "cannot reach the controller" in once.stderr
    assert len(once.stderr.strip().splitlines()) == 1

    agent = subprocess.Popen(
        [str(BIN / "fleetpatch-agent"), "run", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        attempts: set[str] = set()

        def failed_attempts() -> int:
            status = _agent_status(state)
            if status["last_error"]:
                attempts.add(status["last_attempt"])
            return len(attempts)

        wait_for("the agent has failed to check in twice", failed_attempts, lambda n: n >= 2)
        assert agent.poll() is None, "the agent must not exit on network errors"
        ctl.start()
        wait_for(
            "the agent checks in after the controller came back",
            lambda: _checkins(ctl, host_id),
            lambda n: n > before,
        )
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=scaled(30))
        ctl.stop()
    assert agent.returncode == 0
    assert "check-in failed" in err
    assert "Traceback" not in err


def test_the_running_daemon_checks_in_without_cryptography(controller, tmp_path):
    """`fleetpatch-agent run` checks its key and certificates in a child
    (agent.preflight) and checks in without the cryptography package: the
    library, about 10 MiB it would keep for months, is not even mapped in
    the daemon (issue 18: at most 40 MiB idle)."""
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    before = _checkins(controller, host_id)
    agent = subprocess.Popen(
        [str(BIN / "fleetpatch-agent"), "run", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(
            "the agent checks in", lambda: _checkins(controller, host_id), lambda n: n > before
        )
        maps = Path(f"/proc/{agent.pid}/maps").read_text()
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=scaled(30))
    assert agent.returncode == 0, err
    assert "checked in" in err
    assert "/cryptography/" not in maps
    assert "/grpc/" in maps  # the right process


def _checkins(ctl: Controller, host_id: str) -> int:
    count = ctl.host(host_id)["checkins"]
    assert isinstance(count, int)
    return count


def _agent_status(state: Path) -> dict[str, Any]:
    doc = json.loads(ok("fleetpatch-agent", "status", "--state-dir", state, "--json").stdout)
    assert isinstance(doc, dict)
    return doc


def test_standard_health_service_reports_serving(controller):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(controller.data_dir / "ca.pem").read_bytes(),
        private_key=(controller.data_dir / "admin.key").read_bytes(),
        certificate_chain=(controller.data_dir / "admin.pem").read_bytes(),
    )
    with grpc.secure_channel(controller.address, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fleetpatch.v1.AgentService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_enrolling_twice_into_one_state_dir_is_refused(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    again = controller.enroll(state, controller.token())
    assert again.returncode == 2
    assert f"already enrolled as {host_id}" in again.stderr


def test_refused_rpc_is_a_clear_agent_error(controller, tmp_path):
    state = tmp_path / "a1"
    host_id = _enroll(controller, state)
    controller.admin("hosts", "revoke", host_id)
    client = _client(controller, state)
    try:
        with pytest.raises(Refused, match="revoked"):
            client.check_in(agent_pb2.CheckInRequest())
    finally:
        client.close()
    assert json.loads(controller.admin("hosts", "show", host_id, "--json").stdout)["status"] == (
        "revoked"
    )


def test_a_host_cannot_override_the_labels_its_token_assigns(controller, tmp_path):
    token = controller.admin(
        "token", "create", "--region", "eu-west", "--ring", "1", "--label", "env=prod",
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    host_id = _enroll(controller, tmp_path / "a1", "env=dev", "role=web", token=token)
    assert controller.host(host_id)["labels"] == {"env": "prod", "role": "web"}


def test_the_data_dir_modes_do_not_depend_on_the_umask(tmp_path):
    """Keys, the database and its WAL 0600; settings and endpoints 0640;
    certificates 0644; whatever the umask the controller runs under."""
    ctl = Controller(tmp_path / "ctl")
    old = os.umask(0o002)
    try:
        ctl.init()
        ctl.start()
        _enroll(ctl, tmp_path / "a1")  # writes to the database: WAL and shm exist
    finally:
        os.umask(old)
    try:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ctl.data_dir.iterdir()}
    finally:
        ctl.stop()
    private = ("ca.key", "server.key", "admin.key", "signing.key", "controller.db")
    assert {name: modes[name] for name in private} == dict.fromkeys(private, 0o600)
    assert all(modes[n] == 0o600 for n in modes if n.startswith("controller.db-"))
    assert (modes["controller.toml"], modes["endpoints.json"]) == (0o640, 0o640)
    assert modes["ca.pem"] == 0o644


@pytest.mark.parametrize("method", ["CheckIn", "ReportProgress"])
def test_garbage_request_bytes_are_invalid_argument_without_a_traceback(
    controller, tmp_path, method
):
    host_id = _enroll(controller, tmp_path / "a1")
    sd = StateDir(tmp_path / "a1")
    creds = grpc.ssl_channel_credentials(
        root_certificates=sd.read(sd.ca), private_key=sd.read(sd.key),
        certificate_chain=sd.read(sd.cert),
    )  # fmt: skip
    with grpc.secure_channel(controller.address, creds) as channel:
        raw = channel.unary_unary(
            f"/fleetpatch.v1.AgentService/{method}",
            None,
            None,  # bytes as they are
        )
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                raw(b"\xff\xff\xff garbage", timeout=10)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "is not a valid" in (caught.value.details() or "")
    assert host_id
    assert "Traceback" not in controller.log.read_text()


def test_an_out_of_range_timestamp_is_invalid_argument(controller, tmp_path):
    _enroll(controller, tmp_path / "a1")
    client = _client(controller, tmp_path / "a1")
    report = types_pb2.ProgressReport(
        idempotency_key="k", order_id="o-1", step="VERIFY", sequence=1
    )
    report.at.seconds = 10**15  # far past year 9999
    with pytest.raises(AgentError, match="out of range"):
        client.report_progress(agent_pb2.ReportProgressRequest(reports=[report]))
    client.close()
    assert "Traceback" not in controller.log.read_text()


def test_a_host_cannot_backdate_or_flood_the_audit_trail_with_its_text(controller, tmp_path):
    _enroll(controller, tmp_path / "a1")
    client = _client(controller, tmp_path / "a1")
    refusal = types_pb2.ProgressReport(
        idempotency_key="k1", order_id="o-1", step="REFUSED", final=True, outcome="REFUSED",
        detail="x" * 10_000, sequence=1,
    )  # fmt: skip
    refusal.at.FromDatetime(datetime(2000, 1, 1, tzinfo=UTC))
    client.report_progress(agent_pb2.ReportProgressRequest(reports=[refusal]))
    long_id = types_pb2.ProgressReport(idempotency_key="k2", order_id="o" * 500, step="VERIFY")
    with pytest.raises(AgentError, match="longer than 128"):
        client.report_progress(agent_pb2.ReportProgressRequest(reports=[long_id]))
    client.close()
    records = controller.admin_json("audit", "export")
    assert isinstance(records, list)
    (record,) = [r for r in records if r["action"] == "order.refused"]
    assert datetime.fromisoformat(record["at"]).year > 2000  # the controller's time
    assert len(record["detail"]) < 2100
