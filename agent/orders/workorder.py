"""Work orders: check that an order is authentic and meant for us before
anything else looks at it, and turn it into plain data.

Refusal reasons are stable strings: they are journaled, reported to the
controller and audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from fleetpatch.agentrelease import family_of
from fleetpatch.debversion import debian_version
from fleetpatch.orderspec import LivepatchPolicy, RebootPolicy, RestartPolicy
from fleetpatch.v1 import types_pb2
from google.protobuf.message import DecodeError

from agent.host.checks import CheckSpec, check_from_pb


class RefusalReason(StrEnum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KEY = "unknown-key"
    MALFORMED = "malformed"
    EXPIRED = "expired"
    WRONG_HOST = "wrong-host"
    REPLAY = "replay"
    POLICY = "policy"


class OrderRefused(Exception):
    """An order that must not run. Nothing has changed on the host."""

    def __init__(self, reason: RefusalReason, message: str, order_id: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.order_id = order_id


class Action(StrEnum):
    PATCH = "patch"
    REVERT = "revert"
    AGENT_UPDATE = "agent-update"


Reboot = RebootPolicy  # the agent's names for them (fleetpatch.orderspec)
Livepatch = LivepatchPolicy
Restart = RestartPolicy


_ACTIONS = {
    types_pb2.WORK_ORDER_ACTION_PATCH: Action.PATCH,
    types_pb2.WORK_ORDER_ACTION_REVERT: Action.REVERT,
    types_pb2.WORK_ORDER_ACTION_AGENT_UPDATE: Action.AGENT_UPDATE,
}
_REBOOT = {
    types_pb2.REBOOT_POLICY_UNSPECIFIED: Reboot.IF_REQUIRED,
    types_pb2.REBOOT_POLICY_NEVER: Reboot.NEVER,
    types_pb2.REBOOT_POLICY_IF_REQUIRED: Reboot.IF_REQUIRED,
    types_pb2.REBOOT_POLICY_ALWAYS: Reboot.ALWAYS,
}
_LIVEPATCH = {
    types_pb2.LIVEPATCH_POLICY_UNSPECIFIED: Livepatch.NEVER,
    types_pb2.LIVEPATCH_POLICY_NEVER: Livepatch.NEVER,
    types_pb2.LIVEPATCH_POLICY_PREFER: Livepatch.PREFER,
    types_pb2.LIVEPATCH_POLICY_ONLY: Livepatch.ONLY,
}
_RESTART = {
    types_pb2.RESTART_POLICY_UNSPECIFIED: Restart.AUTO,
    types_pb2.RESTART_POLICY_AUTO: Restart.AUTO,
    types_pb2.RESTART_POLICY_REPORT: Restart.REPORT,
    types_pb2.RESTART_POLICY_NEVER: Restart.NEVER,
}
DEFAULT_VERIFY_TIMEOUT = timedelta(minutes=5)
DEFAULT_ROLLBACK_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Target:
    name: str
    min_version: str = ""


@dataclass(frozen=True)
class AgentUpdate:
    """The agent package an agent-update order hands over: checked against
    the release key pinned on this host (`selfupdate`) before it is used."""

    version: str  # PEP 440
    artifact: str  # the package's file name in the release: a .deb or an .rpm
    sha256: bytes
    release_signature: bytes
    release_manifest: bytes
    size: int
    rollback_after: timedelta = DEFAULT_ROLLBACK_AFTER


@dataclass(frozen=True)
class WorkOrder:
    order_id: str
    host_id: str
    campaign_id: str
    sequence: int
    issued_at: datetime
    expires_at: datetime
    action: Action
    targets: tuple[Target, ...] = ()
    all_security_updates: bool = False
    exclude: tuple[str, ...] = ()
    reboot: Reboot = Reboot.IF_REQUIRED
    livepatch: Livepatch = Livepatch.NEVER
    restart_services: Restart = Restart.AUTO
    checks: tuple[CheckSpec, ...] = field(default_factory=tuple)
    verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT
    window_closes_at: datetime | None = None
    revert_order_id: str = ""
    agent_update: AgentUpdate | None = None  # set for Action.AGENT_UPDATE, only then


def _time(ts: object) -> datetime:
    assert hasattr(ts, "ToDatetime")  # noqa: S101 - a protobuf Timestamp
    value: datetime = ts.ToDatetime(tzinfo=UTC)
    return value


def verify(
    envelope: types_pb2.SignedEnvelope,
    trusted_keys: Mapping[str, bytes],
    host_id: str,
    highest_sequence: int,
    now: datetime,
    withdrawn: Mapping[str, str] | None = None,
) -> WorkOrder:
    """Return the order in ``envelope`` if it may run here, now.

    Raises OrderRefused when it is unsigned, signed by an unknown key or
    one withdrawn (``withdrawn``: key id -> why: revoked, retired), tampered
    with, malformed, expired, addressed to another host, or not newer than
    every order this host already accepted (replay, rollback).
    """
    # Here, not at module level: the daemon loads cryptography (about 10 MiB
    # it would keep) only once an order comes.
    from fleetpatch.envelope import WORK_ORDER_TYPE, EnvelopeError, open_envelope

    why = (withdrawn or {}).get(envelope.key_id)
    if why is not None and envelope.key_id not in trusted_keys:
        raise OrderRefused(
            RefusalReason.UNKNOWN_KEY,
            f"work order refused: signed by key {envelope.key_id}, which {why}",
        )
    try:
        payload = open_envelope(envelope, WORK_ORDER_TYPE, trusted_keys)
    except EnvelopeError as exc:
        text = str(exc)
        if not envelope.signature:
            reason = RefusalReason.UNSIGNED
        elif envelope.key_id not in trusted_keys:
            reason = RefusalReason.UNKNOWN_KEY
        elif "holds" in text:
            reason = RefusalReason.MALFORMED
        else:
            reason = RefusalReason.BAD_SIGNATURE
        raise OrderRefused(reason, f"work order refused: {text}") from None
    pb = types_pb2.WorkOrder()
    try:
        pb.ParseFromString(payload)
    except DecodeError:
        raise OrderRefused(
            RefusalReason.MALFORMED, "work order refused: payload does not parse"
        ) from None
    order = from_pb(pb)
    if order.host_id != host_id:
        raise OrderRefused(
            RefusalReason.WRONG_HOST,
            f"work order {order.order_id} is addressed to "
            f"{order.host_id or 'nobody'}, not {host_id}",
            order.order_id,
        )
    if now >= order.expires_at:
        raise OrderRefused(
            RefusalReason.EXPIRED,
            f"work order {order.order_id} expired at {order.expires_at:%Y-%m-%d %H:%M:%SZ}",
            order.order_id,
        )
    if order.sequence <= highest_sequence:
        raise OrderRefused(
            RefusalReason.REPLAY,
            f"work order {order.order_id} has sequence {order.sequence}, not above "
            f"{highest_sequence} already accepted (replayed or rolled back)",
            order.order_id,
        )
    return order


def from_pb(pb: types_pb2.WorkOrder) -> WorkOrder:
    """Plain data from a parsed payload; raises OrderRefused(MALFORMED)."""
    if not pb.order_id or pb.action not in _ACTIONS or not pb.HasField("expires_at"):
        raise OrderRefused(
            RefusalReason.MALFORMED,
            "work order refused: it lacks an id, a known action or an expiry",
            pb.order_id,
        )
    try:
        checks = tuple(check_from_pb(c) for c in pb.checks)
    except ValueError as exc:
        raise OrderRefused(
            RefusalReason.MALFORMED, f"work order refused: {exc}", pb.order_id
        ) from None
    agent_update = None
    if _ACTIONS[pb.action] is Action.AGENT_UPDATE:
        agent_update = _agent_update(pb)
    return WorkOrder(
        order_id=pb.order_id,
        host_id=pb.host_id,
        campaign_id=pb.campaign_id,
        sequence=pb.sequence,
        issued_at=_time(pb.issued_at),
        expires_at=_time(pb.expires_at),
        action=_ACTIONS[pb.action],
        targets=tuple(Target(t.name, t.min_version) for t in pb.patch.packages),
        all_security_updates=pb.patch.all_security_updates,
        exclude=tuple(pb.patch.exclude),
        reboot=_REBOOT.get(pb.reboot, Reboot.IF_REQUIRED),
        livepatch=_LIVEPATCH.get(pb.livepatch, Livepatch.NEVER),
        # An unknown value (a newer controller) restricts: report, never restart.
        restart_services=_RESTART.get(pb.restart_services, Restart.REPORT),
        checks=checks,
        verify_timeout=(
            pb.verify_timeout.ToTimedelta()
            if pb.HasField("verify_timeout")
            else DEFAULT_VERIFY_TIMEOUT
        ),
        window_closes_at=_time(pb.window_closes_at) if pb.HasField("window_closes_at") else None,
        revert_order_id=pb.revert_order_id,
        agent_update=agent_update,
    )


def _agent_update(pb: types_pb2.WorkOrder) -> AgentUpdate:
    def malformed(why: str) -> OrderRefused:
        return OrderRefused(
            RefusalReason.MALFORMED, f"work order refused: its agent update {why}", pb.order_id
        )

    update = pb.agent_update
    try:
        debian_version(update.version)
    except ValueError as exc:
        raise malformed(f"names no version we package ({exc})") from None
    name = update.artifact
    if family_of(name) is None or "/" in name or name.startswith("."):
        raise malformed(f"names no .deb or .rpm file ({name!r})")
    if len(update.sha256) != 32 or len(update.release_signature) != 64:
        raise malformed("lacks a SHA-256 digest or an Ed25519 release signature")
    if not update.release_manifest or update.size <= 0:
        raise malformed("lacks the release manifest or the package size")
    rollback_after = (
        update.rollback_after.ToTimedelta()
        if update.HasField("rollback_after")
        else DEFAULT_ROLLBACK_AFTER
    )
    if rollback_after <= timedelta(0):
        raise malformed("has no time to roll back after")
    return AgentUpdate(
        version=update.version,
        artifact=name,
        sha256=update.sha256,
        release_signature=update.release_signature,
        release_manifest=update.release_manifest,
        size=update.size,
        rollback_after=rollback_after,
    )
