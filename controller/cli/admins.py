"""`fleetpatch admin add|list|revoke|renew`: the people who run the fleet.

An admin's credentials are a directory laid out as a data dir's admin
part (what `--data-dir` reads): ``admin.key`` (0600), ``admin.pem``,
``ca.pem`` and a ``controller.toml`` that names the controller's address.
The key is made where `admin add` runs, and only a certificate request
leaves it; with ``--csr`` it is made elsewhere (by the person, with
`openssl req` or another tool) and never leaves their machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from fleetpatch import render
from fleetpatch.cliapp import new_app

from controller.api import times
from controller.cli import jsondoc
from controller.cli.admin_client import AdminClient
from controller.cli.common import ControllerOption, DataDirOption, JsonOption, client
from controller.cli.renewing import renew
from controller.datadir import DEFAULT_DATA_DIR, DataDir
from controller.errors import DataDirError, FleetpatchError, UsageError
from controller.fleet.admins import AdminRole, check_name, parse_role
from controller.fleet.pki import key_to_pem, make_csr, new_key

admin_app = new_app(help="Admins: named people with a role (viewer, operator, approver, owner).")

ROLES = ", ".join(r.value for r in AdminRole)


class _Credentials:
    """Where `admin add` writes an admin's credentials (--out), all of them
    or none: `claim` checks, before the controller is asked, that the dir
    can take every file (creating it, and its missing parents, only if
    missing); `write` writes them; `release` removes what this command
    made there, when it fails."""

    def __init__(self, target: DataDir, made: list[Path], mode: int | None) -> None:
        self.target = target
        self._made = made  # the dirs this command created, deepest first
        self._mode = mode  # of the dir, when it was there before (left as it is)
        self._written: list[Path] = []

    @classmethod
    def claim(cls, out: Path) -> _Credentials:
        """Raises UsageError (DataDirError) naming --out and what is wrong."""
        target = DataDir(out)
        if out.exists() and not out.is_dir():
            raise DataDirError(f"--out {out} is not a directory")
        taken = [p.name for p in cls._files(target) if p.exists() or p.is_symlink()]
        if taken:
            raise UsageError(f"--out {out} already holds {', '.join(taken)}; choose another --out")
        mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else None
        made = cls(target, [p for p in (out, *out.parents) if not p.exists()], mode)
        try:
            out.mkdir(mode=0o700, parents=True, exist_ok=True)
            if (
                mode is None
            ):  # made here: 0700 whatever the umask; one of the person's is left as it is
                os.chmod(out, 0o700)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".admin-add-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            made.release()
            raise DataDirError(f"--out {out}: cannot write there: {exc.strerror}") from None
        return made

    @staticmethod
    def _files(target: DataDir) -> tuple[Path, ...]:
        return (target.admin_key, target.admin_cert, target.ca_cert, target.config)

    def write(self, files: Sequence[tuple[Callable[[Path, bytes], None], Path, bytes]]) -> None:
        """Each (writer, path, data); on failure what was written is removed,
        and the error raised."""
        try:
            for writer, path, data in files:
                writer(path, data)
                self._written.append(path)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Remove the files written, and the dirs made (when empty)."""
        for path in self._written:
            with contextlib.suppress(OSError):
                path.unlink()
        for made in self._made:
            try:
                made.rmdir()
            except OSError:
                break
        if self._mode is not None:
            with contextlib.suppress(OSError):
                os.chmod(self.target.path, self._mode)


@admin_app.command("add")
def admin_add(
    name: Annotated[str, typer.Argument(help="The person's name, as the audit trail shows it.")],
    role: Annotated[str, typer.Option(help=f"One of {ROLES}.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write their credentials; default ./fleetpatch-admin-NAME."),
    ] = None,
    csr: Annotated[
        Path | None,
        typer.Option(
            help="A certificate request they made with their own key (PEM); the key then "
            "never leaves their machine, and is not written to --out."
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Add an admin (owners only) and issue their personal certificate."""
    check_name(name)
    parse_role(role)
    key = None
    if csr is None:
        key = new_key()
        csr_pem = make_csr(key, name)
    else:
        try:
            csr_pem = csr.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {csr}: {exc.strerror}") from None
    out = out or Path(f"fleetpatch-admin-{name}")
    credentials = _Credentials.claim(out)
    target = credentials.target
    try:
        with client(data_dir, controller) as admin:
            added = admin.add_admin(name, role, csr_pem)
            address = admin.address
            replicas = admin.addresses
    except BaseException:
        credentials.release()
        raise
    config = f'[server]\nadvertise = "{address}"\n'
    if len(replicas) > 1:  # the new admin asks the same replicas
        config += f"\n[cli]\ncontrollers = {json.dumps(replicas)}\n"
    files = [
        (target.write_public, target.admin_cert, added.certificate_pem),
        (target.write_public, target.ca_cert, added.ca_pem),
        (target.write_group, target.config, config.encode()),
    ]
    if key is not None:
        files.insert(0, (target.write_private, target.admin_key, key_to_pem(key)))
    try:
        credentials.write(files)
    except OSError as exc:
        raise FleetpatchError(
            f"admin {name} was added, but their credentials could not be written to {out} "
            f"({exc.strerror or exc}; nothing was left there): run `fleetpatch admin revoke "
            f"{name}`, then add them again"
        ) from None
    expires = times.from_timestamp(added.admin.certificate_expires_at)
    print(f"admin {name} added as {role}; certificate valid until {expires:%Y-%m-%d %H:%M}Z")
    if key is None:
        print(f"put the key the request was made with in {target.admin_key} (mode 0600)")
    print(f"credentials: {target.path} (give them to {name}: fleetpatch --data-dir {target.path})")


@admin_app.command("list")
def admin_list(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List admins, their roles and certificates."""
    with client(data_dir, controller) as admin:
        found = admin.list_admins()
    if json_out:
        render.print_json([jsondoc.doc(a) for a in found])
        return
    render.table(
        ["NAME", "ROLE", "STATE", "CERT EXPIRES", "ADDED BY"],
        [
            (
                a.name,
                a.role,
                "revoked" if a.revoked else "active",
                f"{times.from_timestamp(a.certificate_expires_at):%Y-%m-%d %H:%M}Z"
                if a.HasField("certificate_expires_at") and not a.revoked else "-",
                a.created_by,
            )
            for a in found
        ],
    )  # fmt: skip


@admin_app.command("revoke")
def admin_revoke(
    name: Annotated[str, typer.Argument(help="The admin, as `admin list` shows them.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Revoke an admin (owners only): their certificates are refused from
    their next call. The last owner cannot be revoked."""
    with client(data_dir, controller) as admin:
        revoked = admin.revoke_admin(name)
    print(f"revoked admin {revoked.name}")


@admin_app.command("renew")
def admin_renew(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Renew your own admin certificate now (every command does it once two
    thirds of its life have passed)."""
    with AdminClient(DataDir(data_dir), controller) as admin:
        cert = renew(admin, DataDir(data_dir))
    print(
        f"renewed {data_dir / 'admin.pem'}: valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    )
