"""Which CA certificates to trust, across a CA rotation.

A host pins the fleet CA at enrollment. `fleetpatch controller rotate-ca`
makes a new CA and an *endorsement* of it: a certificate with the new
CA's subject and public key, issued by the old CA. The controller offers
both CAs, with the endorsement, in its check-in answers; a host takes a
CA it does not trust yet only when an endorsement of it was issued by a
CA it trusts already (the channel it arrived on is authenticated too, but
the endorsement is what stands on its own). When the old CA is retired,
the controller offers the new one alone, and hosts drop the old one.

Both ends use these functions: the controller to endorse and to say what
it offers, agents to decide what they take.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from fleetpatch import certfields

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.DOTALL)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TrustError(ValueError):
    """An offered CA that cannot be taken: the message says why."""


def load_bundle(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; ValueError when there
    is none or one does not parse."""
    blocks = _PEM.findall(pem)
    if not blocks:
        raise ValueError("no PEM certificate")
    return [x509.load_pem_x509_certificate(block) for block in blocks]


def to_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def bundle_hash(certs: list[x509.Certificate]) -> str:
    """A digest of a set of CA certificates, whatever their order (the
    agent computes it from ca.pem without cryptography: certfields)."""
    return certfields.bundle_hash(c.public_bytes(serialization.Encoding.DER) for c in certs)


def issued_by_any(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    """Whether one of ``cas`` signed ``cert`` directly."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def same_key(one: PublicKeyTypes, other: PublicKeyTypes) -> bool:
    """Whether two public keys (a certificate's, a private key's) are one:
    a key beside a certificate that is not its own, a certificate issued
    for another key, an endorsement of another CA."""
    return one.public_bytes(*_SPKI) == other.public_bytes(*_SPKI)


def _endorses(endorsement: x509.Certificate, ca: x509.Certificate) -> bool:
    return endorsement.subject == ca.subject and same_key(endorsement.public_key(), ca.public_key())


def accept(
    trusted: list[x509.Certificate],
    offered: list[x509.Certificate],
    endorsements: list[x509.Certificate],
    own: x509.Certificate,
) -> list[x509.Certificate]:
    """What to trust from now on, given what is ``trusted`` now and what the
    controller ``offered`` with its ``endorsements``; ``own``: this host's
    certificate. Every offered CA must be trusted already, or endorsed by a
    certificate for its subject and key issued by a trusted CA. A CA that
    issued ``own`` is kept even when no longer offered (dropping it would
    strand the host before it has renewed). Raises TrustError."""
    if not offered:
        raise TrustError("the controller offered no CA")
    known = {c.public_bytes(serialization.Encoding.DER) for c in trusted}
    taken: list[x509.Certificate] = []
    for ca in offered:
        if ca.public_bytes(serialization.Encoding.DER) not in known and not any(
            _endorses(e, ca) and issued_by_any(e, trusted) for e in endorsements
        ):
            raise TrustError(
                f"the controller offered CA {ca.subject.rfc4514_string()} without an "
                "endorsement by a CA this host trusts"
            )
        try:
            ca.verify_directly_issued_by(ca)  # a CA certificate signs itself
        except (ValueError, TypeError, InvalidSignature):
            raise TrustError(
                f"the offered CA {ca.subject.rfc4514_string()} is not self-signed"
            ) from None
        taken.append(ca)
    if not issued_by_any(own, taken):
        taken += [ca for ca in trusted if issued_by_any(own, [ca])]
    return taken
