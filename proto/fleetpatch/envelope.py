"""Signed envelopes: how work orders are signed and checked.

The signature covers a domain separator, the payload type and the exact
payload bytes, so a signature made for one kind of message can never be
replayed as another, and the receiver verifies before it parses anything.
Keys are Ed25519; a key id is the first 16 hex digits of the SHA-256 of the
raw public key, so both ends derive it and nobody can choose it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fleetpatch.v1 import types_pb2

WORK_ORDER_TYPE = "fleetpatch.v1.WorkOrder"
_ENVELOPE_DOMAIN = b"fleetpatch-envelope-v1\n"
_ENDORSEMENT_DOMAIN = b"fleetpatch-key-endorsement-v1\n"


class EnvelopeError(Exception):
    """An envelope that must not be trusted; the message says why."""


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: bytes) -> str:
    """The id of a raw Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _signed_bytes(payload_type: str, payload: bytes) -> bytes:
    return _ENVELOPE_DOMAIN + payload_type.encode() + b"\n" + payload


def seal(payload: bytes, payload_type: str, key: Ed25519PrivateKey) -> types_pb2.SignedEnvelope:
    """Sign ``payload`` and wrap it in an envelope."""
    return types_pb2.SignedEnvelope(
        payload=payload,
        payload_type=payload_type,
        key_id=key_id(raw_public_key(key.public_key())),
        signature=key.sign(_signed_bytes(payload_type, payload)),
    )


def open_envelope(
    envelope: types_pb2.SignedEnvelope,
    payload_type: str,
    trusted: Mapping[str, bytes],
) -> bytes:
    """Return the payload of an envelope signed by one of the ``trusted`` keys.

    ``trusted`` maps key id to raw public key. Raises EnvelopeError naming
    the reason: missing signature, unknown key, wrong payload type, or a
    signature that does not match.
    """
    if not envelope.signature:
        raise EnvelopeError("the envelope is not signed")
    if envelope.payload_type != payload_type:
        raise EnvelopeError(
            f"the envelope holds {envelope.payload_type or 'an untyped payload'!r}, "
            f"not {payload_type!r}"
        )
    public = trusted.get(envelope.key_id)
    if public is None:
        raise EnvelopeError(f"the envelope is signed by unknown key {envelope.key_id!r}")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            envelope.signature, _signed_bytes(payload_type, envelope.payload)
        )
    except InvalidSignature:
        raise EnvelopeError(
            f"the signature by key {envelope.key_id!r} does not match the payload"
        ) from None
    return envelope.payload


def endorse(new_public_key: bytes, by: Ed25519PrivateKey) -> types_pb2.SigningKey:
    """Announce a new signing key, endorsed by a key agents already trust."""
    new_id = key_id(new_public_key)
    return types_pb2.SigningKey(
        key_id=new_id,
        public_key=new_public_key,
        endorsed_by_key_id=key_id(raw_public_key(by.public_key())),
        endorsement=by.sign(_ENDORSEMENT_DOMAIN + new_id.encode() + b"\n" + new_public_key),
    )


def accept_endorsed(announced: types_pb2.SigningKey, trusted: Mapping[str, bytes]) -> bytes:
    """Check a rotation announcement against the ``trusted`` keys.

    Returns the new raw public key. Raises EnvelopeError when the key id does
    not match the key, the endorser is unknown, or the endorsement is forged.
    """
    if len(announced.public_key) != 32 or key_id(announced.public_key) != announced.key_id:
        raise EnvelopeError(f"announced key {announced.key_id!r} does not match its id")
    endorser = trusted.get(announced.endorsed_by_key_id)
    if endorser is None:
        raise EnvelopeError(
            f"key {announced.key_id!r} is endorsed by unknown key {announced.endorsed_by_key_id!r}"
        )
    message = _ENDORSEMENT_DOMAIN + announced.key_id.encode() + b"\n" + announced.public_key
    try:
        Ed25519PublicKey.from_public_bytes(endorser).verify(announced.endorsement, message)
    except InvalidSignature:
        raise EnvelopeError(f"the endorsement of key {announced.key_id!r} is forged") from None
    return bytes(announced.public_key)
