"""Certificate renewal, the parts a clock decides and a crash can split:
the controller's refusal of an expired certificate (real CA, real SQLite
file, injected clock), and the agent's all-or-nothing swap of its key and
certificate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.identity import Identity, Role

from agent.link.renewal import CertificateExpired, Renewal, renew_at
from agent.statedir import StateDir
from controller.errors import Refused
from controller.fleet import renewal
from controller.fleet.pki import CertificateAuthority, key_to_pem
from controller.fleet.pki import renew_at as controller_renew_at
from controller.fleet.tokens import new_token
from controller.model import Host, HostStatus
from controller.store import Store
from controller.store.thread import StoreThread

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIFE = timedelta(days=90)


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _enrolled(store: Store, ca: CertificateAuthority) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_csr(_csr(key), Identity(Role.HOST, "h-1"), LIFE, NOW)
    token, _ = new_token("eu", 1, 1, timedelta(hours=1), {}, NOW)
    store.create_token(token)
    host = Host(
        "h-1", "eu", 1, HostStatus.ACTIVE, NOW,
        certificate_serial=format(cert.serial_number, "x"),
        certificate_expires_at=cert.not_valid_after_utc,
        certificate_not_before=cert.not_valid_before_utc,
    )  # fmt: skip
    store.enroll_host(host, token.token_id, NOW)
    return cert


def test_the_controller_renews_until_expiry_and_then_refuses_saying_why(tmp_path):
    ca = CertificateAuthority.create()
    db = StoreThread(Store.open(tmp_path / "controller.db"))
    try:
        cert = asyncio.run(db.call(lambda s: _enrolled(s, ca)))
        due = controller_renew_at(cert.not_valid_before_utc, cert.not_valid_after_utc)
        assert (
            cert.not_valid_before_utc + LIFE * 0.66 < due < cert.not_valid_before_utc + LIFE * 0.67
        )
        csr = _csr(ec.generate_private_key(ec.SECP256R1()))

        renewed = asyncio.run(renewal.renew(db, ca, "h-1", cert, csr, LIFE, due))
        assert renewed.certificate.not_valid_after_utc == due + LIFE
        host = asyncio.run(db.call(lambda s: s.get_host("h-1")))
        assert host.certificate_serial == format(renewed.certificate.serial_number, "x")

        late = cert.not_valid_after_utc
        with pytest.raises(Refused, match=r"expired at .* enroll the host again with a token"):
            asyncio.run(renewal.renew(db, ca, "h-1", cert, csr, LIFE, late))
        records = asyncio.run(db.call(lambda s: s.audit_records()))
        assert [(r.entry.action, r.entry.outcome) for r in records] == [
            ("host.renew", "ok"), ("host.renew", "refused"),
        ]  # fmt: skip
        host = asyncio.run(db.call(lambda s: s.get_host("h-1")))
        assert host.renewal_failures == 1
        assert "expired" in host.renewal_error
    finally:
        db.close()


def _state(tmp_path: Path, ca: CertificateAuthority, now: datetime) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.create()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_csr(_csr(key), Identity(Role.HOST, "h-1"), LIFE, now)
    state.write(state.ca, ca.cert_pem, mode=0o644)
    state.write(state.key, key_to_pem(key), mode=0o600)
    state.write(state.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return state


def test_the_agent_is_due_at_two_thirds_and_expired_at_the_end(tmp_path):
    ca = CertificateAuthority.create()
    state = _state(tmp_path, ca, NOW)
    cert = state.certificate()
    clock = [renew_at(cert) - timedelta(seconds=1)]
    renewing = Renewal(state, None, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert renewing.due() is False
    clock[0] = renew_at(cert)
    assert renewing.due() is True
    clock[0] = cert.not_valid_after_utc
    with pytest.raises(CertificateExpired, match="enroll this host again with a token"):
        renewing.due()


def test_a_committed_renewal_is_finished_after_a_crash_and_an_uncommitted_one_is_not(tmp_path):
    ca = CertificateAuthority.create()
    state = _state(tmp_path, ca, NOW)
    new = _state(tmp_path / "new", ca, NOW)
    # Killed after the commit, between the two renames: the key moved, not the certificate.
    state.renewed.mkdir()
    (state.renewed / "cert.pem").write_bytes(new.cert.read_bytes())
    state.key.write_bytes(new.key.read_bytes())
    credentials = state.credentials()  # finishes it, then checks that key and cert match
    assert credentials.cert_pem == new.cert.read_bytes()
    assert not state.renewed.exists()
    # Killed before the commit: a staging dir only; the identity in place stays.
    staged = state.path / ".renew-x"
    staged.mkdir()
    (staged / "key.pem").write_bytes(b"junk")
    assert state.credentials().key_pem == new.key.read_bytes()
