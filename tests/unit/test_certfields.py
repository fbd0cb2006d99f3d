"""fleetpatch.certfields: what the idle agent reads of its certificates
without cryptography agrees with what cryptography reads, and anything
that does not read as a certificate is an error, never a guess."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch import catrust, certfields
from fleetpatch.identity import Identity, Role

from agent.errors import StateDirError
from agent.statedir import StateDir
from controller.fleet.pki import CertificateAuthority

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


def _self_signed(not_before: datetime, not_after: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        # UTCTime both (years 1950-2049), across the century.
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC)),
        # UTCTime, then GeneralizedTime (from 2050 on).
        (datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC), datetime(2050, 1, 1, 0, 0, 1, tzinfo=UTC)),
        (datetime(2051, 6, 30, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_validity_is_what_cryptography_reads(not_before, not_after):
    cert = _self_signed(not_before, not_after)
    assert certfields.validity(cert.public_bytes(DER)) == (not_before, not_after)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (not_before, not_after)


def test_a_host_certificate_of_the_controllers_ca():
    ca = CertificateAuthority.create()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_client(Identity(Role.HOST, "h-0123456789abcdef"), key.public_key())
    (der,) = certfields.pem_certificates(cert.public_bytes(PEM))
    assert der == cert.public_bytes(DER)
    assert certfields.validity(der) == (cert.not_valid_before_utc, cert.not_valid_after_utc)


def test_the_bundle_hash_is_catrusts():
    old, new = CertificateAuthority.create("old CA"), CertificateAuthority.create("new CA")
    pem = catrust.to_pem([old.cert, new.cert])
    ders = certfields.pem_certificates(pem)
    assert ders == [old.cert.public_bytes(DER), new.cert.public_bytes(DER)]
    assert certfields.bundle_hash(ders) == catrust.bundle_hash(catrust.load_bundle(pem))
    assert certfields.bundle_hash(reversed(ders)) == certfields.bundle_hash(ders)
    # PEM as people keep it: text around the blocks, CRLF line ends.
    messy = b"# the fleet CAs\r\n" + pem.replace(b"\n", b"\r\n") + b"\r\n"
    assert certfields.pem_certificates(messy) == ders


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"nothing",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n",
    ],
)
def test_what_is_no_pem_certificate_is_an_error(pem):
    with pytest.raises(ValueError, match="PEM certificate"):
        certfields.pem_certificates(pem)


def test_what_is_no_certificate_is_an_error():
    der = _self_signed(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    ).public_bytes(DER)
    for bad in (b"", b"\x30", der[:40], b"\x02\x01\x00", b"\x30\x84\xff\xff\xff\xff"):
        with pytest.raises(ValueError, match="not"):
            certfields.validity(bad)
    # A key is DER too, but no certificate.
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not"):
        certfields.validity(key)


def test_the_state_dir_reads_them_and_names_a_damaged_file(tmp_path):
    ca = CertificateAuthority.create()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_client(Identity(Role.HOST, "h-0123456789abcdef"), key.public_key())
    state = StateDir(tmp_path)
    state.write(state.ca, ca.cert_pem, mode=0o644)
    state.write(state.cert, cert.public_bytes(PEM), mode=0o644)
    assert state.validity() == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert state.trust_hash() == catrust.bundle_hash(state.trusted_cas())
    for path, read in ((state.cert, state.validity), (state.ca, state.trust_hash)):
        path.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        with pytest.raises(StateDirError, match=f"{path} is not a PEM certificate"):
            read()
