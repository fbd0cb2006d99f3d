"""`fleetpatch controller init`: make a data dir from nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from fleetpatch.identity import Role, identity_from_certificate

from controller.audit import AuditEntry
from controller.datadir import CONFIG_TEMPLATE, DataDir, join_address, split_address
from controller.errors import DataDirError, UsageError
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
    CA in it is what every enrolled agent trusts.

    All or nothing: every option is checked first, the settings by the
    reader `serve` uses; when something fails after that, what was made
    here (the dir itself, if it did not exist) is removed again. Raises
    UsageError (DataDirError for the dir) naming the option or path."""
    data_dir = DataDir(path)
    if data_dir.config.exists() or data_dir.ca_key.exists():
        raise DataDirError(
            f"{path} is already initialised; refusing to replace its CA "
            "(every enrolled agent trusts it)"
        )
    hostnames = check_hostnames([hostname] if isinstance(hostname, str) else list(hostname))
    try:
        _, port = split_address(listen)
    except UsageError as exc:
        raise UsageError(f"--listen: {exc}") from None
    check_name(owner)
    config = CONFIG_TEMPLATE.format(
        listen=listen, advertise=join_address(hostnames[0], port), interval=interval
    ).encode()
    check_settings(data_dir, config)
    made = _make_dir(path)
    there = [p for p in _written(data_dir) if p.exists()]  # not init's to remove
    try:
        _fill(data_dir, hostnames, owner, config)
    except BaseException as exc:
        _undo(data_dir, made, there)
        if isinstance(exc, OSError):
            where = exc.filename or path
            raise DataDirError(f"cannot initialise {path}: {where}: {exc.strerror}") from None
        if isinstance(exc, sqlite3.Error):
            raise DataDirError(f"cannot initialise {path}: {data_dir.database}: {exc}") from None
        raise
    return data_dir


# What each setting `init` writes comes from, to name it when it is refused.
_OPTION_OF = {
    "server.listen": "--listen",
    "server.enroll_listen": "--listen",
    "server.advertise": "--hostname",
    "checkin.interval": "--checkin-interval",
}


@dataclass(frozen=True)
class _Unwritten(DataDir):
    """The data dir as `init` would make it, its controller.toml in memory."""

    config_text: bytes = b""

    def read(self, path: Path) -> bytes:
        return self.config_text if path == self.config else super().read(path)


def check_settings(data_dir: DataDir, config: bytes) -> None:
    """Whether `serve` would take ``config`` as the data dir's controller.toml
    (read as it reads it); raises UsageError naming the option it came from."""
    try:
        _Unwritten(data_dir.path, None, config).settings()
    except UsageError as exc:
        problem = str(exc).removeprefix(f"{data_dir.config}: ")
        option = next((o for key, o in _OPTION_OF.items() if problem.startswith(key)), "")
        raise UsageError(
            f"{option}: {problem}" if option else f"{data_dir.config} would be refused: {problem}"
        ) from None


def _make_dir(path: Path) -> list[Path]:
    """Create the data dir (0700) and its missing parents; the ones this
    made, deepest first (to remove again on failure)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        _remove_dirs(missing)
        raise DataDirError(f"cannot create {path}: {exc.strerror}") from None
    return missing


def _fill(data_dir: DataDir, hostnames: list[str], owner: str, config: bytes) -> None:
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
    # Written last: its presence is what marks the dir as initialised.
    data_dir.write_group(data_dir.config, config)


def _written(data_dir: DataDir) -> list[Path]:
    """The files init writes (the database's side files too)."""
    database = data_dir.database
    return [
        data_dir.config, data_dir.ca_key, data_dir.ca_cert, data_dir.server_key,
        data_dir.server_cert, data_dir.admin_key, data_dir.admin_cert, data_dir.signing_key,
        database, *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")),
    ]  # fmt: skip


def _undo(data_dir: DataDir, made: list[Path], there: list[Path]) -> None:
    """Remove what a failed init made: the dirs it created, with all in
    them; in a dir that was there already, the files it wrote (not those
    that were ``there`` before it)."""
    if made:
        shutil.rmtree(made[0], ignore_errors=True)
        _remove_dirs(made[1:])
        return
    for written in _written(data_dir):
        if written not in there:
            with contextlib.suppress(OSError):
                written.unlink(missing_ok=True)


def _remove_dirs(dirs: list[Path]) -> None:
    """Remove these (empty) dirs, deepest first, as far as they are empty."""
    for made in dirs:
        try:
            made.rmdir()
        except OSError:
            return


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
