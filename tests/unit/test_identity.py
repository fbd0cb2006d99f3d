"""fleetpatch.identity: who a verified client certificate names."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from fleetpatch.identity import HOST_ID, Identity, Role, identity_from_certificate

from controller.api.auth import peer_identity
from controller.fleet.pki import CertificateAuthority, new_key, server_names

HOST = "h-0123456789abcdef"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _cert_with_uris(*uris: str) -> x509.Certificate:
    """A certificate whose SAN holds exactly these URIs (pki makes only one)."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def test_host_certificate(ca):
    cert = ca.issue_client(Identity(Role.HOST, HOST), new_key().public_key())
    assert identity_from_certificate(cert) == Identity(Role.HOST, HOST)


def test_admin_certificate(ca):
    issued = ca.issue_admin("alice")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    identity = identity_from_certificate(cert)
    assert identity == Identity(Role.ADMIN, "alice")
    assert identity is not None
    assert identity.role is Role.ADMIN


def test_server_certificate_names_no_identity(ca):
    cert = x509.load_pem_x509_certificate(ca.issue_server(server_names("localhost")).cert_pem)
    assert identity_from_certificate(cert) is None


def test_certificate_without_san_names_no_identity(ca):
    assert identity_from_certificate(ca.cert) is None


def test_two_identity_uris_name_none():
    cert = _cert_with_uris("spiffe://fleetpatch/host/h-1", "spiffe://fleetpatch/admin/root")
    assert identity_from_certificate(cert) is None


def test_the_same_identity_twice_names_none():
    uri = f"spiffe://fleetpatch/host/{HOST}"
    assert identity_from_certificate(_cert_with_uris(uri, uri)) is None


def test_foreign_uris_are_ignored_beside_ours():
    cert = _cert_with_uris("https://example.com/", f"spiffe://fleetpatch/host/{HOST}")
    assert identity_from_certificate(cert) == Identity(Role.HOST, HOST)


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://other/host/{HOST}",  # another trust domain
        f"spiffe://fleetpatch/robot/{HOST}",  # unknown role
        "spiffe://fleetpatch/host/",  # no name
        f"spiffe://fleetpatch/host/{HOST}/extra",
        "spiffe://fleetpatch/host/-leading-dash",
        "spiffe://fleetpatch/admin/" + "a" * 64,  # too long
        f"SPIFFE://fleetpatch/host/{HOST}",
        f"https://fleetpatch/host/{HOST}",
    ],
)
def test_uris_that_are_not_ours_name_none(uri):
    assert identity_from_certificate(_cert_with_uris(uri)) is None


def test_uri_property_matches_what_is_parsed(ca):
    for identity in (Identity(Role.HOST, HOST), Identity(Role.ADMIN, "ops.team_1")):
        assert identity.uri == f"spiffe://fleetpatch/{identity.role.value}/{identity.name}"
        assert identity_from_certificate(_cert_with_uris(identity.uri)) == identity


def test_host_id_pattern():
    assert HOST_ID.match(HOST)
    for bad in ("h-0123456789abcde", "h-0123456789ABCDEF", "x-0123456789abcdef", "h-"):
        assert not HOST_ID.match(bad)


def test_uri_with_trailing_newline_names_none():
    assert identity_from_certificate(_cert_with_uris(f"spiffe://fleetpatch/host/{HOST}\n")) is None


class _Context:
    """What controller.api.auth reads of a gRPC servicer context."""

    def __init__(self, pem: bytes | None) -> None:
        self.pem = pem
        self.reads = 0

    def auth_context(self) -> dict[str, list[bytes]]:
        self.reads += 1
        return {"x509_pem_cert": [self.pem]} if self.pem is not None else {}


def test_a_calls_identity_is_read_once_and_never_given_to_another_call(ca):
    """The admission and the method of one call ask in one task: one read.
    Another call (another context, or another task) gets its own."""

    def pem(host: str) -> bytes:
        cert = ca.issue_client(Identity(Role.HOST, host), new_key().public_key())
        return bytes(cert.public_bytes(serialization.Encoding.PEM))

    first, second, plain = _Context(pem(HOST)), _Context(pem("h-" + "f" * 16)), _Context(None)

    async def call(context: _Context) -> list[Identity | None]:
        asked = [peer_identity(context), peer_identity(context)]  # type: ignore[arg-type]
        await asyncio.sleep(0)  # other calls run meanwhile
        return [*asked, peer_identity(context)]  # type: ignore[arg-type]

    async def main() -> list[list[Identity | None]]:
        return list(await asyncio.gather(call(first), call(second), call(plain)))

    one, two, none = asyncio.run(main())
    assert one == [Identity(Role.HOST, HOST)] * 3
    assert two == [Identity(Role.HOST, "h-" + "f" * 16)] * 3
    assert none == [None] * 3
    assert (first.reads, second.reads, plain.reads) == (1, 1, 1)
    # In one task, a second call's context is read, not answered from the first's.
    assert peer_identity(first) == Identity(Role.HOST, HOST)  # type: ignore[arg-type]
    assert peer_identity(second) == Identity(Role.HOST, "h-" + "f" * 16)  # type: ignore[arg-type]
