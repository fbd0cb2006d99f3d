"""fleetpatch.envelope: signed work orders and signing-key rotation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import (
    WORK_ORDER_TYPE,
    EnvelopeError,
    accept_endorsed,
    endorse,
    key_id,
    open_envelope,
    raw_public_key,
    seal,
)
from fleetpatch.v1 import types_pb2

PAYLOAD = b"\x08\x01work order bytes"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _trust(*keys: Ed25519PrivateKey) -> dict[str, bytes]:
    return {key_id(raw_public_key(k.public_key())): raw_public_key(k.public_key()) for k in keys}


def test_key_id_is_16_hex_digits_derived_from_the_key(key):
    raw = raw_public_key(key.public_key())
    assert len(raw) == 32
    kid = key_id(raw)
    assert len(kid) == 16
    int(kid, 16)
    assert kid == key_id(raw)
    assert kid != key_id(raw_public_key(Ed25519PrivateKey.generate().public_key()))


def test_seal_then_open(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    assert envelope.payload == PAYLOAD
    assert envelope.payload_type == WORK_ORDER_TYPE
    assert envelope.key_id == key_id(raw_public_key(key.public_key()))
    assert open_envelope(envelope, WORK_ORDER_TYPE, _trust(key)) == PAYLOAD


def test_open_among_several_trusted_keys(key):
    other = Ed25519PrivateKey.generate()
    assert open_envelope(seal(b"x", WORK_ORDER_TYPE, key), WORK_ORDER_TYPE, _trust(other, key))


def test_survives_the_wire(key):
    wire = seal(PAYLOAD, WORK_ORDER_TYPE, key).SerializeToString()
    received = types_pb2.SignedEnvelope.FromString(wire)
    assert open_envelope(received, WORK_ORDER_TYPE, _trust(key)) == PAYLOAD


def test_empty_payload_is_still_signed(key):
    assert open_envelope(seal(b"", WORK_ORDER_TYPE, key), WORK_ORDER_TYPE, _trust(key)) == b""


def test_tampered_payload(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    envelope.payload = PAYLOAD[:-1] + b"X"
    with pytest.raises(EnvelopeError, match=r"signature by key '[0-9a-f]{16}' does not match"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_appended_payload(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    envelope.payload = PAYLOAD + b"\x00"
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


@pytest.mark.parametrize("where", [0, 31, 63])
def test_tampered_signature(key, where):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    signature = bytearray(envelope.signature)
    signature[where] ^= 0x01
    envelope.signature = bytes(signature)
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_truncated_signature(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    envelope.signature = envelope.signature[:-1]
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_missing_signature(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    envelope.signature = b""
    with pytest.raises(EnvelopeError, match="the envelope is not signed"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_unknown_key_id(key):
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(EnvelopeError, match=f"signed by unknown key '{envelope.key_id}'"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(other))


def test_no_trusted_keys_at_all(key):
    with pytest.raises(EnvelopeError, match="unknown key"):
        open_envelope(seal(PAYLOAD, WORK_ORDER_TYPE, key), WORK_ORDER_TYPE, {})


def test_signed_by_one_key_claiming_another(key):
    """An attacker with their own key cannot borrow a trusted key's id."""
    trusted = Ed25519PrivateKey.generate()
    envelope = seal(PAYLOAD, WORK_ORDER_TYPE, key)
    envelope.key_id = key_id(raw_public_key(trusted.public_key()))
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(trusted))


