"""Why a TLS connection to the controller failed, when trust is the reason.

grpc reports a handshake that fails on trust (the server's certificate does
not verify against our CA; the server refuses our client certificate) as
UNAVAILABLE, the same code as a controller that is down, and, when the
server refuses us, with nothing but "Socket closed". Retrying cannot cure
either: a person must fix a file. `trust_problem` repeats the handshake with
the standard library's `ssl`, sending nothing, and says which it is.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from fleetpatch.addresses import AddressError, split_address

TIMEOUT_SECONDS = 5.0
# Alerts a TLS server sends when it refuses the client's certificate.
_REFUSED_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA",
                   "CERTIFICATE_UNKNOWN", "ACCESS_DENIED", "DECRYPT_ERROR")  # fmt: skip


def trust_problem(
    address: str,
    ca_pem: bytes,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> str | None:
    """What fails on trust in a TLS handshake with ``address`` that trusts
    only ``ca_pem`` and (when given) presents ``cert_file``/``key_file``:
    a sentence naming the side at fault, or None when the handshake
    succeeds or fails for another reason (nothing listens, a timeout).
    Raises nothing."""
    try:
        host, port = split_address(address)
    except AddressError:
        return None
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
        if cert_file is not None and key_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, ValueError, OSError):
        return "the CA certificate or our own certificate and key cannot be loaded"
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # as grpc offers
    try:
        closed = _closed_after_handshake(context, host, port, timeout)
    except OSError as exc:  # ssl.SSLError is one
        return _explain(exc, address)
    if closed and cert_file is not None:
        return (
            f"the server at {address} closed the connection right after the TLS "
            "handshake: it refuses our certificate (issued by another CA than its own?)"
        )
    return None


def _explain(exc: OSError, address: str) -> str | None:
    """The trust problem a failed handshake shows, if that is what it is."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server at {address} presents a certificate our CA does not verify "
            f"({exc.verify_message}): a wrong CA certificate, or not this controller"
        )
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLError) and any(alert in reason for alert in _REFUSED_ALERTS):
        return (
            f"the server at {address} refuses our certificate ({reason}): it was issued "
            "by another CA than the controller's"
        )
    return None  # nothing listens, a reset, a timeout: not trust


def _closed_after_handshake(context: ssl.SSLContext, host: str, port: int,
                            timeout: float) -> bool:  # fmt: skip
    """Handshake, then wait briefly: True when the server closes at once.

    In TLS 1.3 a server refuses a client certificate after the client's side
    of the handshake is done: with an alert (raised here), or, as grpc does,
    by closing, where a server that accepted us would send its HTTP/2
    settings or wait for ours (a timeout: False)."""
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        tls.settimeout(min(timeout, 2.0))
        try:
            return tls.recv(1) == b""
        except TimeoutError:
            return False
