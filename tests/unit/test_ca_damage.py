"""A damaged CA in the data dir (ca.key, ca.pem, and a rotation's ca-next
files) is one line naming the file and what to do, exit 2 (DataDirError),
for `serve`, `renew-server-cert` and `rotate-ca` alike (all load the CAs
through carotation.load); a key that is not its certificate's is refused
the same way, not used."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.datadir import DataDir
from controller.errors import DataDirError
from controller.fleet import carotation, servercert
from controller.fleet.bootstrap import init_data_dir
from controller.fleet.pki import CertificateAuthority

NOW = datetime(2027, 1, 1, tzinfo=UTC)
RESTORE = "restore it from a backup of the data dir"


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    init_data_dir(tmp_path / "ctl", "localhost", "127.0.0.1:7443")
    return DataDir(tmp_path / "ctl")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


DAMAGES = [
    ("ca.key", lambda p: p.write_bytes(b""), "is not an unencrypted PEM private key (damaged?"),
    ("ca.key", _truncate, "is not an unencrypted PEM private key (damaged?"),
    ("ca.pem", _truncate, "is not a PEM certificate (damaged?"),
    ("ca.pem", lambda p: p.write_bytes(b""), "is not a PEM certificate (damaged?"),
]


def _every_command(data_dir: DataDir) -> list[str]:
    """What each command that loads the CAs says."""
    said = []
    for command in (
        lambda: carotation.load(data_dir),  # serve
        lambda: servercert.renew(data_dir),
        lambda: carotation.rotate(data_dir, NOW),
    ):
        with pytest.raises(DataDirError) as refused:
            command()
        said.append(str(refused.value))
    return said


@pytest.mark.parametrize(("name", "damage", "said"), DAMAGES)
def test_a_damaged_ca_file_is_named(data_dir: DataDir, name: str, damage, said: str) -> None:
    path = data_dir.path / name
    damage(path)
    before = sorted(p.name for p in data_dir.path.iterdir())
    for message in _every_command(data_dir):
        assert message.startswith(f"{path} {said}")
        assert RESTORE in message
    assert sorted(p.name for p in data_dir.path.iterdir()) == before  # nothing made


@pytest.mark.parametrize("other", ["server.key", "admin.key"])
def test_a_ca_key_that_is_not_the_certificates_is_refused(data_dir: DataDir, other: str) -> None:
    shutil.copy(data_dir.path / other, data_dir.ca_key)
    for message in _every_command(data_dir):
        assert message == (
            f"{data_dir.ca_key} is not the key of {data_dir.ca_cert} (one was replaced? "
            "restore both from the same backup of the data dir)"
        )


def test_a_certificate_put_in_place_of_the_cas_is_refused(data_dir: DataDir) -> None:
    shutil.copy(data_dir.server_cert, data_dir.ca_cert)
    for message in _every_command(data_dir):
        assert message.startswith(f"{data_dir.ca_key} is not the key of {data_dir.ca_cert}")


def test_a_load_without_paths_names_the_parts() -> None:
    ca = CertificateAuthority.create()
    with pytest.raises(DataDirError, match=r"^the CA certificate is not a PEM certificate"):
        CertificateAuthority.load(ca.key_pem, b"")
    other = CertificateAuthority.create()
    with pytest.raises(DataDirError, match=r"^the CA key is not the key of the CA certificate"):
        CertificateAuthority.load(other.key_pem, ca.cert_pem)


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("ca-next.key", "is not an unencrypted PEM private key (damaged?"),
        ("ca-next.pem", "is not a PEM certificate (damaged?"),
        ("ca-next-endorsement.pem", "is not a PEM certificate (damaged?"),
    ],
)
def test_a_damaged_file_of_a_rotation_is_named(data_dir: DataDir, name: str, said: str) -> None:
    carotation.rotate(data_dir, NOW)
    path = data_dir.path / name
    _truncate(path)
    for command in (
        lambda: carotation.load(data_dir),
        lambda: servercert.renew(data_dir),
        lambda: carotation.retire(data_dir, NOW),
    ):
        with pytest.raises(DataDirError) as refused:
            command()
        assert str(refused.value).startswith(f"{path} {said}")
        assert RESTORE in str(refused.value)


def test_a_rotation_whose_files_do_not_belong_together_is_refused(data_dir: DataDir) -> None:
    carotation.rotate(data_dir, NOW)
    key = data_dir.ca_next_key.read_bytes()
    shutil.copy(data_dir.server_key, data_dir.ca_next_key)
    with pytest.raises(DataDirError, match=r"ca-next\.key is not the key of .*ca-next\.pem"):
        carotation.load(data_dir)
    data_dir.ca_next_key.write_bytes(key)
    carotation.load(data_dir)
    shutil.copy(data_dir.ca_cert, data_dir.ca_endorsement)  # as if from another rotation
    with pytest.raises(
        DataDirError, match=r"ca-next-endorsement\.pem is not the endorsement of ca-next\.pem"
    ):
        carotation.load(data_dir)


def test_retire_with_a_damaged_server_certificate_changes_nothing(data_dir: DataDir) -> None:
    carotation.rotate(data_dir, NOW)
    _truncate(data_dir.server_cert)
    before = {p.name: p.read_bytes() for p in data_dir.path.iterdir() if p.suffix != ".db"}
    with pytest.raises(DataDirError) as refused:
        carotation.retire(data_dir, NOW, force=True)
    assert str(refused.value) == (
        f"{data_dir.server_cert} is not a PEM certificate (damaged? {RESTORE}, or issue a new "
        "one: fleetpatch controller renew-server-cert --hostname NAME)"
    )
    after = {p.name: p.read_bytes() for p in data_dir.path.iterdir() if p.suffix != ".db"}
    assert after.keys() == before.keys()  # no ca-retired-* left behind
    assert after == before


def test_a_damaged_signing_key_is_named_too(data_dir: DataDir) -> None:
    from controller.fleet.signing import load_signing_keys

    _truncate(data_dir.signing_key)
    with pytest.raises(DataDirError) as refused:
        load_signing_keys(data_dir)
    assert str(refused.value) == (
        f"{data_dir.signing_key} is not an unencrypted PEM private key (damaged? {RESTORE})"
    )
