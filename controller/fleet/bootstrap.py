"""`fleetpatch controller init`: make a data dir from nothing."""

from __future__ import annotations

import os
from pathlib import Path

from controller.datadir import CONFIG_TEMPLATE, DataDir, join_address, split_address
from controller.errors import DataDirError, UsageError
from controller.fleet.pki import CertificateAuthority, server_names
from controller.fleet.signing import new_signing_key, signing_key_to_pem
from controller.store import Store


def init_data_dir(path: Path, hostname: str, listen: str, interval: str = "5m") -> DataDir:
    """Create the CA, server and admin certificates, the signing key, the
    settings and the database. Refuses to overwrite an initialised dir: the
    CA in it is what every enrolled agent trusts."""
    data_dir = DataDir(path)
    if data_dir.config.exists() or data_dir.ca_key.exists():
        raise DataDirError(
            f"{path} is already initialised; refusing to replace its CA "
            "(every enrolled agent trusts it)"
        )
    if not hostname or any(c.isspace() for c in hostname):
        raise UsageError(f"--hostname {hostname!r} is not a host name")
    _, port = split_address(listen)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise DataDirError(f"cannot create {path}: {exc.strerror}") from None

    ca = CertificateAuthority.create()
    server = ca.issue_server(server_names(hostname))
    admin = ca.issue_admin()
    data_dir.write_private(data_dir.ca_key, ca.key_pem)
    data_dir.write_public(data_dir.ca_cert, ca.cert_pem)
    data_dir.write_private(data_dir.server_key, server.key_pem)
    data_dir.write_public(data_dir.server_cert, server.cert_pem)
    data_dir.write_private(data_dir.admin_key, admin.key_pem)
    data_dir.write_public(data_dir.admin_cert, admin.cert_pem)
    data_dir.write_private(data_dir.signing_key, signing_key_to_pem(new_signing_key()))
    Store.open(data_dir.database).close()
    config = CONFIG_TEMPLATE.format(
        listen=listen, advertise=join_address(hostname, port), interval=interval
    )
    # Written last: its presence is what marks the dir as initialised.
    data_dir.write_group(data_dir.config, config.encode())
    return data_dir
