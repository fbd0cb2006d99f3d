"""Rotating the work-order signing key: agents learn the new key at their
next check-in, endorsed by the old one, without re-enrolling."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import endorse, key_id, raw_public_key

from agent.link.keys import learn
from agent.orders.workorder import OrderRefused, verify
from agent.statedir import StateDir
from tests.support.controller import ok
from tests.support.orders import sign, work_order


def _signing_key(path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def test_agents_learn_a_rotated_key_and_accept_orders_signed_with_it(controller, tmp_path):
    state = StateDir(tmp_path / "a1")
    assert controller.enroll(state.path, controller.token()).returncode == 0
    old_ids = set(state.trusted_signing_keys())
    assert len(old_ids) == 1

    assert controller.stop() == 0
    out = controller.admin("controller", "rotate-key").stdout
    controller.start()
    new_key = _signing_key(controller.data_dir / "signing.key")
    new_id = key_id(raw_public_key(new_key.public_key()))
    assert f"new key {new_id}" in out
    assert (controller.data_dir / f"signing.key.{old_ids.pop()}").exists()

    order = work_order(state.host_id(), 1)
    with pytest.raises(OrderRefused, match="unknown key"):
        verify(sign(order, new_key), state.trusted_signing_keys(), state.host_id(), 0,
               datetime.now(UTC))  # fmt: skip

    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)
    trusted = state.trusted_signing_keys()
    assert new_id in trusted
    assert len(trusted) == 2
    verified = verify(sign(order, new_key), trusted, state.host_id(), 0, datetime.now(UTC))
    assert verified.order_id == order.order_id

    # Rotating again: an agent that missed a rotation walks the whole chain.
    assert controller.stop() == 0
    controller.admin("controller", "rotate-key")
    controller.start()
    chain = json.loads((controller.data_dir / "signing-keys.json").read_text())
    assert [k["endorsed_by_key_id"] for k in chain][1] == new_id
    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)
    assert len(state.trusted_signing_keys()) == 3


def test_a_forged_endorsement_is_ignored(controller, tmp_path):
    state = StateDir(tmp_path / "a1")
    assert controller.enroll(state.path, controller.token()).returncode == 0
    before = state.trusted_signing_keys()
    attacker = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    forged = endorse(raw_public_key(attacker.public_key()), stranger)  # unknown endorser
    assert learn(state, [forged]) == []
    tampered = endorse(
        raw_public_key(attacker.public_key()),
        _signing_key(controller.data_dir / "signing.key"),
    )
    tampered.public_key = raw_public_key(Ed25519PrivateKey.generate().public_key())
    assert learn(state, [tampered]) == []
    assert state.trusted_signing_keys() == before
