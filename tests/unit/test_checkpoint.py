"""Signed checkpoints of the audit trail: signing, checking, the file."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import WORK_ORDER_TYPE, EnvelopeError, open_envelope, raw_public_key

from controller.checkpoint import Checkpoint, CheckpointError, Checkpoints, held, parse
from controller.errors import UsageError

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
DIGEST = "ab" * 32


@pytest.fixture
def signer() -> Checkpoints:
    return Checkpoints(Ed25519PrivateKey.generate(), {})


def test_a_signed_checkpoint_round_trips_through_its_file_and_checks(signer):
    signed = signer.sign(42, DIGEST, T0)
    again = parse(signed.to_json())
    assert again == signed
    signer.check(again)
    assert parse(signed.to_json(indent=None)) == signed  # the one-line form, as logged


def test_the_time_may_be_written_in_another_zone(signer):
    doc = json.loads(signer.sign(1, DIGEST, T0).to_json())
    doc["at"] = T0.astimezone(timezone(timedelta(hours=2))).isoformat()
    signer.check(parse(json.dumps(doc)))  # the same instant: the same statement


@pytest.mark.parametrize(
    ("field", "value"), [("seq", 41), ("hash", "cd" * 32), ("at", "2026-11-27T12:00:01+00:00")]
)
def test_any_change_to_the_statement_breaks_the_signature(signer, field, value):
    doc = json.loads(signer.sign(42, DIGEST, T0).to_json())
    doc[field] = value
    with pytest.raises(CheckpointError, match="does not match"):
        signer.check(parse(json.dumps(doc)))


def test_a_checkpoint_of_another_key_is_refused_naming_it(signer):
    other = Checkpoints(Ed25519PrivateKey.generate(), {})
    signed = other.sign(1, DIGEST, T0)
    with pytest.raises(CheckpointError, match=f"{signed.key_id}.*not one of this controller"):
        signer.check(signed)


def test_a_retired_key_is_still_trusted():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    earlier = Checkpoints(old, {}).sign(3, DIGEST, T0)
    now = Checkpoints(new, {earlier.key_id: raw_public_key(old.public_key())})
    now.check(earlier)
    assert now.sign(4, DIGEST, T0).key_id != earlier.key_id


def test_an_unsigned_checkpoint_is_refused(signer):
    with pytest.raises(CheckpointError, match="not signed"):
        signer.check(Checkpoint(1, DIGEST, T0, signer.key_id))


def test_a_checkpoint_signature_never_opens_as_a_work_order(signer):
    """Same key, other domain: a checkpoint cannot be replayed as an order."""
    from fleetpatch.v1 import types_pb2

    signed = signer.sign(1, DIGEST, T0)
    envelope = types_pb2.SignedEnvelope(
        payload=signed.statement(), payload_type=WORK_ORDER_TYPE, key_id=signed.key_id,
        signature=signed.signature,
    )  # fmt: skip
    trusted = {signed.key_id: raw_public_key(signer._key.public_key())}
    with pytest.raises(EnvelopeError, match="does not match"):
        open_envelope(envelope, WORK_ORDER_TYPE, trusted)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not a checkpoint"),
        ('{"kind": "x"}', "not a checkpoint"),
        ('{"kind": "fleetpatch audit checkpoint", "seq": 1}', "lacks at, hash, key_id, signature"),
    ],
)
def test_a_malformed_file_says_what_is_wrong(text, message):
    with pytest.raises(CheckpointError, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seq", -1, "whole number"),
        ("seq", True, "whole number"),
        ("hash", 5, "must be strings"),
        ("at", "yesterday", "not an ISO time"),
        ("at", "2026-11-27T12:00:00", "no time zone"),
        ("signature", "%%%", "not base64"),
    ],
)
def test_a_bad_field_is_named(signer, field, value, message):
    doc = json.loads(signer.sign(1, DIGEST, T0).to_json())
    doc[field] = value
    with pytest.raises(CheckpointError, match=message):
        parse(json.dumps(doc))


def test_checkpoint_errors_are_usage_errors():
    assert issubclass(CheckpointError, UsageError)  # one line, exit 2 in the CLI


def test_held():
    cp = Checkpoint(5, DIGEST, T0, "k")
    assert held(cp, 5, DIGEST) == ""
    assert held(cp, 9, DIGEST) == ""  # the trail grew since
    assert "ends at record 4" in held(cp, 4, None)
    assert "rewritten" in held(cp, 5, "cd" * 32)
    assert held(Checkpoint(0, "0" * 64, T0, "k"), 0, None) == ""  # an empty trail's


@pytest.mark.parametrize(
    ("seq", "at", "problem"),
    [
        (2**64, "2026-01-01T00:00:00Z", "the checkpoint's seq 18446744073709551616 is out of"),
        (10**30, "2026-01-01T00:00:00+00:00", "is out of range (0 to 18446744073709551615)"),
        (1, "9999-12-31T23:59:59-23:59", "the checkpoint's time 9999-12-31T23:59:59-23:59 is out"),
        (1, "0001-01-01T00:00:00+01:00", "is out of range (years 1970 to 9000)"),
    ],
)  # fmt: skip
def test_a_checkpoint_file_the_message_cannot_hold_is_refused_before_it_is_sent(seq, at, problem):
    """`audit verify --checkpoint` parses the file, then converts it for
    the controller: that conversion refuses what protobuf cannot hold
    (ValueError, OverflowError before) with one line."""
    from controller.api.convert import checkpoint_to_pb

    text = json.dumps(
        {"kind": "fleetpatch audit checkpoint", "seq": seq, "hash": "ab", "at": at,
         "key_id": "k", "signature": ""}
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=re.escape(problem)):
        checkpoint_to_pb(parse(text))
