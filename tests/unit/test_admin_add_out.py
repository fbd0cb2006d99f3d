"""`admin add` is all or nothing in --out: the dir is checked before the
controller is asked, made only then, and removed again when the command
fails; a write that fails after the controller added the admin says in one
line what to do. (Against a real controller: tests/integration/
test_admin_add_out.py.)"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fleetpatch.v1 import admin_pb2

from controller.cli import admins as admins_cli
from controller.datadir import DataDir
from controller.errors import Conflict, DataDirError, FleetpatchError, UsageError
from controller.fleet.pki import CertificateAuthority


class _Controller:
    """What admin_add needs of the admin client; ``refuse``: what it raises."""

    address = "127.0.0.1:7443"
    addresses = ("127.0.0.1:7443",)

    def __init__(self, refuse: Exception | None = None) -> None:
        self.refuse = refuse
        self.added: list[str] = []
        self.ca = CertificateAuthority.create()

    @contextmanager
    def __call__(self, *_: object) -> Iterator[_Controller]:
        yield self

    def add_admin(self, name: str, role: str, csr_pem: bytes) -> admin_pb2.AddAdminResponse:
        if self.refuse is not None:
            raise self.refuse
        self.added.append(name)
        return admin_pb2.AddAdminResponse(
            admin=admin_pb2.Admin(name=name, role=role),
            certificate_pem=self.ca.cert_pem,  # any certificate will do here
            ca_pem=self.ca.cert_pem,
        )


def _add(tmp_path: Path, controller: _Controller, out: Path, monkeypatch) -> None:
    monkeypatch.setattr(admins_cli, "client", controller)
    admins_cli.admin_add("gina", "viewer", out, None, tmp_path / "ctl", None)


@pytest.mark.parametrize(
    "refusal",
    [
        Conflict("admin gina exists; revoke them first"),
        UsageError("the certificate request is not a PEM CSR"),
        DataDirError("data dir ctl does not exist"),
        KeyboardInterrupt(),
    ],
)
def test_a_refused_add_leaves_no_out_dir(tmp_path: Path, monkeypatch, refusal) -> None:
    out = tmp_path / "new" / "gina"
    with pytest.raises(type(refusal)):
        _add(tmp_path, _Controller(refusal), out, monkeypatch)
    assert not (tmp_path / "new").exists()


def test_a_refused_add_leaves_an_out_dir_that_was_there_as_it_was(
    tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "gina"
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    (out / "README").write_text("for gina\n")
    with pytest.raises(Conflict):
        _add(tmp_path, _Controller(Conflict("exists")), out, monkeypatch)
    assert [p.name for p in out.iterdir()] == ["README"]
    assert out.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("taken", ["admin.key", "admin.pem", "ca.pem", "controller.toml"])
def test_an_out_dir_that_cannot_take_every_file_is_refused_before_asking(
    tmp_path: Path, monkeypatch, taken: str
) -> None:
    out = tmp_path / "gina"
    (out / taken).mkdir(parents=True)  # even a directory in its place
    controller = _Controller()
    with pytest.raises(UsageError) as refused:
        _add(tmp_path, controller, out, monkeypatch)
    assert str(refused.value) == f"--out {out} already holds {taken}; choose another --out"
    assert controller.added == []
    assert [p.name for p in out.iterdir()] == [taken]


def test_out_under_a_file_is_refused_before_asking(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    controller = _Controller()
    with pytest.raises(DataDirError, match=r"^--out .*file/gina: cannot write there: "):
        _add(tmp_path, controller, tmp_path / "file" / "gina", monkeypatch)
    with pytest.raises(DataDirError, match=r"^--out .*file is not a directory$"):
        _add(tmp_path, controller, tmp_path / "file", monkeypatch)
    assert controller.added == []


def test_added_writes_every_file(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "gina"
    _add(tmp_path, _Controller(), out, monkeypatch)
    assert sorted(p.name for p in out.iterdir()) == [
        "admin.key", "admin.pem", "ca.pem", "controller.toml",
    ]  # fmt: skip
    assert (out / "admin.key").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700


def test_a_write_that_fails_after_the_add_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    def full(self: DataDir, path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(DataDir, "write_group", full)  # controller.toml, written last
    out = tmp_path / "gina"
    controller = _Controller()
    with pytest.raises(FleetpatchError) as failed:
        _add(tmp_path, controller, out, monkeypatch)
    assert controller.added == ["gina"]
    assert type(failed.value) is FleetpatchError  # exit 1: retrying as it was cannot help
    assert str(failed.value) == (
        f"admin gina was added, but their credentials could not be written to {out} (No space "
        "left on device; nothing was left there): run `fleetpatch admin revoke gina`, then "
        "add them again"
    )
    assert not out.exists()


def test_an_existing_out_keeps_its_mode(tmp_path: Path, monkeypatch) -> None:
    """`--out ""` (the current directory) or a home made 0700 by `admin add`."""
    out = tmp_path / "home"
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    _add(tmp_path, _Controller(), out, monkeypatch)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "admin.key").stat().st_mode & 0o777 == 0o600
