"""`fleetpatch controller renew-server-cert`: the controller's TLS server
certificate issued again, with a new key, by the CA agents trust; and what
`serve` says of a certificate or CA that ends soon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.datadir import DataDir
from controller.errors import DataDirError, UsageError
from controller.fleet import carotation, servercert
from controller.fleet.bootstrap import init_data_dir
from controller.fleet.pki import names_of

NOW = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    init_data_dir(tmp_path / "ctl", ["ctl.example.net", "10.0.0.5"], "127.0.0.1:7443")
    return DataDir(tmp_path / "ctl")


def _cert(data_dir: DataDir) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data_dir.server_cert.read_bytes())


def _issued_by_ca(data_dir: DataDir, cert: x509.Certificate) -> bool:
    ca = x509.load_pem_x509_certificate(data_dir.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # raises when it is not
    return True


def test_renewed_for_the_same_names_with_a_new_key(data_dir: DataDir) -> None:
    before = _cert(data_dir)
    old_key = data_dir.server_key.read_bytes()
    issued = servercert.renew(data_dir)
    assert issued == _cert(data_dir)
    assert names_of(issued) == ["ctl.example.net", "10.0.0.5"]
    assert issued.serial_number != before.serial_number
    assert data_dir.server_key.read_bytes() != old_key
    assert data_dir.server_key.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(data_dir.server_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == issued.public_key()  # the pair loads together
    assert _issued_by_ca(data_dir, issued)
    lifetime = issued.not_valid_after_utc - issued.not_valid_before_utc
    assert timedelta(days=825) <= lifetime <= timedelta(days=825, minutes=10)  # backdated a bit


def test_renewed_for_other_names_that_keep_the_advertised_one(data_dir: DataDir) -> None:
    issued = servercert.renew(data_dir, ["ctl.example.net", "ctl-b.example.net", "10.0.0.6"])
    assert names_of(issued) == ["ctl.example.net", "ctl-b.example.net", "10.0.0.6"]


@pytest.mark.parametrize(
    ("names", "said"),
    [
        (["ctl-b.example.net"], "--hostname: the names must include ctl.example.net"),
        (["ctl.example.net", "a b"], "--hostname 'a b' is not a host name"),
        (["ctl.example.net", ""], "--hostname '' is not a host name"),
    ],
)
def test_names_that_would_strand_agents_are_refused_and_nothing_changes(
    data_dir: DataDir, names: list[str], said: str
) -> None:
    before = (data_dir.server_cert.read_bytes(), data_dir.server_key.read_bytes())
    with pytest.raises(UsageError) as refused:
        servercert.renew(data_dir, names)
    assert str(refused.value).startswith(said)
    assert (data_dir.server_cert.read_bytes(), data_dir.server_key.read_bytes()) == before


def test_an_advertised_address_is_matched_however_it_is_spelled(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "v6", ["2001:db8::7"], "[2001:db8::7]:7443")
    data_dir = DataDir(tmp_path / "v6")
    issued = servercert.renew(data_dir, ["2001:0db8:0:0::7", "ctl.example.net"])
    assert names_of(issued) == ["2001:db8::7", "ctl.example.net"]


def test_during_a_ca_rotation_it_is_issued_by_the_ca_agents_pinned(data_dir: DataDir) -> None:
    carotation.rotate(data_dir, NOW)
    issued = servercert.renew(data_dir)
    assert _issued_by_ca(data_dir, issued)  # ca.pem, not ca-next.pem
    ca_next = x509.load_pem_x509_certificate(data_dir.ca_next_cert.read_bytes())
    with pytest.raises((ValueError, InvalidSignature)):
        issued.verify_directly_issued_by(ca_next)


def test_a_damaged_certificate_is_one_line(data_dir: DataDir) -> None:
    data_dir.server_cert.write_text("not a certificate\n")
    said = (
        r"server\.pem is not a PEM certificate \(damaged\? restore it from a backup of the data "
        r"dir, or issue a new one: fleetpatch controller renew-server-cert --hostname NAME\)$"
    )
    with pytest.raises(DataDirError, match=said):
        servercert.renew(data_dir)
    with pytest.raises(DataDirError, match=said):
        servercert.ends(data_dir)


@pytest.mark.parametrize(
    ("server_left", "ca_left", "said"),
    [
        (timedelta(days=31), timedelta(days=181), []),
        (timedelta(days=29, hours=23), timedelta(days=181), ["server"]),
        (timedelta(days=31), timedelta(days=179), ["ca"]),
        (-timedelta(hours=1), timedelta(days=10), ["server", "ca"]),
    ],
)
def test_what_ends_soon_is_said(server_left, ca_left, said) -> None:
    lines = servercert.Ends(NOW + server_left, NOW + ca_left).warnings(NOW)
    assert [line.split(" ", 2)[1] for line in lines] == [
        {"server": "server", "ca": "fleet"}[kind] for kind in said
    ]
    for line in lines:
        assert "\n" not in line
    if "server" in said:
        assert "renew-server-cert" in lines[0]
        assert ("ended on" in lines[0]) is (server_left < timedelta(0))
    if "ca" in said:
        assert "rotate-ca" in lines[-1]


def test_serve_will_not_start_with_a_server_certificate_that_has_ended() -> None:
    ended = servercert.Ends(NOW - timedelta(seconds=1), NOW + timedelta(days=900))
    with pytest.raises(DataDirError, match=r"^the server certificate \(server.pem\) ended on "):
        servercert.check_not_ended(ended, NOW)
    servercert.check_not_ended(servercert.Ends(NOW + timedelta(seconds=1), NOW), NOW)
