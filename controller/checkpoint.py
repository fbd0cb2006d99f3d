"""Signed checkpoints of the audit trail: where it ended, when, signed.

`audit.verify` proves the chain is whole, but not that it is the chain
that was written: cutting records off its tail, or editing a record and
recomputing every hash after it, leaves a chain that verifies. A
checkpoint is a statement (last sequence number, its hash, the
controller's time) signed with the controller's work-order signing key
and kept OUTSIDE the database (a file an admin keeps, the controller's
journal). A trail that holds to a checkpoint has at least that many
records and the same hash at that sequence, so nothing up to it was cut or
rewritten.

The signature covers a domain separator and the statement in a canonical
form, so it can never pass for a work order's (fleetpatch.envelope uses
other separators) or the other way round.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fleetpatch.envelope import key_id, raw_public_key

from controller.errors import UsageError

KIND = "fleetpatch audit checkpoint"
_DOMAIN = b"fleetpatch-audit-checkpoint-v1\n"
_FIELDS = {"kind", "seq", "hash", "at", "key_id", "signature"}


class CheckpointError(UsageError):
    """A checkpoint that is malformed, unsigned, or not signed by one of
    this controller's keys; the message says which."""


@dataclass(frozen=True)
class Checkpoint:
    """The trail ended at ``seq`` (0: empty) with ``hash`` at ``at``,
    signed by key ``key_id``."""

    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: bytes = b""

    def statement(self) -> bytes:
        """The bytes the signature covers."""
        doc = {"at": _time(self.at), "hash": self.hash, "key_id": self.key_id, "seq": self.seq}
        return _DOMAIN + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self, indent: int | None = 2) -> str:
        """The checkpoint as a file holds it (one JSON object)."""
        return json.dumps(
            {
                "kind": KIND, "seq": self.seq, "hash": self.hash, "at": _time(self.at),
                "key_id": self.key_id, "signature": base64.b64encode(self.signature).decode(),
            },
            indent=indent,
        )  # fmt: skip


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def parse(text: str) -> Checkpoint:
    """A checkpoint file's contents; raises CheckpointError saying what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise CheckpointError("not a checkpoint: the file is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise CheckpointError(f'not a checkpoint: no "kind": "{KIND}" in the file')
    missing = sorted(_FIELDS - set(doc))
    if missing:
        raise CheckpointError(f"the checkpoint lacks {', '.join(missing)}")
    seq, digest, at, key, signature = (doc[k] for k in ("seq", "hash", "at", "key_id", "signature"))
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CheckpointError("the checkpoint's seq is not a whole number >= 0")
    if not all(isinstance(v, str) for v in (digest, at, key, signature)):
        raise CheckpointError("the checkpoint's hash, at, key_id and signature must be strings")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise CheckpointError(f"the checkpoint's time {at!r} is not an ISO time") from None
    if when.tzinfo is None:
        raise CheckpointError(f"the checkpoint's time {at!r} has no time zone")
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise CheckpointError("the checkpoint's signature is not base64") from None
    return Checkpoint(seq, digest, when, key, raw)


class Checkpoints:
    """Signs checkpoints with the current signing key; checks them against
    every key this controller has signed with (current, rotated, retired)."""

    def __init__(self, key: Ed25519PrivateKey, trusted: Mapping[str, bytes]) -> None:
        self._key = key
        self.key_id = key_id(raw_public_key(key.public_key()))
        self._trusted = {**trusted, self.key_id: raw_public_key(key.public_key())}

    def sign(self, seq: int, digest: str, at: datetime) -> Checkpoint:
        unsigned = Checkpoint(seq, digest, at.astimezone(UTC), self.key_id)
        return Checkpoint(
            unsigned.seq, unsigned.hash, unsigned.at, unsigned.key_id,
            self._key.sign(unsigned.statement()),
        )  # fmt: skip

    def check(self, checkpoint: Checkpoint) -> None:
        """Raise CheckpointError unless one of our keys signed it."""
        if not checkpoint.signature:
            raise CheckpointError("the checkpoint is not signed")
        public = self._trusted.get(checkpoint.key_id)
        if public is None:
            raise CheckpointError(
                f"the checkpoint is signed by key {checkpoint.key_id!r}, which is not one of "
                "this controller's signing keys (a checkpoint of another controller?)"
            )
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                checkpoint.signature, checkpoint.statement()
            )
        except InvalidSignature:
            raise CheckpointError(
                f"the checkpoint's signature by key {checkpoint.key_id!r} does not match its "
                "statement (the file was altered)"
            ) from None


def held(checkpoint: Checkpoint, records: int, hash_at_seq: str | None) -> str:
    """Why an intact chain of ``records`` records, with ``hash_at_seq`` at
    the checkpoint's sequence, does not hold to the checkpoint; "" if it does."""
    signed = f"the checkpoint signed {checkpoint.at:%Y-%m-%d %H:%M:%S}Z"
    if records < checkpoint.seq:
        return (
            f"the trail ends at record {records}, but {signed} vouches for {checkpoint.seq} "
            "(records were cut off its tail)"
        )
    if checkpoint.seq and hash_at_seq != checkpoint.hash:
        return (
            f"record {checkpoint.seq} is not the one {signed} vouches for (its hash differs: "
            "the trail was rewritten up to it)"
        )
    return ""
