"""Host certificates renew themselves, against a real controller over real
mutual TLS with a real SQLite file: a host whose certificate crosses two
thirds of its life renews it (a new key, made on the host, 0600), keeps
the old one until the new one works, and is audited; one whose
certificate has expired is refused and told to enroll again; hosts whose
renewal keeps failing are flagged in `hosts list`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from agent.errors import Refused
from agent.link.checkin import CheckIns
from agent.link.client import ControllerClient
from agent.link.renewal import CertificateExpired, Renewal, renew_at
from agent.orders.journal import Journal
from agent.statedir import StateDir
from tests.support.controller import Controller, cli, ok
from tests.support.waiting import scaled, wait_for


def _enrolled(ctl: Controller, path: Path) -> StateDir:
    state = StateDir(path)
    result = ctl.enroll(state.path, ctl.token())
    assert result.returncode == 0, result.stderr
    return state


def _client(state: StateDir, ctl: Controller) -> ControllerClient:
    creds = state.credentials()
    return ControllerClient(ctl.address, creds.ca_pem, creds.key_pem, creds.cert_pem)


def _audit(ctl: Controller, action: str) -> list[dict[str, str]]:
    records = ctl.admin_json("audit", "export")
    assert isinstance(records, list)
    return [r for r in records if r["action"] == action]


def _raw_renew(state: StateDir, ctl: Controller, csr_pem: bytes) -> agent_pb2.RenewResponse:
    creds = state.credentials()
    channel_creds = grpc.ssl_channel_credentials(
        root_certificates=creds.ca_pem, private_key=creds.key_pem, certificate_chain=creds.cert_pem
    )
    with grpc.secure_channel(ctl.address, channel_creds) as channel:
        return agent_pb2_grpc.AgentServiceStub(channel).Renew(
            agent_pb2.RenewRequest(csr_pem=csr_pem), timeout=scaled(10)
        )


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def test_a_host_crossing_two_thirds_of_its_lifetime_renews(controller, tmp_path):
    state = _enrolled(controller, tmp_path / "a1")
    host_id = state.host_id()
    old_cert, old_key = state.certificate(), state.key.read_bytes()
    life = old_cert.not_valid_after_utc - old_cert.not_valid_before_utc
    assert timedelta(days=89) < life <= timedelta(days=90, minutes=6)  # the 90-day default
    shown = controller.host(host_id)
    assert shown["certificate_renew_at"].startswith(f"{renew_at(old_cert):%Y-%m-%dT%H:%M}")

    now = renew_at(old_cert) - timedelta(minutes=1)
    client = _client(state, controller)
    try:
        renewal = Renewal(state, client, clock=lambda: now)
        assert renewal.maybe_renew() is False  # not yet due: nothing asked, nothing changed
        assert state.certificate() == old_cert
        assert _audit(controller, "host.renew") == []

        now = renew_at(old_cert) + timedelta(minutes=1)
        assert renewal.maybe_renew() is True
        # The client now calls with the new certificate.
        client.reach()
    finally:
        client.close()

    new_cert = state.certificate()
    assert new_cert.serial_number != old_cert.serial_number
    assert state.host_id() == host_id  # the same host, from the new certificate
    assert state.key.read_bytes() != old_key  # a new key, made here
    assert state.key.stat().st_mode & 0o777 == 0o600
    assert not state.renewed.exists()
    assert list(state.path.glob(".renew-*")) == []
    # Issued by the controller's own clock, for the whole lifetime again.
    assert new_cert.not_valid_after_utc >= old_cert.not_valid_after_utc
    assert new_cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=89)

    shown = controller.host(host_id)
    assert shown["certificate_serial"] == format(new_cert.serial_number, "x")
    [record] = _audit(controller, "host.renew")
    assert record["actor"] == f"host:{host_id}"
    assert record["outcome"] == "ok"
    assert format(old_cert.serial_number, "x") in record["detail"]
    # The agent goes on as itself with the new key and certificate.
    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)
    status = ok("fleetpatch-agent", "status", "--state-dir", state.path).stdout
    assert f"expires {new_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}; renewed from" in status
    listing = controller.admin("hosts", "list").stdout
    assert f"expires {new_cert.not_valid_after_utc:%Y-%m-%d}" in listing


def test_an_expired_certificate_cannot_renew_and_the_host_is_told_to_enroll_again(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('host_lifetime = "90d"', 'host_lifetime = "3s"'))
    ctl.start()
    try:
        state = _enrolled(ctl, tmp_path / "a1")
        host_id, cert = state.host_id(), state.certificate()
        assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(minutes=6)

        # The agent's clock says it is too late: it does not even ask.
        client = _client(state, ctl)
        try:
            renewal = Renewal(state, client, clock=lambda: cert.not_valid_after_utc)
            with pytest.raises(CertificateExpired, match="enroll this host again with a token"):
                renewal.maybe_renew()
        finally:
            client.close()

        wait_for(
            "the certificate to expire",
            lambda: datetime.now(UTC),
            lambda now: now > cert.not_valid_after_utc + timedelta(seconds=1),
            timeout=scaled(30),
        )
        # The controller refuses the expired certificate (at the handshake).
        with pytest.raises(grpc.RpcError) as caught:
            _raw_renew(state, ctl, _csr())
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert ctl.host(host_id)["certificate_serial"] == format(cert.serial_number, "x")

        # The agent service stops with one line saying why and what to do.
        result = cli("fleetpatch-agent", "run", "--once", "--state-dir", state.path)
        assert result.returncode == 4, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "expired at" in line, line
        assert "enroll this host again with a token" in line, line

        # Enrolling again with a token replaces the expired identity.
        again = ctl.enroll(state.path, ctl.token())
        assert again.returncode == 0, again.stderr
        assert state.host_id() != host_id
    finally:
        ctl.stop()


def test_hosts_whose_renewal_keeps_failing_are_flagged(controller, tmp_path):
    state = _enrolled(controller, tmp_path / "a1")
    host_id = state.host_id()
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as caught:
            _raw_renew(state, controller, b"not a certificate request")
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    refused = _audit(controller, "host.renew")
    assert [(r["actor"], r["outcome"]) for r in refused] == [(f"host:{host_id}", "refused")] * 3
    shown = controller.host(host_id)
    assert shown["renewal_failures"] == 3
    assert shown["renewal_failing"] is True
    listing = controller.admin("hosts", "list").stdout
    assert "RENEWAL FAILING (3 in a row)" in listing
    assert "not a PEM CSR" in controller.admin("hosts", "show", host_id).stdout

    # An agent counts its own failures and tells the controller at check-in.
    refuse = [True]

    def connect(address: str, ca: bytes, key: bytes, cert: bytes) -> ControllerClient:
        """The trial call with the new certificate is refused while ``refuse``."""
        return (_Refusing if refuse[0] else ControllerClient)(address, ca, key, cert)

    client = _client(state, controller)
    journal = Journal.open(state.journal, must_exist=True)
    try:
        now = renew_at(state.certificate()) + timedelta(minutes=1)
        renewal = Renewal(state, client, clock=lambda: now, connect=connect)
        checkins = CheckIns(state.config(), journal, client, renewal=renewal)
        for _ in range(3):
            checkins.once()
        assert renewal.failures == 3
        shown = controller.host(host_id)
        assert shown["renewal_failures"] == 3
        assert "renewed certificate was refused" in str(shown["renewal_error"])
        refuse[0] = False
        checkins.once()  # renews, and the flag goes
        assert renewal.failures == 0
    finally:
        journal.close()
        client.close()
    shown = controller.host(host_id)
    assert shown.get("renewal_failures", 0) == 0
    assert not shown.get("renewal_failing")
    assert shown["certificate_serial"] == format(state.certificate().serial_number, "x")
    assert "RENEWAL FAILING" not in controller.admin("hosts", "list").stdout


class _Refusing(ControllerClient):
    def reach(self) -> None:
        raise Refused("refused for the test")
