"""Signed releases: an Ed25519 release key, a SHA-256 manifest and its signature.

The `fleetpatch release` commands (keygen, sign, verify, publish, list)
are controller.cli.release, a CLI over this module; the controller's
server uses it too, so it imports nothing of the CLI.

Formats (chosen so that a host can check a release with coreutils and
OpenSSL alone, without fleetpatch installed):

- ``SHA256SUMS``, written beside the artifacts: one line per artifact,
  sorted by name, exactly as ``sha256sum`` writes and ``sha256sum -c``
  reads it: 64 lowercase hex digits, two spaces, the file's base name,
  a newline. All artifacts of one manifest live in one directory.
- ``SHA256SUMS.sig``: the raw 64-byte Ed25519 signature (RFC 8032) of the
  exact bytes of ``SHA256SUMS``. ``openssl pkeyutl -verify -pubin -inkey
  release.pub -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig`` checks it.
- Private key: PKCS#8 PEM, unencrypted, mode 0600 (keep it offline).
  Public key: SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``).
  Its fingerprint, printed by every command, is ``SHA256:`` and the first
  16 bytes (hex) of SHA-256 over the 32 raw public key bytes: what a
  platform team compares when it pins the key.

A signature does not say which key made it, so a wrong key and a changed
manifest are the same refusal: "not signed by this key".

Errors are controller.errors types: UsageError (exit 2) for bad input,
Refused (exit 4) for anything verification refuses, Conflict (exit 6)
when keygen would overwrite a key or a published version differs.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fleetpatch import releasefmt
from fleetpatch.atomicfile import write_atomic

from controller.errors import Conflict, Refused, UsageError

# The format is shared with the agents that check it: fleetpatch.releasefmt.
MANIFEST = releasefmt.MANIFEST
SIGNATURE = releasefmt.SIGNATURE
fingerprint = releasefmt.fingerprint
is_signed_by = releasefmt.is_signed_by
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Signed:
    """What `sign_artifacts` wrote."""

    manifest: Path
    signature: Path
    entries: dict[str, str]  # artifact base name -> sha256 hex
    fingerprint: str


@dataclass(frozen=True)
class Verified:
    """What `verify` checked: every named artifact matched the signed manifest."""

    manifest: Path
    artifacts: tuple[Path, ...]
    fingerprint: str


# -- keys ----------------------------------------------------------------------


def keygen(private_path: Path, public_path: Path | None = None) -> tuple[Path, str]:
    """Write a new release key pair; returns the public key path and its
    fingerprint. Refuses (Conflict) to overwrite either file."""
    public_path = public_path or default_public_path(private_path)
    if private_path == public_path:
        raise UsageError("the private and public key paths must differ")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise Conflict(f"{path} already exists; refusing to overwrite a release key")
        if not path.parent.is_dir():
            raise UsageError(f"directory {path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _create_exclusive(private_path, private_pem, 0o600)
        try:
            _create_exclusive(public_path, public_pem, 0o644)
        except BaseException:
            private_path.unlink(missing_ok=True)
            raise
    except FileExistsError as exc:
        raise Conflict(f"{exc.filename} already exists; refusing to overwrite") from None
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return public_path, fingerprint(key.public_key())


def default_public_path(private_path: Path) -> Path:
    """release.key -> release.pub; anything else gets ``.pub`` appended."""
    if private_path.suffix == ".key":
        return private_path.with_suffix(".pub")
    return private_path.with_name(private_path.name + ".pub")


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: a key that appeared since the check is never replaced; the
    # mode is set at creation, so a private key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a release private key; refuses one others can read (like ssh)."""
    data = _read(path, "private key")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UsageError(
            f"private key {path} is accessible by others (mode {mode:04o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a release public key (PEM SubjectPublicKeyInfo)."""
    try:
        return releasefmt.load_public_key(_read(path, "public key"), str(path))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- manifest ------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def manifest_text(entries: dict[str, str]) -> str:
    """The SHA256SUMS text for {base name: sha256 hex}, sorted by name."""
    for name in entries:
        _check_name(name)
    return "".join(f"{entries[name]}  {name}\n" for name in sorted(entries))


def parse_manifest(text: str, where: Path) -> dict[str, str]:
    """{base name: sha256 hex}; raises Refused on anything we do not write."""
    try:
        return releasefmt.parse_manifest(text, str(where))
    except ValueError as exc:
        raise Refused(str(exc)) from None


def _check_name(name: str) -> None:
    # What sha256sum would escape, what a directory check skips (hidden
    # files), and the manifest itself cannot be artifacts.
    if (
        name in (MANIFEST, SIGNATURE)
        or name.startswith(".")
        or name.strip() != name
        or not re.fullmatch(r"[^/\\\n]+", name)
    ):
        raise UsageError(f"cannot sign an artifact named {name!r}")


# -- sign and verify -------------------------------------------------------------


def sign_artifacts(artifacts: Sequence[Path], key_path: Path) -> Signed:
    """Write SHA256SUMS for the artifacts (one directory) and SHA256SUMS.sig
    over it with the release private key. Replaces an older manifest there."""
    if not artifacts:
        raise UsageError("nothing to sign: name at least one artifact")
    key = load_private_key(key_path)
    directories = {a.resolve().parent for a in artifacts}
    if len(directories) != 1:
        raise UsageError("the artifacts of one release must be in one directory")
    directory = directories.pop()
    entries: dict[str, str] = {}
    for artifact in artifacts:
        if not artifact.is_file():
            raise UsageError(f"{artifact} is not a file")
        _check_name(artifact.name)
        entries[artifact.name] = sha256_file(artifact)
    text = manifest_text(entries).encode()
    manifest, signature = directory / MANIFEST, directory / SIGNATURE
    try:
        write_atomic(manifest, text, mode=0o644)
        write_atomic(signature, key.sign(text), mode=0o644)
    except OSError as exc:
        raise UsageError(f"cannot write in {directory}: {exc.strerror}") from None
    return Signed(manifest, signature, entries, fingerprint(key.public_key()))


def verify(target: Path, public_key_path: Path) -> Verified:
    """Check a release directory (every file in it) or one artifact against
    the signed SHA256SUMS beside it.

    Raises Refused for a missing or bad signature, a manifest not signed by
    this key, an artifact missing from the manifest (or, for a directory, a
    listed artifact missing from the directory) and a changed artifact;
    UsageError for a target or key that cannot be read.
    """
    key = load_public_key(public_key_path)
    if target.is_dir():
        directory, wanted = target, None
    elif target.is_file():
        directory, wanted = target.parent, target.name
    else:
        raise UsageError(f"{target} does not exist")
    signed = _signed_manifest(directory, key)
    names = _names_to_check(directory, wanted, signed.entries)
    for name in names:
        _check_digest(directory / name, signed.entries[name])
    return Verified(signed.path, tuple(directory / n for n in names), fingerprint(key))


@dataclass(frozen=True)
class Publishable:
    """An agent package ready to publish: the release's SHA256SUMS and
    SHA256SUMS.sig as they are, and what was checked locally."""

    artifact: Path
    manifest: bytes
    signature: bytes
    sha256: str  # hex, of the artifact, as its manifest line gives it
    size: int
    fingerprint: str  # the key the signature was checked with; "" when none


def prepare_publish(artifact: Path, public_key_path: Path | None) -> Publishable:
    """Read a release around one artifact and check what can be checked
    here: the artifact matches its line of SHA256SUMS, and, with a public
    key, SHA256SUMS is signed by it. Raises what `verify` raises."""
    key = load_public_key(public_key_path) if public_key_path is not None else None
    if not artifact.is_file():
        raise UsageError(f"{artifact} does not exist" if not artifact.exists()
                         else f"{artifact} is not a file")  # fmt: skip
    directory = artifact.parent
    signed = _signed_manifest(directory, key)
    (name,) = _names_to_check(directory, artifact.name, signed.entries)
    _check_digest(artifact, signed.entries[name])
    try:
        size = artifact.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {artifact}: {exc.strerror}") from None
    return Publishable(
        artifact, signed.manifest, signed.signature, signed.entries[name], size,
        fingerprint(key) if key is not None else "",
    )  # fmt: skip


@dataclass(frozen=True)
class _Signed:
    path: Path
    manifest: bytes
    signature: bytes
    entries: dict[str, str]


def _signed_manifest(directory: Path, key: Ed25519PublicKey | None) -> _Signed:
    """SHA256SUMS and SHA256SUMS.sig of a release directory, parsed; the
    signature checked when ``key`` is given (else only required)."""
    manifest_path, signature_path = directory / MANIFEST, directory / SIGNATURE
    if not manifest_path.is_file():
        raise Refused(f"no {MANIFEST} in {directory}: the release is not signed")
    if not signature_path.is_file():
        raise Refused(f"no signature: {signature_path} is missing")
    manifest = _read(manifest_path, "manifest")
    signature = _read(signature_path, "signature")
    if key is not None and not is_signed_by(manifest, signature, key):
        raise Refused(
            f"{manifest_path} is not signed by release key {fingerprint(key)} "
            "(signed by another key, or the manifest or signature was changed)"
        )
    try:
        entries = parse_manifest(manifest.decode(), manifest_path)
    except UnicodeDecodeError:
        raise Refused(f"{manifest_path} is not text") from None
    return _Signed(manifest_path, manifest, signature, entries)


def _check_digest(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise Refused(
            f"{path} does not match the signed manifest "
            f"(sha256 {actual[:16]}..., signed {expected[:16]}...): it was modified"
        )


def _names_to_check(directory: Path, wanted: str | None, entries: dict[str, str]) -> list[str]:
    if wanted is not None:
        if wanted in (MANIFEST, SIGNATURE):
            raise UsageError(f"name an artifact or a directory, not {wanted}")
        if wanted not in entries:
            raise Refused(f"{directory / wanted} is not listed in {directory / MANIFEST}")
        return [wanted]
    present = set(_release_files(directory))
    unlisted = sorted(present - set(entries))
    if unlisted:
        raise Refused(f"{directory / unlisted[0]} is not listed in {directory / MANIFEST}")
    missing = sorted(set(entries) - present)
    if missing:
        raise Refused(f"{directory / missing[0]} is listed in {MANIFEST} but missing")
    return sorted(entries)


def _release_files(directory: Path) -> Iterable[str]:
    """The files a release directory holds: not the manifest and its
    signature, not hidden files, not subdirectories."""
    for entry in directory.iterdir():
        if entry.name in (MANIFEST, SIGNATURE) or entry.name.startswith("."):
            continue
        if entry.is_file():
            yield entry.name


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
