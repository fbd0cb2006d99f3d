"""controller.workorders: the order a campaign hands one host, field by
field, for patch and agent-update campaigns."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.agentrelease import Family
from fleetpatch.envelope import WORK_ORDER_TYPE, key_id, open_envelope, raw_public_key
from fleetpatch.v1 import types_pb2

from controller.api import times
from controller.campaigns import parse_campaign
from controller.model import AgentRelease
from controller.rollout import workorders

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLOSES = NOW + timedelta(hours=2)
DATA = b"agent package"
MANIFEST = f"{hashlib.sha256(DATA).hexdigest()}  fleetpatch-agent_0.2.0_amd64.deb\n".encode()

COMMON = """
[verify]
timeout = "2m"

[[verify.checks]]
name = "ssh"
kind = "tcp"
port = 22

[[rollout.rings]]
ring = 0
"""
PATCH = '[campaign]\nname = "p"\n[patch]\npackages = [{ name = "openssl", min_version = "3" }]\n'
UPDATE = '[campaign]\nname = "u"\n[agent_update]\nversion = "0.2.0"\nrollback_after = "7m"\n'

RELEASE = AgentRelease(
    version="0.2.0",
    artifact="fleetpatch-agent_0.2.0_amd64.deb",
    sha256=hashlib.sha256(DATA).hexdigest(),
    size=len(DATA),
    key_fingerprint="SHA256:" + "ab" * 16,
    published_at=NOW,
    published_by="admin:admin",
    manifest=MANIFEST,
    signature=b"s" * 64,
)


def _update_order(text: str = UPDATE + COMMON, closes: datetime | None = CLOSES):
    spec = parse_campaign(text, "u.toml")
    return workorders.agent_update_order(spec, RELEASE, "c-1", "o-1", "h-1", 4, NOW, closes)


def test_agent_update_order_fields() -> None:
    order = _update_order()
    expected = types_pb2.WorkOrder(
        order_id="o-1",
        host_id="h-1",
        campaign_id="c-1",
        sequence=4,
        issued_at=times.timestamp(NOW),
        expires_at=times.timestamp(CLOSES),
        action=types_pb2.WORK_ORDER_ACTION_AGENT_UPDATE,
        reboot=types_pb2.REBOOT_POLICY_NEVER,
        checks=[types_pb2.HealthCheckSpec(name="ssh", tcp=types_pb2.TcpCheck(host="127.0.0.1",
                                                                            port=22))],
        verify_timeout=times.duration(timedelta(minutes=2)),
        window_closes_at=times.timestamp(CLOSES),
        agent_update=types_pb2.AgentUpdate(
            version="0.2.0",
            artifact="fleetpatch-agent_0.2.0_amd64.deb",
            sha256=hashlib.sha256(DATA).digest(),
            release_signature=b"s" * 64,
            release_manifest=MANIFEST,
            size=len(DATA),
            rollback_after=times.duration(timedelta(minutes=7)),
        ),
    )  # fmt: skip
    assert order == expected
    assert not order.HasField("patch")
    assert order.livepatch == types_pb2.LIVEPATCH_POLICY_UNSPECIFIED


def test_agent_update_order_without_a_window_expires_like_a_patch_order() -> None:
    order = _update_order(closes=None)
    assert not order.HasField("window_closes_at")
    assert times.from_timestamp(order.expires_at) == NOW + workorders.ORDER_TTL
    deadline = NOW + timedelta(minutes=20)
    text = UPDATE.replace('name = "u"', f'name = "u"\ndeadline = "{deadline.isoformat()}"')
    assert times.from_timestamp(_update_order(text + COMMON).expires_at) == deadline
    emergency = _update_order(UPDATE.replace('name = "u"', 'name = "u"\nemergency = true') + COMMON)
    assert not emergency.HasField("window_closes_at")


def test_agent_update_order_is_refused_for_another_release_or_a_patch_campaign() -> None:
    with pytest.raises(ValueError, match=r"does not update the agent to 0\.2\.0"):
        _update_order(UPDATE.replace('"0.2.0"', '"0.3.0"') + COMMON)
    with pytest.raises(ValueError, match="does not update the agent"):
        _update_order(PATCH + COMMON)
    with pytest.raises(ValueError, match="has no \\[patch\\]"):
        workorders.patch_order(
            parse_campaign(UPDATE + COMMON, "u"), "c-1", "o-1", "h-1", 1, NOW, None
        )


def test_an_agent_update_order_carries_only_the_package_of_the_hosts_family() -> None:
    spec = parse_campaign(UPDATE + COMMON, "u.toml")
    rpm = dataclasses.replace(
        RELEASE, artifact="fleetpatch-agent-0.2.0-1.x86_64.rpm", family=Family.RPM
    )
    order = workorders.agent_update_order(spec, rpm, "c-1", "o-1", "h-1", 4, NOW, None, Family.RPM)
    assert order.agent_update.artifact == "fleetpatch-agent-0.2.0-1.x86_64.rpm"
    for release, family in ((rpm, Family.DEB), (RELEASE, Family.RPM), (RELEASE, None)):
        with pytest.raises(ValueError, match="is not for a host that installs"):
            workorders.agent_update_order(spec, release, "c-1", "o-1", "h-1", 4, NOW, None, family)


def test_patch_order_fields_share_the_common_part() -> None:
    spec = parse_campaign(PATCH + COMMON, "p.toml")
    order = workorders.patch_order(spec, "c-1", "o-1", "h-1", 4, NOW, CLOSES)
    update = _update_order()
    common = ("order_id", "host_id", "campaign_id", "sequence", "issued_at", "expires_at",
              "checks", "verify_timeout", "window_closes_at")  # fmt: skip
    for name in common:
        assert getattr(order, name) == getattr(update, name), name
    assert order.action == types_pb2.WORK_ORDER_ACTION_PATCH
    assert list(order.patch.packages) == [types_pb2.PackageTarget(name="openssl", min_version="3")]
    assert order.reboot == types_pb2.REBOOT_POLICY_IF_REQUIRED
    assert order.livepatch == types_pb2.LIVEPATCH_POLICY_NEVER
    assert not order.HasField("agent_update")


def test_a_signed_agent_update_order_opens_with_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    envelope = workorders.sign(_update_order(), key)
    raw = raw_public_key(key.public_key())
    payload = open_envelope(envelope, WORK_ORDER_TYPE, {key_id(raw): raw})
    assert types_pb2.WorkOrder.FromString(payload) == _update_order()
