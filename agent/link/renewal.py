"""Renewing this host's certificate before it expires.

Once two thirds of the certificate's life have passed (the controller
chooses the lifetime), the agent makes a new key on the host (0600; it
never leaves), asks the controller over mutual TLS, with the current
certificate, to certify it, and keeps the current key and certificate
until the new ones have worked: they are staged in a hidden directory,
checked (issued by the pinned CA, for the new key, naming this same host),
used for one mutual-TLS call, and only then committed by renaming the
staging directory to `renewed/` and moving them into place
(`StateDir.finish_renewal`, which the next start also runs, so a renewal
killed at any point leaves either the old identity or the new one).

A certificate that has already expired cannot renew (TLS would refuse it,
and the controller too): the host must enroll again with a token, and the
agent stops with one line saying so (exit 4). Failed renewals are counted
and sent with every check-in, so the controller flags hosts whose renewal
keeps failing."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fleetpatch.v1 import agent_pb2

from agent.errors import AgentError, Refused, StateDirError, TransientError, storage_error
from agent.link.client import ControllerClient
from agent.statedir import StateDir, fsync_dir

if TYPE_CHECKING:
    # Imported where a certificate is judged or made (`trust`, `renew`):
    # the daemon's check-ins read its dates and the CAs' digest without it
    # (fleetpatch.certfields).
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3  # of the certificate's life
STAGING_PREFIX = ".renew-"

Connect = Callable[[str, bytes, bytes, bytes], ControllerClient]


class CertificateExpired(Refused):
    """This host's certificate has expired: only enrolling again helps."""


def renew_at(cert: x509.Certificate) -> datetime:
    return renewal_time(cert.not_valid_before_utc, cert.not_valid_after_utc)


def renewal_time(start: datetime, end: datetime) -> datetime:
    """When a certificate valid from ``start`` to ``end`` is renewed."""
    return start + (end - start) * RENEW_AT


def expired_message(state: StateDir, not_after: datetime) -> str:
    return (
        f"this host's certificate ({state.cert}) expired at "
        f"{not_after:%Y-%m-%d %H:%M:%SZ} and cannot be renewed: enroll this "
        f"host again with a token (fleetpatch-agent enroll --state-dir {state.path} "
        "--controller ADDR --token-file FILE --ca-cert ca.pem)"
    )


class Renewal:
    """Renews the certificate of ``state`` when it is due, through
    ``client`` (which then calls with the new one). ``clock``: now, in UTC."""

    def __init__(
        self,
        state: StateDir,
        client: ControllerClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        connect: Connect = ControllerClient,
    ) -> None:
        self._state = state
        self._client = client
        self._clock = clock
        self._connect = connect
        self.failures = 0  # in a row; sent with each check-in
        self.last_error = ""
        self._renew_now = False  # asked by the controller (a CA rotation)

    def due(self) -> bool:
        """Raises CertificateExpired when it is too late."""
        start, end = self._state.validity()
        now = self._clock()
        if now >= end:
            raise CertificateExpired(expired_message(self._state, end))
        return self._renew_now or now >= renewal_time(start, end)

    def trust_hash(self) -> str:
        """The digest of the CAs this host trusts, sent with each check-in."""
        return self._state.trust_hash()

    def trust(self, offered: agent_pb2.CaTrust) -> bool:
        """Take the CAs the controller vouches for (catrust.accept), pin them
        in ca.pem and call with them; renew at once when asked (our
        certificate is from a CA being retired). Whether the trust changed.
        A refused offer is logged and changes nothing."""
        from cryptography import x509
        from fleetpatch import catrust

        try:
            cas = catrust.accept(
                self._state.trusted_cas(),
                [x509.load_pem_x509_certificate(p) for p in offered.ca_pem],
                [x509.load_pem_x509_certificate(p) for p in offered.endorsements_pem],
                self._state.certificate(),
            )
        except ValueError as exc:  # TrustError too
            log.warning("the controller's CA certificates were not taken: %s", exc)
            return False
        changed = catrust.bundle_hash(cas) != self.trust_hash()
        if changed:
            pem = catrust.to_pem(cas)
            try:
                self._state.write(self._state.ca, pem, mode=0o644)
            except StateDirError as exc:  # offered again at the next check-in
                log.warning("cannot pin the controller's CA certificates: %s", exc)
                return False
            self._client.retrust(pem)
            log.info("trusting the CA(s) %s",
                     "; ".join(c.subject.rfc4514_string() for c in cas))  # fmt: skip
        if offered.renew_now and not self._renew_now:
            log.info("the controller asks this host to renew onto its new CA")
        self._renew_now = offered.renew_now
        return changed

    def maybe_renew(self) -> bool:
        """Renew when due; True when it did. A failure is logged and counted
        (the controller is told at the next check-in), and the current
        certificate is kept; a controller that cannot be reached is not a
        failure of the renewal (the check-in will say so). Raises
        CertificateExpired."""
        if not self.due():
            return False
        try:
            serial = renew(self._state, self._client, self._connect)
        except TransientError as exc:
            log.info("certificate renewal postponed: %s", exc)
            return False
        except AgentError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.warning("certificate renewal failed (%d in a row), keeping the current "
                        "certificate: %s", self.failures, exc)  # fmt: skip
            return False
        self.failures, self.last_error = 0, ""
        self._renew_now = False
        log.info("renewed this host's certificate: serial %s", serial)
        return True


