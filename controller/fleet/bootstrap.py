"""`fleetpatch controller init`: make a data dir from nothing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from fleetpatch.identity import Role, identity_from_certificate

from controller.audit import AuditEntry
from controller.datadir import CONFIG_TEMPLATE, DataDir, join_address, split_address
from controller.errors import DataDirError
from controller.fleet.admins import (
    CONTROLLER_ACTOR,
    AdminRecord,
    AdminRole,
    AdminStatus,
    check_name,
)
from controller.fleet.pki import CertificateAuthority, check_hostnames, server_names
from controller.fleet.signing import new_signing_key, signing_key_to_pem
from controller.store import Store
from controller.store.admins import IssuedCertificate


def init_data_dir(
    path: Path,
    hostname: str | Sequence[str],
    listen: str,
    interval: str = "5m",
    owner: str = "admin",
) -> DataDir:
    """Create the CA, server and admin certificates, the signing key, the
    settings and the database; ``owner`` names the first admin (an owner),
    whose certificate is the data dir's admin.pem. ``hostname`` may be
    several names: the server certificate covers them all (replicas
    answering to a shared name and to names of their own), and the first
    is the advertised one. Refuses to overwrite an initialised dir: the
    CA in it is what every enrolled agent trusts."""
    data_dir = DataDir(path)
    if data_dir.config.exists() or data_dir.ca_key.exists():
        raise DataDirError(
            f"{path} is already initialised; refusing to replace its CA "
            "(every enrolled agent trusts it)"
        )
    hostnames = [hostname] if isinstance(hostname, str) else list(hostname)
    check_hostnames(hostnames)
    _, port = split_address(listen)
    check_name(owner)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise DataDirError(f"cannot create {path}: {exc.strerror}") from None

    ca = CertificateAuthority.create()
    server = ca.issue_server(server_names(*hostnames))
    admin = ca.issue_admin(owner)
    data_dir.write_private(data_dir.ca_key, ca.key_pem)
    data_dir.write_public(data_dir.ca_cert, ca.cert_pem)
    data_dir.write_private(data_dir.server_key, server.key_pem)
    data_dir.write_public(data_dir.server_cert, server.cert_pem)
    data_dir.write_private(data_dir.admin_key, admin.key_pem)
    data_dir.write_public(data_dir.admin_cert, admin.cert_pem)
    data_dir.write_private(data_dir.signing_key, signing_key_to_pem(new_signing_key()))
    store = Store.open(data_dir.database)
    try:
        register_owner(store, admin.cert_pem, datetime.now(UTC), "controller init")
    finally:
        store.close()
    config = CONFIG_TEMPLATE.format(
        listen=listen, advertise=join_address(hostnames[0], port), interval=interval
    )
    # Written last: its presence is what marks the dir as initialised.
    data_dir.write_group(data_dir.config, config.encode())
    return data_dir


def register_owner(store: Store, cert_pem: bytes, now: datetime, why: str) -> AdminRecord:
    """Record the admin certificate ``cert_pem`` (the data dir's admin.pem)
    as an owner's, audited: at `controller init`, and when `serve` finds a
    data dir from before admins had roles (its one admin becomes an owner).
    Raises DataDirError for a certificate that names no admin."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    identity = identity_from_certificate(cert)
    if identity is None or identity.role is not Role.ADMIN:
        raise DataDirError("admin.pem does not name an admin; cannot register the first owner")
    issued = IssuedCertificate(
        format(cert.serial_number, "x"), cert.not_valid_before_utc, cert.not_valid_after_utc
    )
    record = AdminRecord(identity.name, AdminRole.OWNER, AdminStatus.ACTIVE, now, CONTROLLER_ACTOR)
    entry = AuditEntry(
        now, CONTROLLER_ACTOR, "admin.add", f"admin:{identity.name}", "ok",
        f"role owner ({why}), certificate {issued.serial} valid until "
        f"{issued.not_after:%Y-%m-%d %H:%M:%SZ}",
    )  # fmt: skip
    return store.add_admin(record, issued, entry)
