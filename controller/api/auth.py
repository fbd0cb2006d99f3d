"""Who is calling: the identity in the verified peer certificate.

The mTLS listener only completes a handshake with a certificate our CA
signed, so a certificate present in the auth context is already verified;
here it is only read. The enrollment listener requests no certificate, so a
call arriving there carries no identity and only Enroll is served.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import lru_cache

import grpc
from cryptography import x509
from fleetpatch.identity import Identity, identity_from_certificate


@lru_cache(maxsize=65536)
def _identity_of(pem: bytes) -> Identity | None:
    try:
        return identity_from_certificate(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None


# The last caller this task asked about, and its identity: a call's
# admission and its method both ask, in the same task (a context variable
# is the task's own), and reading the auth context copies every property
# of the TLS session, the certificate's PEM included, each time.
_asked: ContextVar[tuple[object, Identity | None] | None] = ContextVar("_asked", default=None)


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> Identity | None:
    """The verified identity of the caller, or None on the enrollment port."""
    asked = _asked.get()
    if asked is not None and asked[0] is context:
        return asked[1]
    certs = list(context.auth_context().get("x509_pem_cert", ()))
    identity = _identity_of(bytes(certs[0])) if certs else None
    _asked.set((context, identity))
    return identity


def peer_certificate(context: grpc.aio.ServicerContext[object, object]) -> x509.Certificate | None:
    """The caller's verified certificate, or None on the enrollment port."""
    certs = list(context.auth_context().get("x509_pem_cert", ()))
    if not certs:
        return None
    try:
        return x509.load_pem_x509_certificate(bytes(certs[0]))
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _issuer_of(pem: bytes) -> x509.Name | None:
    try:
        return x509.load_pem_x509_certificate(pem).issuer
    except ValueError:
        return None


def peer_issuer(context: grpc.aio.ServicerContext[object, object]) -> x509.Name | None:
    """Who issued the caller's verified certificate (cached: a CA rotation
    asks at every check-in)."""
    certs = list(context.auth_context().get("x509_pem_cert", ()))
    if not certs:
        return None
    return _issuer_of(bytes(certs[0]))
