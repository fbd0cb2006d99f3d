"""Rotating the fleet CA without a flag day.

1. `fleetpatch controller rotate-ca` makes a new CA (ca-next.pem/.key) and
   its endorsement by the current one (ca-next-endorsement.pem). From the
   next start of `serve` the controller trusts client certificates from
   both, issues renewed host and admin certificates from the new one, and
   offers both CAs, with the endorsement, to every agent that checks in
   (fleetpatch.catrust says what an agent takes); an agent whose
   certificate is from the old CA is asked to renew at once. Enrollments
   get a certificate from the new CA, with both CAs and the endorsement to
   pin. The server certificate stays on the old CA, the one operators hand
   out with `--ca-cert`, so nothing changes for them yet.
2. `rotate-ca --retire-old` ends the transition: the new CA becomes ca.pem
   (the old one is kept as ca-retired-SERIAL.*), the server certificate
   and the data dir's admin certificate are issued again by it, and from
   the next start only the new CA is trusted and offered (agents drop the
   old one). Hosts still on the old CA (offline throughout) cannot reach
   the controller any more: they enroll again with a token and the new
   ca.pem. It refuses while such hosts exist, unless forced.

Both steps run with `serve` stopped, as `rotate-key` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from fleetpatch import catrust
from fleetpatch.identity import Role, identity_from_certificate

from controller.audit import AuditEntry
from controller.datadir import DataDir
from controller.errors import Conflict, DataDirError
from controller.fleet.admins import CONTROLLER_ACTOR, AdminStatus
from controller.fleet.pki import CertificateAuthority, names_of
from controller.store import Store, open_store
from controller.store.admins import IssuedCertificate


@dataclass(frozen=True)
class Authorities:
    """The CAs `serve` works with."""

    current: CertificateAuthority  # ca.pem: the server certificate's
    issuing: CertificateAuthority  # new certificates' (the new CA during a rotation)
    trusted: list[x509.Certificate]  # client certificates from any of these
    endorsements: list[x509.Certificate]

    @property
    def rotating(self) -> bool:
        return len(self.trusted) > 1

    @property
    def trusted_pem(self) -> bytes:
        return catrust.to_pem(self.trusted)


def load(data_dir: DataDir) -> Authorities:
    """The data dir's CAs; DataDirError naming the file when one is
    unreadable or damaged, a CA key is not its certificate's, or the
    endorsement of a rotation's new CA is not of it by the current one."""
    current = _authority(data_dir, data_dir.ca_key, data_dir.ca_cert)
    if not data_dir.ca_next_cert.is_file():
        return Authorities(current, current, [current.cert], [])
    issuing = _authority(data_dir, data_dir.ca_next_key, data_dir.ca_next_cert)
    path = data_dir.ca_endorsement
    try:
        endorsement = x509.load_pem_x509_certificate(data_dir.read(path))
    except ValueError:
        raise DataDirError(f"{path} is not a PEM certificate (damaged? {_RESTORE})") from None
    # Equal: an interrupted retire had made the new CA ca.pem (retire finishes it).
    if current.cert != issuing.cert and not _endorses(endorsement, current.cert, issuing.cert):
        raise DataDirError(
            f"{path} is not the endorsement of {data_dir.ca_next_cert.name} by "
            f"{data_dir.ca_cert.name} (replaced? restore the CA files from one backup)"
        )
    return Authorities(current, issuing, [current.cert, issuing.cert], [endorsement])


_RESTORE = "restore it from a backup of the data dir"


def _authority(data_dir: DataDir, key: Path, cert: Path) -> CertificateAuthority:
    return CertificateAuthority.load(data_dir.read(key), data_dir.read(cert), key, cert)


def _endorses(endorsement: x509.Certificate, by: x509.Certificate, of: x509.Certificate) -> bool:
    """Whether ``endorsement`` is CA ``by``'s certificate for CA ``of``'s
    key (what `rotate` makes, and what agents check)."""
    same_key = endorsement.public_key() == of.public_key()
    try:
        endorsement.verify_directly_issued_by(by)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return same_key and endorsement.subject == of.subject


def rotate(data_dir: DataDir, now: datetime) -> x509.Certificate:
    """Step 1: make the new CA and its endorsement. Raises Conflict when a
    rotation is already in progress."""
    data_dir.require_initialised()
    if data_dir.ca_next_cert.exists():
        raise Conflict(
            "a CA rotation is in progress already; finish it with "
            "`fleetpatch controller rotate-ca --retire-old`"
        )
    current = load(data_dir).current
    store = _fleet_store(data_dir)  # first: a database out of reach changes nothing
    try:
        new = CertificateAuthority.create(f"fleetpatch fleet CA {now:%Y-%m-%d %H%M%S}")
        endorsement = current.endorse(new.cert)
        data_dir.write_private(data_dir.ca_next_key, new.key_pem)
        data_dir.write_public(data_dir.ca_endorsement, endorsement.public_bytes(
            serialization.Encoding.PEM))  # fmt: skip
        # Written last: its presence is what marks a rotation in progress.
        data_dir.write_public(data_dir.ca_next_cert, new.cert_pem)
        old_serial, new_serial = (format(c.serial_number, "x") for c in (current.cert, new.cert))
        entry = AuditEntry(
            now, CONTROLLER_ACTOR, "ca.rotate", new_serial, "ok",
            f"new CA {new_serial}, endorsed by CA {old_serial}; both trusted until "
            "`rotate-ca --retire-old`",
        )  # fmt: skip
        store.append_audit(entry)
    finally:
        store.close()
    return new.cert


