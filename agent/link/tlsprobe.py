"""Before an enrollment token is spent: does the controller's certificate
verify against the CA we were told to pin?

grpc checks it too, but only within the call that sends the token: with a
wrong --ca-cert (or an impostor at the address) the token would already be
on the wire. A short TLS handshake with the standard library's `ssl`,
verifying the chain and the name as grpc does, answers first.
"""

from __future__ import annotations

import socket
import ssl

from fleetpatch.addresses import AddressError, split_address

from agent.errors import AgentError, ConfigError, ControllerUnavailable, TrustError

TIMEOUT_SECONDS = 10.0


def check_server(address: str, ca_pem: bytes, timeout: float = TIMEOUT_SECONDS) -> None:
    """Complete a TLS handshake with ``address`` trusting only ``ca_pem``,
    sending nothing. Raises TrustError when the certificate does not
    verify (wrong CA file, or not the controller), ControllerUnavailable
    when the address cannot be reached, AgentError for another TLS failure."""
    try:
        host, port = split_address(address)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise ConfigError("--ca-cert holds no usable CA certificate") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # as grpc offers
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        raise TrustError(
            f"the controller at {address} presents a certificate that --ca-cert does not "
            f"verify ({exc.verify_message}): wrong --ca-cert, or not your controller; "
            "no token was sent"
        ) from None
    except ssl.SSLError as exc:
        raise AgentError(
            f"TLS with the controller at {address} failed ({exc.reason or exc}); no token was sent"
        ) from None
    except OSError as exc:
        raise ControllerUnavailable(
            f"cannot reach the controller at {address}: {exc.strerror or exc}"
        ) from None
