"""Rotating the work-order signing key: agents learn the new key at their
next check-in, endorsed by the old one, without re-enrolling."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import endorse, key_id, raw_public_key

from agent.link.keys import learn
from agent.orders.workorder import OrderRefused, verify
from agent.statedir import StateDir
from tests.support.controller import Controller, cli, ok
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


# -- letting old keys go: retired after a grace period, or revoked at once ----------------


def _rotated(controller, *flags: str) -> Ed25519PrivateKey:
    """Rotate the key of a stopped controller, start it again; the old key."""
    old = _signing_key(controller.data_dir / "signing.key")
    assert controller.stop() == 0
    controller.admin("controller", "rotate-key", *flags)
    controller.start()
    return old


def _accepts(state: StateDir, key: Ed25519PrivateKey, at: datetime, sequence: int = 1) -> str:
    """verify() as the agent calls it at ``at``: the order id, or why it was refused."""
    keys, withdrawn = state.usable_signing_keys(at)
    order = work_order(state.host_id(), sequence, now=at)
    try:
        return verify(sign(order, key), keys, state.host_id(), 0, at, withdrawn).order_id
    except OrderRefused as exc:
        return f"refused: {exc}"


def test_after_a_rotation_the_old_key_is_trusted_for_the_grace_period_only(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('old_key_grace = "7d"', 'old_key_grace = "1h"'))
    ctl.start()
    try:
        state = StateDir(tmp_path / "a1")
        assert ctl.enroll(state.path, ctl.token()).returncode == 0
        old = _rotated(ctl)
        new = _signing_key(ctl.data_dir / "signing.key")
        ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)

        now = datetime.now(UTC)
        assert not _accepts(state, old, now).startswith("refused")  # in the grace period
        later = now + timedelta(hours=1, minutes=1)
        refused = _accepts(state, old, later)
        assert refused.startswith("refused"), refused
        assert "was retired at" in refused
        assert not _accepts(state, new, later).startswith("refused")
    finally:
        ctl.stop()


def test_a_revoked_key_is_refused_at_once_with_what_it_endorsed(controller, tmp_path):
    state = StateDir(tmp_path / "a1")
    assert controller.enroll(state.path, controller.token()).returncode == 0
    leaked = _signing_key(controller.data_dir / "signing.key")
    leaked_id = key_id(raw_public_key(leaked.public_key()))
    # An impostor holding the leaked key got a key of its own endorsed
    # before the revocation reached this host.
    early = Ed25519PrivateKey.generate()
    assert learn(state, [endorse(raw_public_key(early.public_key()), leaked)]) != []
    assert not _accepts(state, early, datetime.now(UTC)).startswith("refused")

    assert controller.stop() == 0
    out = controller.admin("controller", "rotate-key", "--revoke-old").stdout
    assert f"signing key {leaked_id} revoked" in out
    controller.start()
    new = _signing_key(controller.data_dir / "signing.key")
    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)

    now = datetime.now(UTC)
    refused = _accepts(state, leaked, now)
    assert refused.startswith("refused"), refused
    assert f"signed by key {leaked_id}, which was revoked" in refused
    assert _accepts(state, early, now).startswith("refused")  # what it endorsed goes too
    assert not _accepts(state, new, now).startswith("refused")  # its successor stays

    # Nothing it endorses is learned from now on, and it never comes back,
    # even endorsed by a key that is trusted.
    late = Ed25519PrivateKey.generate()
    assert learn(state, [endorse(raw_public_key(late.public_key()), leaked)]) == []
    learn(state, [endorse(raw_public_key(leaked.public_key()), new)])
    assert _accepts(state, leaked, now).startswith("refused")
    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)
    assert _accepts(state, leaked, now).startswith("refused")

    # The agent's own command line refuses it too, in one line, exit 4.
    order_file = tmp_path / "order.bin"
    order_file.write_bytes(sign(work_order(state.host_id(), 5), leaked).SerializeToString())
    result = cli("fleetpatch-agent", "apply", order_file, "--offline", "--state-dir", state.path)
    assert result.returncode == 4, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("fleetpatch-agent: error: work order refused"), result.stderr
    assert f"signed by key {leaked_id}, which was revoked" in error
    status = cli("fleetpatch-agent", "status", "--state-dir", state.path)
    assert "was revoked" in status.stdout, status.stdout