def test_wrong_payload_type(key):
    envelope = seal(PAYLOAD, "fleetpatch.v1.Other", key)
    with pytest.raises(
        EnvelopeError,
        match=f"holds 'fleetpatch.v1.Other', not '{WORK_ORDER_TYPE}'",
    ):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_untyped_payload(key):
    envelope = seal(PAYLOAD, "", key)
    with pytest.raises(EnvelopeError, match="untyped payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_relabelled_payload_type_breaks_the_signature(key):
    """The type is signed: a signature for one kind of message is never valid for another."""
    envelope = seal(PAYLOAD, "fleetpatch.v1.Other", key)
    envelope.payload_type = WORK_ORDER_TYPE
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


def test_moving_bytes_from_payload_into_type_breaks_the_signature(key):
    """A message of a shorter type cannot be re-read as a longer one."""
    envelope = seal(b"Order\nrest", "fleetpatch.v1.Work", key)
    envelope.payload_type = WORK_ORDER_TYPE
    envelope.payload = b"rest"
    with pytest.raises(EnvelopeError, match="does not match the payload"):
        open_envelope(envelope, WORK_ORDER_TYPE, _trust(key))


# -- key rotation ----------------------------------------------------------------


def test_endorse_then_accept(key):
    new = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(new, by=key)
    assert announced.key_id == key_id(new)
    assert announced.endorsed_by_key_id == key_id(raw_public_key(key.public_key()))
    assert accept_endorsed(announced, _trust(key)) == new


def test_accepted_key_then_opens_envelopes(key):
    new_private = Ed25519PrivateKey.generate()
    new = accept_endorsed(endorse(raw_public_key(new_private.public_key()), by=key), _trust(key))
    trusted = {**_trust(key), key_id(new): new}
    assert open_envelope(seal(b"x", WORK_ORDER_TYPE, new_private), WORK_ORDER_TYPE, trusted)


def test_forged_endorsement(key):
    """Someone else signs, claiming to be the trusted endorser."""
    forger = Ed25519PrivateKey.generate()
    new = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(new, by=forger)
    announced.endorsed_by_key_id = key_id(raw_public_key(key.public_key()))
    with pytest.raises(EnvelopeError, match=f"the endorsement of key '{key_id(new)}' is forged"):
        accept_endorsed(announced, _trust(key))


def test_endorsement_for_another_key_cannot_be_reused(key):
    first = raw_public_key(Ed25519PrivateKey.generate().public_key())
    second = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(first, by=key)
    announced.public_key = second
    announced.key_id = key_id(second)
    with pytest.raises(EnvelopeError, match="is forged"):
        accept_endorsed(announced, _trust(key))


def test_unknown_endorser(key):
    stranger = Ed25519PrivateKey.generate()
    new = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(new, by=stranger)
    with pytest.raises(
        EnvelopeError,
        match=f"key '{key_id(new)}' is endorsed by unknown key '{announced.endorsed_by_key_id}'",
    ):
        accept_endorsed(announced, _trust(key))


def test_key_id_not_matching_key(key):
    new = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(new, by=key)
    announced.key_id = "0" * 16
    with pytest.raises(EnvelopeError, match=r"announced key '0{16}' does not match its id"):
        accept_endorsed(announced, _trust(key))


def test_swapped_public_key_does_not_match_id(key):
    announced = endorse(raw_public_key(Ed25519PrivateKey.generate().public_key()), by=key)
    announced.public_key = raw_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(EnvelopeError, match="does not match its id"):
        accept_endorsed(announced, _trust(key))


@pytest.mark.parametrize("length", [0, 31, 33])
def test_public_key_of_wrong_length(key, length):
    raw = bytes(range(length))
    announced = endorse(raw, by=key)  # the id does match these bytes
    with pytest.raises(EnvelopeError, match="does not match its id"):
        accept_endorsed(announced, _trust(key))


def test_envelope_signature_is_not_an_endorsement(key):
    """The two signatures use different domains, so one cannot stand for the other."""
    new = raw_public_key(Ed25519PrivateKey.generate().public_key())
    announced = endorse(new, by=key)
    announced.endorsement = seal(
        announced.key_id.encode() + b"\n" + new, "fleetpatch-key-endorsement-v1", key
    ).signature
    with pytest.raises(EnvelopeError, match="is forged"):
        accept_endorsed(announced, _trust(key))
