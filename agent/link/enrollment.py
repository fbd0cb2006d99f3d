"""Enrollment: make a key that never leaves the host, ask the controller to
certify it with a token, and pin what the controller answered.

All or nothing on this side: the token is sent only once the state dir has
taken the key and the journal (with room kept for the rest) and the
controller's certificate verifies against the CA to pin; the state is
staged and moved into place, the certificate last; a failure anywhere
leaves the state dir as it was. A host killed mid-way (SIGKILL) can leave
a hidden staging dir or state files without cert.pem: not enrolled, and
the next `enroll` clears them."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch import addresses, catrust, regularfile
from fleetpatch.addresses import AddressError
from fleetpatch.envelope import key_id
from fleetpatch.identity import Role, identity_from_certificate
from fleetpatch.v1 import agent_pb2

from agent.errors import AgentError, ConfigError, StateDirError, storage_error
from agent.host import facts as hostfacts
from agent.link import convert, tlsprobe
from agent.link.client import ControllerClient, enroll_call
from agent.orders.journal import Journal
from agent.statedir import StateDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolled:
    host_id: str
    region: str
    ring: int
    # Why the first mutual-TLS call with the new identity failed, if it
    # did: enrolled all the same (the service's first check-in confirms).
    unconfirmed: str = ""
    # Hosts already enrolled that report this host's machine-id (clones).
    same_machine_id: tuple[str, ...] = ()


EnrollCall = Callable[[str, bytes, agent_pb2.EnrollRequest], agent_pb2.EnrollResponse]
ServerCheck = Callable[[str, bytes], None]
STAGING_PREFIX = ".enroll-"
# Room kept in the staging dir while the token is spent, freed for what
# only the answer brings (certificate, signing keys, settings): a state dir
# that had room for the key and the journal has room for the rest.
RESERVE_BYTES = 256 * 1024


def enroll(
    state: StateDir,
    controller: str,
    token: str,
    ca_cert: Path,
    labels: dict[str, str],
    enroll_address: str | None = None,
    call: EnrollCall = enroll_call,
    check_server: ServerCheck = tlsprobe.check_server,
) -> Enrolled:
    """Enroll this host: all or nothing. Everything that can fail without
    the controller is done before the token is sent (the state dir is
    written, with room to spare; the controller's certificate verifies
    against ``ca_cert``); the state is written into a staging directory
    and moved into place, the certificate (which marks the state dir as
    enrolled) last. On any failure the state dir is left as it was.
    Raises ConfigError, ControllerUnavailable, Refused, AgentError."""
    try:
        ca_pem = ca_cert.read_bytes()
        # Every certificate in the file: the TLS check and the pin use
        # them all, so trust is judged by the same ones throughout.
        cas = catrust.load_bundle(ca_pem)
    except OSError as exc:
        raise ConfigError(f"cannot read --ca-cert {ca_cert}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"--ca-cert {ca_cert} is not a PEM certificate") from None
    controller, enroll_address = _addresses(controller, enroll_address)

    created = not state.path.exists()
    if state.is_enrolled() and not _expired(state) and not _from_another_ca(state, cas):
        raise _already_enrolled(state)
    state.create()
    held = state.hold()  # before anything is removed: another enroll may be at work here
    try:
        if state.is_enrolled() and not _expired(state) and not _from_another_ca(state, cas):
            raise _already_enrolled(state)  # by an enroll that finished while we waited
        _remove_stale_staging(state)
        moved: list[Path] = []
        try:
            staging = StateDir(Path(_mkdtemp(state)))
            try:
                response = _enroll_staged(
                    state, staging, controller, enroll_address, token, cas, ca_pem, labels,
                    call, check_server, moved,
                )  # fmt: skip
            finally:
                shutil.rmtree(staging.path, ignore_errors=True)
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            if created:
                shutil.rmtree(state.path, ignore_errors=True)
            raise
    finally:
        os.close(held)
    log.info("enrolled as %s in %s ring %d", response.host_id, response.region, response.ring)
    return Enrolled(
        response.host_id,
        response.region,
        response.ring,
        unconfirmed=_confirm(state, controller),
        same_machine_id=tuple(response.same_machine_id),
    )


def _already_enrolled(state: StateDir) -> ConfigError:
    return ConfigError(
        f"{state.path} is already enrolled as {state.host_id()} "
        "(use another --state-dir, or remove this one to enroll again)"
    )


def _addresses(controller: str, enroll_address: str | None) -> tuple[str, str]:
    """``--controller`` and ``--enroll-address`` checked (the latter by
    default the port after the first controller's): a typo costs no token."""
    try:
        controllers = addresses.split_addresses(controller)
    except AddressError as exc:
        raise ConfigError(f"--controller: {exc}") from None
    if not enroll_address:
        try:
            return ",".join(controllers), addresses.port_after(controllers[0])
        except AddressError as exc:
            raise ConfigError(f"--controller: {exc} (give --enroll-address)") from None
    try:
        addresses.split_address(enroll_address)
    except AddressError as exc:
        raise ConfigError(f"--enroll-address: {exc}") from None
    return ",".join(controllers), enroll_address


def _enroll_staged(
    state: StateDir,
    staging: StateDir,
    controller: str,
    enroll_address: str,
    token: str,
    given: list[x509.Certificate],
    ca_pem: bytes,
    labels: dict[str, str],
    call: EnrollCall,
    check_server: ServerCheck,
    moved: list[Path],
) -> agent_pb2.EnrollResponse:
    _check_targets(state)
    # What needs no controller first: proves the state dir takes writes.
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    staging.write(staging.key, key_pem, mode=0o600)
    staging.write(staging.ca, ca_pem, mode=0o644)
    Journal.open(staging.journal).close()
    reserve = staging.path / "reserve"
    staging.write(reserve, bytes(RESERVE_BYTES), mode=0o600)
    # The settings are read as the daemon will read them, so a mistake in
    # them costs no token; the facts sent name the package manager they set.
    staging.write_config(controller, enroll_address, keep=state.config_file)
    config = StateDir(staging.path, state.settings).config()
    check_server(enroll_address, ca_pem)

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetpatch-agent")]))
        .sign(key, hashes.SHA256())
    )
    request = agent_pb2.EnrollRequest(
        token=token,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM),
        labels=labels,
        facts=convert.facts_to_pb(hostfacts.collect(config.package_manager)),
    )
    response = call(enroll_address, ca_pem, request)

    cas = _trusted(response, given)
    cert = _check_certificate(response, cas, key)
    signing = {}
    for announced in response.signing_keys:
        if len(announced.public_key) != 32 or key_id(announced.public_key) != announced.key_id:
            raise AgentError("the controller sent a malformed signing key; not enrolled")
        signing[announced.key_id] = bytes(announced.public_key)
    if not signing:
        raise AgentError("the controller sent no work-order signing key; not enrolled")

    reserve.unlink()
    # What is trusted from now on: the CAs of --ca-cert, or during a CA
    # rotation those the controller offered that they endorse.
    staging.write(staging.ca, catrust.to_pem(cas), mode=0o644)
    staging.write_trusted_signing_keys(signing)
    staging.write(staging.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _move_in(state, staging, moved)
    _fsync_dir(state.path)
    return response


# What enrolling puts in the state dir, the certificate last: its presence
# is what marks the state dir enrolled.
_STATE_FILES = ("key.pem", "ca.pem", "journal.db", "trusted_keys.json", "agent.toml", "cert.pem")
# A journal left from an earlier identity goes with its WAL: SQLite would
# replay an old WAL into the new journal.
_STALE = ("journal.db-wal", "journal.db-shm")


def _check_targets(state: StateDir) -> None:
    """Each file enrolling replaces is absent or a regular file: anything
    else (a directory, a symlink) would fail the move after the token is
    spent, or be replaced where the person meant it to stay. StateDirError
    before the token is sent."""
    for name in (*_STATE_FILES, *_STALE):
        target = state.path / name
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise storage_error(target, exc) or StateDirError(
                f"cannot use {target}: {exc.strerror}"
            ) from None
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else regularfile.kind(mode)
            raise StateDirError(
                f"{target} is {what}, where enrolling writes a file: move it away (for "
                "settings of your own, edit the file itself or /etc/fleetpatch/agent.toml), "
                "then enroll again; no token was sent"
            )


def _move_in(state: StateDir, staging: StateDir, moved: list[Path]) -> None:
    """The staged files into the state dir, the files they replace (and a
    journal's WAL) kept in the staging dir meanwhile: a move that fails
    puts every one of them back, so a failed enrollment leaves the state
    dir as it was."""
    previous = staging.path / "previous"
    previous.mkdir(mode=0o700)
    started: list[str] = []
    try:
        for name in (*_STALE, *_STATE_FILES):
            target = state.path / name
            started.append(name)
            if os.path.lexists(target):
                os.replace(target, previous / name)
            if name in _STATE_FILES:
                os.replace(staging.path / name, target)
    except BaseException as exc:
        for name in reversed(started):
            target, kept = state.path / name, previous / name
            if os.path.lexists(kept):
                os.replace(kept, target)
            elif name in _STATE_FILES:
                target.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise storage_error(state.path, exc) or StateDirError(
                f"cannot write in {state.path}: {exc.strerror}"
            ) from None
        raise
    moved.extend(state.path / name for name in _STATE_FILES)


def _expired(state: StateDir) -> bool:
    """The enrolled identity's certificate has expired: it can never renew,
    so enrolling again (a new host id) replaces it."""
    if datetime.now(UTC) < state.certificate().not_valid_after_utc:
        return False
    log.info("the certificate of %s has expired; enrolling this host again", state.host_id())
    return True


def _from_another_ca(state: StateDir, cas: list[x509.Certificate]) -> bool:
    """The enrolled identity's certificate is not from the CA enrolled with
    now: the fleet's CA was rotated while this host was away (its old CA is
    retired, so it cannot reach the controller), and enrolling again
    replaces it."""
    if catrust.issued_by_any(state.certificate(), cas):
        return False
    log.info("the certificate of %s is from another CA (a CA rotation); enrolling this "
             "host again", state.host_id())  # fmt: skip
    return True


def _mkdtemp(state: StateDir) -> str:
    try:
        return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=state.path)  # mode 0700
    except OSError as exc:
        raise storage_error(state.path, exc) or StateDirError(
            f"cannot write in {state.path}: {exc.strerror}"
        ) from None


