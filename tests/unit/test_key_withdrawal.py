"""agent.link.keys: withdrawals only ever take trust away, and never the
last key an agent can verify orders with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import endorse, key_id, raw_public_key
from fleetpatch.v1 import types_pb2

from agent.link.keys import learn
from agent.statedir import StateDir

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _id(key: Ed25519PrivateKey) -> str:
    return key_id(raw_public_key(key.public_key()))


def _state(tmp_path, key: Ed25519PrivateKey) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.create()
    state.write_trusted_signing_keys({_id(key): raw_public_key(key.public_key())})
    return state


def _retired(key: Ed25519PrivateKey, successor: str, at: datetime) -> types_pb2.WithdrawnKey:
    withdrawal = types_pb2.WithdrawnKey(key_id=_id(key), successor_key_id=successor)
    withdrawal.retire_at.FromDatetime(at)
    return withdrawal


def test_a_key_is_retired_only_once_the_agent_holds_the_current_one(tmp_path):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    state = _state(tmp_path, old)
    retire = _retired(old, _id(new), NOW)
    # The successor is not known here (its endorsement never arrived): keep the old key.
    learn(state, [], [retire], _id(new), NOW)
    assert _id(old) in state.usable_signing_keys(NOW + timedelta(days=1))[0]
    # With the successor learned, the old key goes at the instant named.
    learn(state, [endorse(raw_public_key(new.public_key()), old)], [retire], _id(new), NOW)
    assert _id(old) in state.usable_signing_keys(NOW - timedelta(seconds=1))[0]
    keys, withdrawn = state.usable_signing_keys(NOW)
    assert list(keys) == [_id(new)]
    assert withdrawn[_id(old)].startswith("was retired at")


def test_the_key_orders_are_signed_with_is_never_withdrawn(tmp_path):
    key = Ed25519PrivateKey.generate()
    state = _state(tmp_path, key)
    revoke = types_pb2.WithdrawnKey(key_id=_id(key), revoked=True)
    learn(state, [], [revoke, _retired(key, "", NOW)], _id(key), NOW)
    assert list(state.usable_signing_keys(NOW + timedelta(days=1))[0]) == [_id(key)]


def test_a_retirement_at_no_valid_time_is_ignored_not_a_crash(tmp_path):
    """A controller's retire_at outside protobuf's 0001-9999 made the
    check-in loop, and the daemon, die on ToDatetime."""
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    state = _state(tmp_path, old)
    announced = [endorse(raw_public_key(new.public_key()), old)]
    for seconds in (10**12, -(10**12)):
        withdrawal = types_pb2.WithdrawnKey(key_id=_id(old), successor_key_id=_id(new))
        withdrawal.retire_at.seconds = seconds
        assert learn(state, announced, [withdrawal], _id(new), NOW) in ([_id(new)], [])
        assert set(state.usable_signing_keys(NOW + timedelta(days=3650))[0]) == {
            _id(old), _id(new),
        }  # fmt: skip
