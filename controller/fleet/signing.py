"""The campaign signing key: made at `controller init`, pinned by agents at
enrollment, used to sign every work order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import endorse, key_id, raw_public_key
from fleetpatch.v1 import types_pb2

from controller.datadir import DataDir
from controller.errors import DataDirError


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signing_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(pem: bytes, path: Path | str = "the signing key") -> Ed25519PrivateKey:
    """The work-order signing key in ``pem``; DataDirError naming ``path``
    (the file it was read from) when it is damaged or not Ed25519."""
    restore = "restore it from a backup of the data dir"
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # TypeError: one with a password
        raise DataDirError(
            f"{path} is not an unencrypted PEM private key (damaged? {restore})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DataDirError(f"{path} is not an Ed25519 key ({restore})")
    return key


def published_keys(key: Ed25519PrivateKey) -> list[types_pb2.SigningKey]:
    """The public key agents pin at enrollment."""
    public = raw_public_key(key.public_key())
    return [types_pb2.SigningKey(key_id=key_id(public), public_key=public)]


def rotations(data: bytes) -> list[types_pb2.SigningKey]:
    """The endorsement chain from signing-keys.json, oldest first: each key
    signed by the one before, so an agent that pinned any earlier key can
    walk to the current one."""
    try:
        doc = json.loads(data)
        return [
            types_pb2.SigningKey(
                key_id=k["key_id"],
                public_key=bytes.fromhex(k["public_key"]),
                endorsed_by_key_id=k["endorsed_by_key_id"],
                endorsement=bytes.fromhex(k["endorsement"]),
            )
            for k in doc
        ]
    except (ValueError, KeyError, TypeError):
        raise DataDirError("signing-keys.json is damaged") from None


def rotation_chain(data_dir: DataDir) -> list[types_pb2.SigningKey]:
    """The endorsement chain of this data dir; empty before any rotation."""
    if not data_dir.signing_rotations.exists():
        return []
    return rotations(data_dir.read(data_dir.signing_rotations))


def rotations_to_json(chain: list[types_pb2.SigningKey]) -> bytes:
    doc = [
        {
            "key_id": k.key_id,
            "public_key": k.public_key.hex(),
            "endorsed_by_key_id": k.endorsed_by_key_id,
            "endorsement": k.endorsement.hex(),
        }
        for k in chain
    ]
    return json.dumps(doc, indent=2).encode() + b"\n"


@dataclass
class KeyStatus:
    """signing-keys-status.json: when each key was first used to sign (by
    `serve`), and which keys were revoked (`rotate-key --revoke-old`)."""

    in_use_since: dict[str, datetime] = field(default_factory=dict)
    revoked: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: DataDir) -> KeyStatus:
        path = data_dir.signing_status
        if not path.exists():
            return cls()
        try:
            doc = json.loads(data_dir.read(path))
            return cls(
                {k: datetime.fromisoformat(v) for k, v in doc["in_use_since"].items()},
                {k: datetime.fromisoformat(v) for k, v in doc["revoked"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DataDirError(f"{path} is damaged") from None

    def save(self, data_dir: DataDir) -> None:
        doc = {
            "in_use_since": {k: v.isoformat() for k, v in sorted(self.in_use_since.items())},
            "revoked": {k: v.isoformat() for k, v in sorted(self.revoked.items())},
        }
        data_dir.write_public(data_dir.signing_status, json.dumps(doc, indent=2).encode() + b"\n")


def rotate(data_dir: DataDir, now: datetime, revoke_old: bool = False) -> tuple[str, str]:
    """Make a new signing key endorsed by the current one; the current one
    is retired to signing.key.ID (and, with ``revoke_old``, revoked: agents
    refuse it, and every key it endorsed but this one, from their next
    check-in). Returns (old id, new id). The controller signs with the new
    key from its next start; agents learn it at their next check-in."""
    data_dir.require_initialised()
    old = load_signing_key(data_dir.read(data_dir.signing_key), data_dir.signing_key)
    old_id = key_id(raw_public_key(old.public_key()))
    chain = rotation_chain(data_dir)
    status = KeyStatus.load(data_dir)
    new = new_signing_key()
    announced = endorse(raw_public_key(new.public_key()), old)
    data_dir.write_private(data_dir.path / f"signing.key.{old_id}", signing_key_to_pem(old))
    data_dir.write_public(data_dir.signing_rotations, rotations_to_json([*chain, announced]))
    if revoke_old:
        status.revoked[old_id] = now
        status.save(data_dir)
    data_dir.write_private(data_dir.signing_key, signing_key_to_pem(new))
    return old_id, announced.key_id


def mark_in_use(data_dir: DataDir, current_id: str, now: datetime) -> None:
    """Record the first time `serve` signs with the current key: the old
    keys' grace period runs from then."""
    status = KeyStatus.load(data_dir)
    if current_id not in status.in_use_since:
        status.in_use_since[current_id] = now
        status.save(data_dir)


