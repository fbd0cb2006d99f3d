"""Renewing a host certificate: the host asks over mutual TLS, with its
current certificate, for a certificate for a new key (a CSR made on the
host); the host id comes from the calling certificate, never from the
request. A certificate that has expired cannot renew: TLS refuses it at
the handshake already, and this refuses it again by the controller's own
clock; such a host enrols again with a token.

Renewals, and the refused ones, are audited (`host.renew`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from fleetpatch.identity import Identity, Role

from controller.audit import AuditEntry
from controller.errors import Refused, UsageError
from controller.fleet.pki import CertificateAuthority

if TYPE_CHECKING:
    from controller.store.thread import StoreThread

# Renewals failed in a row after which `hosts list` flags the host.
FAILING_AFTER = 3


def expired_message(host_id: str, expired_at: datetime) -> str:
    return (
        f"the certificate of host {host_id} expired at {expired_at:%Y-%m-%d %H:%M:%SZ}; "
        "an expired certificate cannot be renewed: enroll the host again with a token"
    )


@dataclass(frozen=True)
class Renewed:
    certificate: x509.Certificate
    previous_serial: str


async def renew(
    db: StoreThread,
    ca: CertificateAuthority,
    host_id: str,
    presented: x509.Certificate,
    csr_pem: bytes,
    lifetime: timedelta,
    now: datetime,
) -> Renewed:
    """Issue ``host_id`` a certificate for the key in ``csr_pem`` valid for
    ``lifetime`` from ``now``, record it and audit it (one store call).
    ``presented``: the verified certificate the host called with. Raises
    Refused (it expired), UsageError (not a CSR, a weak key), each audited
    as a refused renewal and counted as a failure of the host's."""
    actor = f"host:{host_id}"
    try:
        if presented.not_valid_after_utc <= now:
            raise Refused(expired_message(host_id, presented.not_valid_after_utc))
        cert = ca.sign_csr(csr_pem, Identity(Role.HOST, host_id), lifetime, now)
    except (Refused, UsageError) as exc:
        refused = AuditEntry(now, actor, "host.renew", host_id, "refused", str(exc))

        why = f"refused by the controller: {exc}"
        await db.call(lambda s: s.record_renewal_failure(host_id, None, why, refused))
        raise
    previous = format(presented.serial_number, "x")
    serial = format(cert.serial_number, "x")
    entry = AuditEntry(
        now, actor, "host.renew", host_id, "ok",
        f"certificate {previous} renewed as {serial}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}",
    )  # fmt: skip

    await db.call(
        lambda s: s.renew_host_certificate(
            host_id, serial, cert.not_valid_before_utc, cert.not_valid_after_utc, entry
        )
    )
    return Renewed(cert, previous)