def renew(state: StateDir, client: ControllerClient, connect: Connect = ControllerClient) -> str:
    """Renew now: all or nothing (see the module). Returns the new serial.
    Raises AgentError (TransientError: try again later)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    credentials = state.credentials()  # also finishes a committed renewal
    current = state.certificate()
    cas = state.trusted_cas(credentials.ca_pem)
    for stale in state.path.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=state.path))  # 0700
    except OSError as exc:
        raise storage_error(state.path, exc) or StateDirError(
            f"cannot write in {state.path}: {exc.strerror}"
        ) from None
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        state.write(staging / "key.pem", key_pem, mode=0o600)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetpatch-agent")]))
            .sign(key, hashes.SHA256())
        )
        cert_pem = client.renew(csr.public_bytes(serialization.Encoding.PEM))
        cert = _check(cert_pem, cas, key, current)
        state.write(staging / "cert.pem", cert_pem, mode=0o644)
        trial = connect(client.address, credentials.ca_pem, key_pem, cert_pem)
        try:
            trial.reach()
        except TransientError:
            raise
        except AgentError as exc:
            raise AgentError(f"the renewed certificate was refused: {exc}") from None
        finally:
            trial.close()
        # The commit point: a complete, working key and certificate.
        try:
            os.rename(staging, state.renewed)
        except OSError as exc:
            raise storage_error(state.renewed, exc) or StateDirError(
                f"cannot write {state.renewed}: {exc.strerror}"
            ) from None
        fsync_dir(state.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    state.finish_renewal()
    client.reload(key_pem, cert_pem)
    return format(cert.serial_number, "x")


def _check(
    cert_pem: bytes,
    cas: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    current: x509.Certificate,
) -> x509.Certificate:
    """The renewed certificate must be signed by a pinned CA (the new one
    during a CA rotation), for the new key, and name this host as the
    current one does."""
    from cryptography import x509
    from fleetpatch import catrust
    from fleetpatch.identity import identity_from_certificate

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        cert = None
    if cert is None or not catrust.issued_by_any(cert, cas):
        raise AgentError(
            "the controller's renewed certificate is not signed by the pinned CA"
        ) from None
    if not catrust.same_key(cert.public_key(), key.public_key()):
        raise AgentError("the controller's renewed certificate is not for this host's new key")
    if identity_from_certificate(cert) != identity_from_certificate(current):
        raise AgentError("the controller's renewed certificate names another host")
    return cert
