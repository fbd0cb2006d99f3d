"""controller.pki: the fleet CA and the certificates it issues."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleetpatch.identity import Identity, Role, identity_from_certificate

from controller.errors import UsageError
from controller.fleet.pki import (
    CLIENT_LIFETIME,
    CertificateAuthority,
    key_to_pem,
    new_key,
    server_names,
)

HOST = Identity(Role.HOST, "h-0123456789abcdef")

PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _csr(key: PrivateKey | None = None, *, ask_for_ca: bool = False) -> bytes:
    """A CSR that asks for far more than it should get."""
    key = key or new_key()
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://fleetpatch/admin/root"),
                    x509.DNSName("evil.example"),
                ]
            ),
            critical=False,
        )
    )
    if ask_for_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def _pem_to_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def _der_to_pem(der: bytes) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return (
        f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
    ).encode()


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


# -- the CA ---------------------------------------------------------------------


def test_ca_is_a_self_signed_ca(ca):
    cert = ca.cert
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_ca_is_valid_now(ca):
    now = datetime.now(UTC)
    assert ca.cert.not_valid_before_utc < now < ca.cert.not_valid_after_utc


def test_ca_name():
    cert = CertificateAuthority.create("example fleet").cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example fleet"


def test_ca_saves_and_loads(ca):
    loaded = CertificateAuthority.load(ca.key_pem, ca.cert_pem)
    assert loaded.cert == ca.cert
    issued = loaded.issue_client(HOST, new_key().public_key())
    issued.verify_directly_issued_by(ca.cert)
    assert b"PRIVATE KEY" in ca.key_pem
    assert b"ENCRYPTED" not in ca.key_pem


def test_ca_refuses_a_non_ecdsa_key(ca):
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(UsageError, match="the CA key is not an ECDSA key"):
        CertificateAuthority.load(other, ca.cert_pem)


def test_key_to_pem_loads_back():
    key = new_key()
    loaded = serialization.load_pem_private_key(key_to_pem(key), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    assert key.curve.name == "secp256r1"


# -- server certificates --------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "names"),
    [
        ("localhost", ["localhost", "127.0.0.1", "::1"]),
        ("127.0.0.1", ["127.0.0.1", "localhost", "::1"]),
        ("::1", ["::1", "localhost", "127.0.0.1"]),
        ("ctl.example.com", ["ctl.example.com"]),
        ("10.0.0.5", ["10.0.0.5"]),
    ],
)
def test_server_names(hostname, names):
    assert server_names(hostname) == names


def test_server_names_of_several_cover_each_once_in_order():
    assert server_names("ctl.example.com", "ctl-a.example.com", "10.0.0.5") == [
        "ctl.example.com", "ctl-a.example.com", "10.0.0.5",
    ]  # fmt: skip
    assert server_names("ctl.example.com", "localhost", "127.0.0.1") == [
        "ctl.example.com", "localhost", "127.0.0.1", "::1",
    ]  # fmt: skip


def test_server_cert_covers_loopback_names(ca):
    issued = ca.issue_server(server_names("localhost"))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = _san(cert)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"


def test_server_cert_puts_addresses_in_ip_entries(ca):
    cert = x509.load_pem_x509_certificate(ca.issue_server(["10.0.0.5", "ctl.example"]).cert_pem)
    san = _san(cert)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert san.get_values_for_type(x509.DNSName) == ["ctl.example"]


def test_server_key_matches_its_cert(ca):
    issued = ca.issue_server(["ctl.example"])
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert key.public_key() == cert.public_key()


# -- client certificates --------------------------------------------------------


def test_client_cert_chains_to_ca_and_names_the_identity(ca):
    key = new_key()
    cert = ca.issue_client(HOST, key.public_key())
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == key.public_key()
    assert identity_from_certificate(cert) == HOST
    assert _san(cert).get_values_for_type(x509.UniformResourceIdentifier) == [HOST.uri]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.cert.subject


def test_client_cert_lifetime(ca):
    cert = ca.issue_client(HOST, new_key().public_key())
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc <= now  # backdated for slow clocks
    lifetime = cert.not_valid_after_utc - now
    assert CLIENT_LIFETIME - lifetime < CLIENT_LIFETIME / 365


def _ca_ending_at(end: datetime) -> CertificateAuthority:
    """A fleet CA like `controller init` makes, whose certificate ends at ``end``."""
    made = CertificateAuthority.create()
    key = serialization.load_pem_private_key(made.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(made.cert.subject)
        .issuer_name(made.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(made.cert.not_valid_before_utc)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def test_no_certificate_outlives_the_ca_that_issued_it():
    ca_end = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    ending = _ca_ending_at(ca_end)
    server = x509.load_pem_x509_certificate(ending.issue_server(["localhost"]).cert_pem)
    admin = x509.load_pem_x509_certificate(ending.issue_admin("ops").cert_pem)
    host = ending.sign_csr(_csr(), HOST, timedelta(days=90))
    for cert in (server, admin, host):
        assert cert.not_valid_after_utc == ca_end
        cert.verify_directly_issued_by(ending.cert)
    # A lifetime within the CA's is kept as asked.
    short = ending.sign_csr(_csr(), HOST, timedelta(days=7))
    assert short.not_valid_after_utc - short.not_valid_before_utc < timedelta(days=8)


def test_a_ca_that_has_ended_issues_nothing():
    ended = _ca_ending_at(datetime.now(UTC) - timedelta(minutes=1))
    for issue in (
        lambda: ended.issue_server(["localhost"]),
        lambda: ended.issue_admin("ops"),
        lambda: ended.sign_csr(_csr(), HOST),
    ):
        with pytest.raises(
            UsageError, match=r"^the fleet CA ended on .* UTC, so it issues nothing: .*rotate-ca"
        ):
            issue()


def test_client_cert_does_not_chain_to_another_ca(ca):
    other = CertificateAuthority.create()
    cert = other.issue_client(HOST, new_key().public_key())
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(ca.cert)


def test_serials_differ(ca):
    key = new_key().public_key()
    assert ca.issue_client(HOST, key).serial_number != ca.issue_client(HOST, key).serial_number


def test_admin_cert(ca):
    issued = ca.issue_admin("ops")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert identity_from_certificate(cert) == Identity(Role.ADMIN, "ops")
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert key.public_key() == cert.public_key()


# -- signing CSRs ---------------------------------------------------------------


def test_sign_csr_ignores_subject_and_extensions(ca):
    key = new_key()
    cert = ca.sign_csr(_csr(key, ask_for_ca=True), HOST)
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST.name
    san = _san(cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [HOST.uri]
    assert san.get_values_for_type(x509.DNSName) == []
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert identity_from_certificate(cert) == HOST


@pytest.mark.parametrize(
    "make_key",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP384R1()),
    ],
    ids=["ed25519", "rsa2048", "p384"],
)
def test_sign_csr_accepts_good_key_types(ca, make_key):
    key = make_key()
    cert = ca.sign_csr(_csr(key), HOST)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.cert)


def test_sign_csr_rejects_tampered_subject(ca):
    der = _pem_to_der(_csr())
    common_name = b"\x0c\x04evil"  # UTF8String "evil" in the subject
    assert der.count(common_name) == 1
    tampered = _der_to_pem(der.replace(common_name, b"\x0c\x04evim"))
    assert x509.load_pem_x509_csr(tampered).subject != x509.load_der_x509_csr(der).subject
    with pytest.raises(UsageError, match="the certificate request's signature is invalid"):
        ca.sign_csr(tampered, HOST)


def test_sign_csr_rejects_tampered_signature(ca):
    der = bytearray(_pem_to_der(_csr()))
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s
    with pytest.raises(UsageError, match="the certificate request's signature is invalid"):
        ca.sign_csr(_der_to_pem(bytes(der)), HOST)


def test_sign_csr_rejects_a_csr_signed_by_another_key(ca):
    """The requester must hold the key the CSR names."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    )
    mine, victim = new_key(), new_key()
    der = bytearray(builder.sign(mine, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    mine_spki = mine.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    victim_spki = victim.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    swapped = bytes(der).replace(mine_spki, victim_spki)
    assert swapped != bytes(der)
    with pytest.raises(UsageError, match="signature is invalid"):
        ca.sign_csr(_der_to_pem(swapped), HOST)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a csr",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_sign_csr_rejects_garbage(ca, data):
    with pytest.raises(UsageError, match="the certificate request is not a PEM CSR"):
        ca.sign_csr(data, HOST)


def test_sign_csr_rejects_a_certificate(ca):
    with pytest.raises(UsageError, match="not a PEM CSR"):
        ca.sign_csr(ca.cert_pem, HOST)


def test_sign_csr_rejects_a_der_csr(ca):
    with pytest.raises(UsageError, match="not a PEM CSR"):
        ca.sign_csr(_pem_to_der(_csr()), HOST)


def test_sign_csr_rejects_small_rsa(ca):
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused on purpose
    with pytest.raises(UsageError, match="RSA key is too small"):
        ca.sign_csr(_csr(key), HOST)


def test_sign_csr_rejects_small_ec(ca):
    try:
        key = ec.generate_private_key(ec.SECP224R1())
    except Exception as exc:  # pragma: no cover - depends on the OpenSSL build
        pytest.skip(f"this OpenSSL has no P-224: {exc}")
    with pytest.raises(UsageError, match="EC key is too small"):
        ca.sign_csr(_csr(key), HOST)


def test_sign_csr_rejects_other_key_types(ca):
    with pytest.raises(UsageError, match="key type is not accepted"):
        ca.sign_csr(_csr(ed448.Ed448PrivateKey.generate()), HOST)
