"""The campaign signing key: made at `controller init`, pinned by agents at
enrollment, used to sign every work order."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import key_id, raw_public_key
from fleetpatch.v1 import types_pb2

from .errors import DataDirError


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signing_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        raise DataDirError("the signing key is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DataDirError("the signing key is not an Ed25519 key")
    return key


def published_keys(key: Ed25519PrivateKey) -> list[types_pb2.SigningKey]:
    """The public keys agents should trust, as sent at enrollment."""
    public = raw_public_key(key.public_key())
    return [types_pb2.SigningKey(key_id=key_id(public), public_key=public)]
