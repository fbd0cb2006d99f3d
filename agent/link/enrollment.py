"""Enrollment: make a key that never leaves the host, ask the controller to
certify it with a token, and pin what the controller answered."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.envelope import key_id
from fleetpatch.identity import Role, identity_from_certificate
from fleetpatch.v1 import agent_pb2

from agent.errors import AgentError, ConfigError
from agent.host import facts as hostfacts
from agent.link import convert
from agent.link.client import enroll_call
from agent.orders.journal import Journal
from agent.statedir import StateDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolled:
    host_id: str
    region: str
    ring: int


def default_enroll_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--controller {address!r} is not HOST:PORT")
    return f"{host}:{int(port) + 1}"


def enroll(
    state: StateDir,
    controller: str,
    token: str,
    ca_cert: Path,
    labels: dict[str, str],
    enroll_address: str | None = None,
) -> Enrolled:
    """Enroll this host. Leaves the state dir as it was on any failure."""
    if state.is_enrolled():
        raise ConfigError(
            f"{state.path} is already enrolled as {state.host_id()} "
            "(use another --state-dir, or remove this one to enroll again)"
        )
    enroll_address = enroll_address or default_enroll_address(controller)
    try:
        ca_pem = ca_cert.read_bytes()
        ca = x509.load_pem_x509_certificate(ca_pem)
    except OSError as exc:
        raise ConfigError(f"cannot read --ca-cert {ca_cert}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"--ca-cert {ca_cert} is not a PEM certificate") from None

    state.create()
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetpatch-agent")]))
        .sign(key, hashes.SHA256())
    )
    request = agent_pb2.EnrollRequest(
        token=token,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM),
        labels=labels,
        facts=convert.facts_to_pb(hostfacts.collect()),
    )
    response = enroll_call(enroll_address, ca_pem, request)

    cert = _check_certificate(response, ca, key)
    signing = {}
    for announced in response.signing_keys:
        if len(announced.public_key) != 32 or key_id(announced.public_key) != announced.key_id:
            raise AgentError("the controller sent a malformed signing key; not enrolled")
        signing[announced.key_id] = bytes(announced.public_key)
    if not signing:
        raise AgentError("the controller sent no work-order signing key; not enrolled")

    state.write(state.key, key_pem, mode=0o600)
    state.write(state.ca, ca_pem, mode=0o644)
    state.write_trusted_signing_keys(signing)
    state.write_config(controller, enroll_address)
    Journal.open(state.journal).close()
    # Written last: its presence is what marks the state dir as enrolled.
    state.write(state.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.info("enrolled as %s in %s ring %d", response.host_id, response.region, response.ring)
    return Enrolled(response.host_id, response.region, response.ring)


def _check_certificate(
    response: agent_pb2.EnrollResponse, ca: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """The issued certificate must be for our key, signed by the pinned CA,
    and name the host id the controller announced."""
    try:
        cert = x509.load_pem_x509_certificate(response.certificate_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise AgentError(
            "the controller's certificate for this host is not signed by the pinned CA; "
            "not enrolled"
        ) from None
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    identity = identity_from_certificate(cert)
    if (
        ours != theirs
        or identity is None
        or identity.role is not Role.HOST
        or (identity.name != response.host_id)
    ):
        raise AgentError("the controller's certificate does not match this host; not enrolled")
    return cert