def withdrawn(
    chain: list[types_pb2.SigningKey], status: KeyStatus, grace: timedelta
) -> list[types_pb2.WithdrawnKey]:
    """What agents are told of the keys before the current one: each
    revoked one at once; each other one retired ``grace`` after its
    successor was first used (not yet announced while it has not been)."""
    found = []
    for successor in chain:
        new_id, old_id = successor.key_id, successor.endorsed_by_key_id
        if old_id in status.revoked:
            found.append(
                types_pb2.WithdrawnKey(key_id=old_id, revoked=True, successor_key_id=new_id)
            )
        elif new_id in status.in_use_since:
            out = types_pb2.WithdrawnKey(key_id=old_id, successor_key_id=new_id)
            out.retire_at.FromDatetime(status.in_use_since[new_id] + grace)
            found.append(out)
    return found


@dataclass(frozen=True)
class SigningKeys:
    """What `serve` needs of the signing keys."""

    key: Ed25519PrivateKey  # signs work orders and audit checkpoints
    published: list[types_pb2.SigningKey]  # the current key, pinned at enrollment
    chain: list[types_pb2.SigningKey]  # rotations, oldest first
    # Every key this controller has signed with, by id: the current one, the
    # rotated-in ones and the retired ones (signing.key.ID), as raw public
    # keys; never a revoked one (a leaked key could sign anything).
    trusted: dict[str, bytes]
    status: KeyStatus = field(default_factory=KeyStatus)

    @property
    def current_id(self) -> str:
        return self.published[0].key_id

    @property
    def known_ids(self) -> set[str]:
        """Every key this data dir has held, revoked ones included."""
        chain = {k.key_id for k in self.chain} | {k.endorsed_by_key_id for k in self.chain}
        return (chain - {""}) | set(self.trusted) | set(self.status.revoked) | {self.current_id}

    def withdrawn(self, grace: timedelta) -> list[types_pb2.WithdrawnKey]:
        return withdrawn(self.chain, self.status, grace)


def load_signing_keys(data_dir: DataDir) -> SigningKeys:
    """Raises DataDirError for a damaged key, rotation or status file."""
    key = load_signing_key(data_dir.read(data_dir.signing_key), data_dir.signing_key)
    chain = rotation_chain(data_dir)
    status = KeyStatus.load(data_dir)
    trusted = {k.key_id: bytes(k.public_key) for k in chain}
    for retired in sorted(data_dir.path.glob(f"{data_dir.signing_key.name}.*")):
        public = raw_public_key(load_signing_key(data_dir.read(retired), retired).public_key())
        trusted[key_id(public)] = public
    published = published_keys(key)
    trusted.update({k.key_id: bytes(k.public_key) for k in published})
    for revoked in status.revoked:
        trusted.pop(revoked, None)
    return SigningKeys(key, published, chain, trusted, status)
