"""Enrolling a host: a token spent, a certificate issued, a host recorded.

The servicer only converts the EnrollRequest to plain values and the
result back; what enrollment means is here.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from fleetpatch import labels as labelspec
from fleetpatch.identity import Identity, Role

from controller.audit import AuditEntry
from controller.errors import UsageError
from controller.fleet import tokens
from controller.fleet.pki import HOST_LIFETIME, CertificateAuthority
from controller.model import JSON, Host, HostStatus
from controller.store import Store
from controller.store.thread import StoreThread


@dataclass(frozen=True)
class Enrolled:
    host: Host
    certificate: x509.Certificate
    token_id: str


async def enroll(
    db: StoreThread,
    ca: CertificateAuthority,
    token_text: str,
    csr_pem: bytes,
    labels: Mapping[str, str],
    facts: JSON,
    now: datetime,
    lifetime: timedelta = HOST_LIFETIME,
) -> Enrolled:
    """Spend a use of the token, sign the host's CSR with a new host id, and
    record the host, then its audit entry (one store call).

    Raises TokenRefused (unknown, expired, revoked, used up), UsageError (bad
    labels, a CSR that is not one), as the servicer maps them."""
    token_id, secret = tokens.parse(token_text)
    token = tokens.check(await db.call(lambda s: s.get_token(token_id)), secret, now)
    try:
        asked = labelspec.parse_labels(f"{k}={v}" for k, v in sorted(labels.items()))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # The token's labels are the operator's word: a host may add labels the
    # token does not set, never change one it does (or it could move itself
    # into or out of label-targeted campaigns).
    host_labels = {**asked, **token.labels}
    host_id = "h-" + secrets.token_hex(8)
    cert = ca.sign_csr(csr_pem, Identity(Role.HOST, host_id), lifetime, now)
    host = Host(
        host_id=host_id,
        region=token.region,
        ring=token.ring,
        # Active at its first mutual-TLS call, which proves the agent kept
        # its key and certificate; a host that never makes one expires.
        status=HostStatus.PENDING,
        enrolled_at=now,
        labels=host_labels,
        facts=facts,
        certificate_serial=format(cert.serial_number, "x"),
        certificate_expires_at=cert.not_valid_after_utc,
        certificate_not_before=cert.not_valid_before_utc,
    )
    entry = AuditEntry(
        now, f"host:{host_id}", "host.enroll", host_id, "ok",
        f"token {token_id}, region {token.region}, ring {token.ring}",
    )  # fmt: skip

    def record(store: Store) -> None:
        store.enroll_host(host, token_id, now)
        store.append_audit(entry)

    await db.call(record)
    return Enrolled(host, cert, token_id)
