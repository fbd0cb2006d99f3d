"""The signed-release format, as both its writer and its readers see it.

`fleetpatch release sign` writes it (controller.releases.signed); an agent that is
handed a new version of itself checks it, against the release public key
pinned on its host. The format is documented in controller.releases.signed:
SHA256SUMS as `sha256sum` writes it, and SHA256SUMS.sig, the raw Ed25519
signature of those exact bytes.

Errors are ValueError with a message naming what is wrong; each side turns
them into its own error type.
"""

from __future__ import annotations

import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
_LINE = re.compile(r"^([0-9a-f]{64})  ([^/\\\n]+)$")


def parse_manifest(text: str, where: str = MANIFEST) -> dict[str, str]:
    """{base name: sha256 hex}; ValueError on anything `release sign` does not write."""
    if not text.endswith("\n"):
        raise ValueError(f"{where} is not a SHA256SUMS file (it does not end with a newline)")
    entries: dict[str, str] = {}
    for number, line in enumerate(text[:-1].split("\n"), 1):
        found = _LINE.fullmatch(line)
        if found is None or found[2] in entries:
            raise ValueError(f"{where} line {number} is not a SHA256SUMS line")
        entries[found[2]] = found[1]
    return entries


def load_public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    """A release public key (PEM SubjectPublicKeyInfo); ValueError otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValueError(f"{where} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{where} is not an Ed25519 public key")
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``SHA256:`` + 32 hex digits: a short, stable name for a release key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:32]


def is_signed_by(manifest: bytes, signature: bytes, public_key: Ed25519PublicKey) -> bool:
    """Whether ``signature`` is the key's signature of exactly ``manifest``."""
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        return False
    return True


def signed_digest(
    manifest: bytes, signature: bytes, public_key: Ed25519PublicKey, artifact: str
) -> str:
    """The sha256 hex the release signed for ``artifact``; ValueError when the
    manifest is not signed by the key, malformed, or does not list it."""
    if not is_signed_by(manifest, signature, public_key):
        raise ValueError(
            f"the release manifest is not signed by release key {fingerprint(public_key)}"
        )
    try:
        entries = parse_manifest(manifest.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("the release manifest is not text") from None
    if artifact not in entries:
        raise ValueError(f"the signed release does not list {artifact}")
    return entries[artifact]
