"""The admin CLI renews its own certificate, as agents renew theirs: once
two thirds of its life have passed, at the next command, for the same key
(so that the one file that changes, admin.pem, is replaced atomically)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from cryptography import x509

from controller.cli.admin_client import AdminClient
from controller.datadir import DataDir
from controller.errors import DataDirError, FleetpatchError
from controller.fleet.pki import load_key, make_csr, renew_at


def renew(admin: AdminClient, data_dir: DataDir) -> x509.Certificate:
    """Renew the data dir's admin certificate, for the same key (so the
    one file that changes is replaced atomically); returns the new one."""
    key = load_key(data_dir.read(data_dir.admin_key))
    current = x509.load_pem_x509_certificate(data_dir.read(data_dir.admin_cert))
    renewed = admin.renew_admin(make_csr(key, current.subject.rfc4514_string()))
    pem = renewed.certificate_pem
    try:
        data_dir.write_public(data_dir.admin_cert, pem)
        # A CA rotation: trust the new CA too (the controller's certificate
        # moves to it when the old one is retired). Not in a controller's
        # own data dir, whose ca.pem `rotate-ca` manages.
        own = data_dir.ca_key.exists()
        if renewed.ca_pem and not own and renewed.ca_pem != data_dir.read(data_dir.ca_cert):
            data_dir.write_public(data_dir.ca_cert, renewed.ca_pem)
    except OSError as exc:
        raise DataDirError(f"cannot write in {data_dir.path}: {exc.strerror}") from None
    return x509.load_pem_x509_certificate(pem)


def renew_if_due(admin: AdminClient, data_dir: DataDir, now: datetime | None = None) -> bool:
    """Renew the admin certificate once two thirds of its life have passed;
    a failure is one warning line (the certificate still works). Whether
    it renewed."""
    now = now or datetime.now(UTC)
    try:
        current = x509.load_pem_x509_certificate(data_dir.read(data_dir.admin_cert))
    except (ValueError, DataDirError):
        return False  # the connection reports it
    if now < renew_at(current.not_valid_before_utc, current.not_valid_after_utc):
        return False
    try:
        cert = renew(admin, data_dir)
    except (FleetpatchError, OSError) as exc:
        print(f"warning: could not renew the admin certificate: {exc}", file=sys.stderr)
        return False
    print(
        f"renewed the admin certificate {data_dir.admin_cert}: valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
        file=sys.stderr,
    )
    return True
