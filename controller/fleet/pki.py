"""The fleet's certificate authority: server, admin and host certificates.

Keys are ECDSA P-256: small, fast to verify on every handshake, and
supported by every TLS stack an agent may link against. Host certificates
name the host only in a URI subject alternative name
(``spiffe://fleetpatch/host/<id>``); whatever subject or extensions a CSR
asks for are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleetpatch.catrust import same_key
from fleetpatch.identity import Identity

from controller.errors import DataDirError, UsageError

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=825)
CLIENT_LIFETIME = timedelta(days=365)  # admin certificates
# Host certificates: the default of `certificates.host_lifetime`. Hosts renew
# theirs at two thirds of its life (RENEW_AT), over mutual TLS.
HOST_LIFETIME = timedelta(days=90)
RENEW_AT = 2 / 3
_BACKDATE = timedelta(minutes=5)  # tolerate clocks slightly behind ours
_MAX_COMMON_NAME = 64  # characters (RFC 5280, ub-common-name)


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM certificate request for ``key`` (its subject is ignored by the
    CA, which names the identity itself)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from PEM; raises UsageError for anything else."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise UsageError("the key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError("the key is not an ECDSA key")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetpatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def renew_at(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate valid from ``not_before`` to ``not_after`` is due
    for renewal: once two thirds of its life have passed."""
    return not_before + (not_after - not_before) * RENEW_AT


def _builder(
    subject: str, public_key: object, lifetime: timedelta, now: datetime | None = None
) -> x509.CertificateBuilder:
    now = now or datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + lifetime)
    )