def _remove_stale_staging(state: StateDir) -> None:
    """Staging dirs an enrollment killed mid-way left behind."""
    for stale in state.path.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _confirm(state: StateDir, controller: str) -> str:
    """One mutual-TLS call with the new identity (an empty report): proves
    the key, certificate and pinned CA work together, and confirms the
    host to the controller. Returns why it failed, "" when it did not."""
    try:
        credentials = state.credentials()
        client = ControllerClient(
            controller, credentials.ca_pem, credentials.key_pem, credentials.cert_pem
        )
        try:
            client.reach()
        finally:
            client.close()
    except AgentError as exc:
        log.warning("enrolled, but the first call as this host failed: %s", exc)
        return str(exc)
    return ""


def _trusted(
    response: agent_pb2.EnrollResponse, given: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The CAs to pin: those ``given`` (--ca-cert), or those the controller
    offers, each one of them or endorsed by one (a CA rotation)."""
    if not response.ca_pem:
        return given
    try:
        offered = catrust.load_bundle(response.ca_pem)
        endorsements = [x509.load_pem_x509_certificate(p) for p in response.ca_endorsements_pem]
        own = x509.load_pem_x509_certificate(response.certificate_pem)
        cas = catrust.accept(given, offered, endorsements, own)
    except ValueError as exc:  # TrustError too
        raise AgentError(f"the controller's CA certificates are not trusted ({exc}); "
                         "not enrolled") from None  # fmt: skip
    return cas


def _check_certificate(
    response: agent_pb2.EnrollResponse,
    cas: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    """The issued certificate must be for our key, signed by a pinned CA,
    and name the host id the controller announced."""
    try:
        cert = x509.load_pem_x509_certificate(response.certificate_pem)
    except ValueError:
        cert = None
    if cert is None or not catrust.issued_by_any(cert, cas):
        raise AgentError(
            "the controller's certificate for this host is not signed by the pinned CA; "
            "not enrolled"
        ) from None
    identity = identity_from_certificate(cert)
    if (
        not catrust.same_key(key.public_key(), cert.public_key())
        or identity is None
        or identity.role is not Role.HOST
        or (identity.name != response.host_id)
    ):
        raise AgentError("the controller's certificate does not match this host; not enrolled")
    return cert