def _fleet_store(data_dir: DataDir) -> Store:
    """The store `serve` uses: `[store] url`'s, else the data dir's SQLite
    file (the one `init` made, which PostgreSQL replicas no longer read)."""
    settings = data_dir.settings()
    return open_store(settings.store_url, data_dir.database, settings.store_timeout.total_seconds())


@dataclass(frozen=True)
class Retired:
    old_serial: str
    stragglers: list[str]  # hosts left on the old CA (forced)


def retire(data_dir: DataDir, now: datetime, force: bool = False) -> Retired:
    """Step 2: the new CA becomes the only one. Raises Conflict when no
    rotation is in progress, or (unless ``force``) when hosts still hold a
    certificate from the old CA, naming how many."""
    from controller.fleet import servercert  # it imports this module

    data_dir.require_initialised()
    if not data_dir.ca_next_cert.exists():
        raise Conflict("no CA rotation in progress (start one with `controller rotate-ca`)")
    found = load(data_dir)
    old, new = found.current, found.issuing
    if old.cert == new.cert:  # an interrupted retire had swapped them: finish it
        for path in (data_dir.ca_endorsement, data_dir.ca_next_key, data_dir.ca_next_cert):
            path.unlink(missing_ok=True)
        return Retired("", [])
    store = _fleet_store(data_dir)
    try:
        stragglers = store.hosts_certified_before(new.cert.not_valid_before_utc)
        if stragglers and not force:
            raise Conflict(
                f"{len(stragglers)} host(s) still hold a certificate from the old CA (e.g. "
                f"{stragglers[0]}); they have not checked in since the rotation. Wait, or "
                "pass --force: they will have to enroll again with the new ca.pem"
            )
        old_serial = format(old.cert.serial_number, "x")
        server = servercert.read_certificate(data_dir, data_dir.server_cert)
        data_dir.write_private(data_dir.ca_retired(old_serial, "key"), old.key_pem)
        data_dir.write_public(data_dir.ca_retired(old_serial, "pem"), old.cert_pem)
        issued = new.issue_server(names_of(server))
        _reissue_owner(data_dir, store, new, now)
        data_dir.write_private(data_dir.server_key, issued.key_pem)
        data_dir.write_public(data_dir.server_cert, issued.cert_pem)
        data_dir.write_private(data_dir.ca_key, new.key_pem)
        data_dir.write_public(data_dir.ca_cert, new.cert_pem)
        # ca-next.pem last: while it is there, running this again finishes.
        for path in (data_dir.ca_endorsement, data_dir.ca_next_key, data_dir.ca_next_cert):
            os.unlink(path)
        entry = AuditEntry(
            now, CONTROLLER_ACTOR, "ca.retire", old_serial, "ok",
            f"CA {old_serial} retired; CA {format(new.cert.serial_number, 'x')} is the "
            f"only one trusted; {len(stragglers)} host(s) left on the old one",
        )  # fmt: skip
        store.append_audit(entry)
    finally:
        store.close()
    return Retired(old_serial, stragglers)


def _reissue_owner(
    data_dir: DataDir, store: Store, new: CertificateAuthority, now: datetime
) -> None:
    """The data dir's admin certificate, issued again by the new CA for the
    same key (the old CA will not be trusted), and recorded."""
    try:
        cert = x509.load_pem_x509_certificate(data_dir.read(data_dir.admin_cert))
    except (ValueError, DataDirError):
        return
    identity = identity_from_certificate(cert)
    if identity is None or identity.role is not Role.ADMIN:
        return
    admin = store.get_admin(identity.name)
    if admin is None or admin.status is not AdminStatus.ACTIVE:
        return
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    renewed = new.issue_client(identity, cert.public_key(), lifetime, now)
    issued = IssuedCertificate(
        format(renewed.serial_number, "x"), renewed.not_valid_before_utc,
        renewed.not_valid_after_utc,
    )  # fmt: skip
    entry = AuditEntry(
        now, CONTROLLER_ACTOR, "admin.renew", f"admin:{identity.name}", "ok",
        f"certificate {format(cert.serial_number, 'x')} issued again by the new CA as "
        f"{issued.serial}",
    )  # fmt: skip
    store.renew_admin_certificate(identity.name, issued, entry)
    data_dir.write_public(data_dir.admin_cert, renewed.public_bytes(serialization.Encoding.PEM))