class CertificateAuthority:
    """Signs certificates with the CA key made at `controller init`."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert

    @classmethod
    def create(cls, name: str = "fleetpatch fleet CA") -> CertificateAuthority:
        key = new_key()
        subject = _name(name)
        cert = (
            _builder(name, key.public_key(), CA_LIFETIME)
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(
        cls,
        key_pem: bytes,
        cert_pem: bytes,
        key_file: Path | str = "the CA key",
        cert_file: Path | str = "the CA certificate",
    ) -> CertificateAuthority:
        """The CA of a key and its certificate, as `create` made them.
        Raises DataDirError naming ``key_file`` or ``cert_file`` (what the
        message calls them: their paths) when one is damaged, the key is not
        ECDSA, or the key is not the certificate's: a CA that signed with
        another key than its certificate's would issue certificates nobody
        can verify against it."""
        restore = "restore it from a backup of the data dir"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise DataDirError(
                f"{cert_file} is not a PEM certificate (damaged? {restore})"
            ) from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise DataDirError(
                f"{key_file} is not an unencrypted PEM private key (damaged? {restore})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DataDirError(f"{key_file} is not an ECDSA key ({restore})")
        if not same_key(key.public_key(), cert.public_key()):
            raise DataDirError(
                f"{key_file} is not the key of {cert_file} (one was replaced? restore both "
                "from the same backup of the data dir)"
            )
        return cls(key, cert)

    def endorse(self, other: x509.Certificate) -> x509.Certificate:
        """An endorsement of CA certificate ``other`` by this CA: a CA
        certificate for its subject and key, issued by this one (a
        cross-certificate). Agents take a new CA only with one."""
        return (
            x509.CertificateBuilder()
            .subject_name(other.subject)
            .issuer_name(self.cert.subject)
            .public_key(other.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(other.not_valid_before_utc)
            .not_valid_after(min(other.not_valid_after_utc, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self._key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _sign(
        self,
        subject: str,
        public_key: object,
        lifetime: timedelta,
        now: datetime | None,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName],
    ) -> x509.Certificate:
        """A certificate for ``public_key``, valid for ``lifetime`` from
        ``now`` but never past this CA's own end: a certificate cannot be
        trusted longer than its issuer, and one that said otherwise would
        hide the real end from the operator, the metrics and the agents'
        renewal."""
        now = now or datetime.now(UTC)
        ca_end = self.cert.not_valid_after_utc
        if ca_end <= now:
            raise UsageError(
                f"the fleet CA ended on {ca_end:%Y-%m-%d %H:%M} UTC, so it issues nothing:"
                " start a new fleet CA (fleetpatch controller rotate-ca)"
            )
        return (
            _builder(subject, public_key, min(lifetime, ca_end - now), now)
            .issuer_name(self.cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
                False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def issue_server(self, hostnames: list[str]) -> Issued:
        """A server certificate for these names and addresses."""
        key = new_key()
        san: list[x509.GeneralName] = []
        for name in hostnames:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                san.append(x509.DNSName(name))
        # The subject's common name holds 64 characters, a DNS name 253;
        # clients go by the alternative names only.
        subject = hostnames[0] if len(hostnames[0]) <= _MAX_COMMON_NAME else "fleetpatch controller"
        cert = self._sign(
            subject,
            key.public_key(),
            SERVER_LIFETIME,
            None,
            ExtendedKeyUsageOID.SERVER_AUTH,
            san,
        )
        return Issued(key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM))

    def issue_client(
        self,
        identity: Identity,
        public_key: object,
        lifetime: timedelta = CLIENT_LIFETIME,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A client certificate naming ``identity``, for ``public_key``,
        valid for ``lifetime`` from ``now``."""
        return self._sign(
            identity.name,
            public_key,
            lifetime,
            now,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            [x509.UniformResourceIdentifier(identity.uri)],
        )

    def issue_admin(self, name: str = "admin") -> Issued:
        from fleetpatch.identity import Role

        key = new_key()
        cert = self.issue_client(Identity(Role.ADMIN, name), key.public_key())
        return Issued(key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM))

    def sign_csr(
        self,
        csr_pem: bytes,
        identity: Identity,
        lifetime: timedelta = HOST_LIFETIME,
        now: datetime | None = None,
    ) -> x509.Certificate:
        """Issue a client certificate for the key in a CSR.

        The CSR must carry a valid self-signature (proof that the requester
        holds the key) and an acceptable key; its subject and extensions are
        ignored. Raises UsageError otherwise.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise UsageError("the certificate request is not a PEM CSR") from None
        if not csr.is_signature_valid:
            raise UsageError("the certificate request's signature is invalid")
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.key_size < 256:
                raise UsageError("the certificate request's EC key is too small")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise UsageError("the certificate request's RSA key is too small")
        elif not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise UsageError("the certificate request's key type is not accepted")
        return self.issue_client(identity, public_key, lifetime, now)


def check_hostnames(hostnames: Sequence[str]) -> list[str]:
    """The names a server certificate may be issued for, as it will hold
    them: IP addresses, and DNS host names (labels of 1 to 63 letters,
    digits and '-', not at either end; 253 characters in all; one trailing
    dot is dropped). No wildcards. An internationalised name is refused,
    with its A-label (xn--) form to give instead: a certificate holds only
    that, and Python's IDNA 2003 codec does not always spell it as DNS
    (IDNA 2008) does. Raises UsageError naming the first bad one."""
    if not hostnames:
        raise UsageError("--hostname: at least one name is needed")
    return [_check_hostname(name) for name in hostnames]


# '_' as well: not in a host name by RFC 1123, but in names people use
# (a container's, a service's) and taken by TLS clients; refusing it here
# would refuse to renew a certificate issued for one before.
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _check_hostname(name: str) -> str:
    shown = repr(name) if len(name) <= 80 else f"{name[:60]!r}..."
    wrong = f"--hostname {shown} is not a host name"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise UsageError(
                f"--hostname {shown}: a certificate holds no zone (%...) of an address"
            )
        return name
    if not name.isascii():
        raise UsageError(f"{wrong}: give an internationalised name in its A-label form, "
                         f"as DNS holds it{_a_label_hint(name)}")  # fmt: skip
    dns = name.removesuffix(".")
    if not dns:
        raise UsageError(wrong)
    if len(dns) > 253:
        raise UsageError(f"{wrong}: it is {len(dns)} characters long, at most 253")
    labels = dns.split(".")
    for label in labels:
        if not label:
            raise UsageError(f"{wrong}: it has an empty label (two dots, or a leading one)")
        if len(label) > 63:
            raise UsageError(f"{wrong}: its label {label[:20]}... is {len(label)} characters"
                             " long, at most 63")  # fmt: skip
        if not _LABEL.fullmatch(label):
            raise UsageError(f"{wrong}: each label is letters, digits, '_' and '-', not "
                             "starting or ending with '-' (no '*' or spaces)")  # fmt: skip
    if labels[-1].isdigit():
        raise UsageError(f"{wrong}, nor an IP address")
    return dns


def _a_label_hint(name: str) -> str:
    """' (xn--...; probably A-LABEL)', the A-label of ``name`` by Python's
    idna codec when that spells the same name back, else ' (xn--...)'."""
    try:
        a_label = name.encode("idna").decode("ascii")
        same = a_label.encode("ascii").decode("idna") == name.removesuffix(".").lower()
    except UnicodeError:
        same = False
    return f" (xn--...; probably {a_label.removesuffix('.')})" if same else " (xn--...)"


def names_of(cert: x509.Certificate) -> list[str]:
    """The DNS names and addresses a server certificate covers, in order."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in names]


def server_names(*hostnames: str) -> list[str]:
    """The names a server certificate for ``hostnames`` covers, each once,
    in the order given.

    A loopback name also covers the loopback addresses, so that
    ``--controller 127.0.0.1:7443`` works with ``--hostname localhost``.
    """
    names: list[str] = []
    for hostname in hostnames:
        names.append(hostname)
        if hostname in _LOOPBACK:
            names += [n for n in _LOOPBACK if n != hostname]
    return list(dict.fromkeys(names))


_LOOPBACK = ("localhost", "127.0.0.1", "::1")
