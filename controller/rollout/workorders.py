"""Turn a campaign's decision for one host into a signed work order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.agentrelease import Family
from fleetpatch.checkspec import Check
from fleetpatch.envelope import WORK_ORDER_TYPE, seal
from fleetpatch.v1 import types_pb2

from controller.api import times
from controller.campaigns import (
    CampaignSpec,
    CheckKind,
    LivepatchPolicy,
    PackageTarget,
    RebootPolicy,
    RestartPolicy,
)
from controller.model import AgentRelease

# An order without a window (an emergency, or a campaign with no windows)
# must still not start long after it was issued.
ORDER_TTL = timedelta(hours=1)

_REBOOT = {
    RebootPolicy.NEVER: types_pb2.REBOOT_POLICY_NEVER,
    RebootPolicy.IF_REQUIRED: types_pb2.REBOOT_POLICY_IF_REQUIRED,
    RebootPolicy.ALWAYS: types_pb2.REBOOT_POLICY_ALWAYS,
}
_RESTART = {
    RestartPolicy.AUTO: types_pb2.RESTART_POLICY_AUTO,
    RestartPolicy.REPORT: types_pb2.RESTART_POLICY_REPORT,
    RestartPolicy.NEVER: types_pb2.RESTART_POLICY_NEVER,
}
_LIVEPATCH = {
    LivepatchPolicy.NEVER: types_pb2.LIVEPATCH_POLICY_NEVER,
    LivepatchPolicy.PREFER: types_pb2.LIVEPATCH_POLICY_PREFER,
    LivepatchPolicy.ONLY: types_pb2.LIVEPATCH_POLICY_ONLY,
}


def check_to_pb(check: Check) -> types_pb2.HealthCheckSpec:
    spec = types_pb2.HealthCheckSpec(name=check.name)
    if check.kind is CheckKind.SYSTEMD:
        spec.systemd.unit = check.unit
    elif check.kind is CheckKind.TCP:
        spec.tcp.CopyFrom(types_pb2.TcpCheck(host=check.host, port=check.port))
    elif check.kind is CheckKind.HTTP:
        spec.http.CopyFrom(types_pb2.HttpCheck(url=check.url, expect_status=check.expect_status))
    elif check.kind is CheckKind.COMMAND:
        spec.command.argv.extend(check.argv)
    elif check.kind is CheckKind.PROCESS:
        spec.process.name = check.process
    else:
        spec.resource.CopyFrom(
            types_pb2.ResourceCheck(
                max_load_per_cpu=check.max_load_per_cpu,
                max_memory_used_ratio=check.max_memory_used_ratio,
                max_disk_used_ratio=check.max_disk_used_ratio,
            )
        )
    return spec


def expiry(spec: CampaignSpec, now: datetime, window_closes_at: datetime | None) -> datetime:
    """An order expires when its window's usable part closes, or after
    ORDER_TTL, and never after the campaign's deadline."""
    expires = window_closes_at or now + ORDER_TTL
    if spec.deadline is not None:
        expires = min(expires, spec.deadline)
    return expires


def _order(
    spec: CampaignSpec,
    action: types_pb2.WorkOrderAction.ValueType,
    campaign_id: str,
    order_id: str,
    host_id: str,
    sequence: int,
    now: datetime,
    window_closes_at: datetime | None,
) -> types_pb2.WorkOrder:
    """What every order of a campaign carries: who, when, until when, and
    the campaign's checks."""
    order = types_pb2.WorkOrder(
        order_id=order_id,
        host_id=host_id,
        campaign_id=campaign_id,
        sequence=sequence,
        issued_at=times.timestamp(now),
        expires_at=times.timestamp(expiry(spec, now, window_closes_at)),
        action=action,
        checks=[check_to_pb(c) for c in spec.verify.checks],
        verify_timeout=times.duration(spec.verify.timeout),
    )
    if window_closes_at is not None and not spec.emergency:
        order.window_closes_at.FromDatetime(window_closes_at)
    return order


def patch_order(
    spec: CampaignSpec,
    campaign_id: str,
    order_id: str,
    host_id: str,
    sequence: int,
    now: datetime,
    window_closes_at: datetime | None,
    baseline: Sequence[tuple[str, str]] = (),
) -> types_pb2.WorkOrder:
    """``baseline``: (name, minimum version) the campaign's patch baseline
    resolved for this host, added to the packages the campaign names."""
    if spec.patch is None:
        raise ValueError(f"campaign {campaign_id} has no [patch]")
    order = _order(
        spec, types_pb2.WORK_ORDER_ACTION_PATCH, campaign_id, order_id, host_id, sequence, now,
        window_closes_at,
    )  # fmt: skip
    order.patch.CopyFrom(
        types_pb2.PatchSpec(
            packages=[
                types_pb2.PackageTarget(name=name, min_version=minimum)
                for name, minimum in _targets(spec.patch.packages, baseline)
            ],
            all_security_updates=spec.patch.all_security_updates,
            exclude=list(spec.patch.exclude),
        )
    )
    order.reboot = _REBOOT[spec.patch.reboot]
    order.livepatch = _LIVEPATCH[spec.patch.livepatch]
    order.restart_services = _RESTART[spec.patch.restart_services]
    return order


def _targets(
    named: Sequence[PackageTarget], baseline: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The campaign's packages, then the baseline's it does not name."""
    found = [(p.name, p.min_version) for p in named]
    listed = {p.name for p in named}
    return found + [(name, minimum) for name, minimum in baseline if name not in listed]


def agent_update_order(
    spec: CampaignSpec,
    release: AgentRelease,
    campaign_id: str,
    order_id: str,
    host_id: str,
    sequence: int,
    now: datetime,
    window_closes_at: datetime | None,
    family: Family | None = Family.DEB,
) -> types_pb2.WorkOrder:
    """Install a published agent release's package of the host's
    ``family``. The host checks the package against its own pinned release
    key: the order carries the release's signed manifest and signature as
    published, never a key. An agent update never reboots the host."""
    update = spec.agent_update
    if update is None or update.version != release.version:
        raise ValueError(f"campaign {campaign_id} does not update the agent to {release.version}")
    if family is None or release.family is not family:
        raise ValueError(
            f"{release.artifact} is not for a host that installs .{family or '?'} packages"
        )
    order = _order(
        spec, types_pb2.WORK_ORDER_ACTION_AGENT_UPDATE, campaign_id, order_id, host_id, sequence,
        now, window_closes_at,
    )  # fmt: skip
    order.reboot = types_pb2.REBOOT_POLICY_NEVER
    order.agent_update.CopyFrom(
        types_pb2.AgentUpdate(
            version=release.version,
            artifact=release.artifact,
            sha256=bytes.fromhex(release.sha256),
            release_signature=release.signature,
            release_manifest=release.manifest,
            size=release.size,
            rollback_after=times.duration(update.rollback_after),
        )
    )
    return order


def revert_order(
    campaign_id: str, order_id: str, host_id: str, sequence: int, now: datetime, reverts: str
) -> types_pb2.WorkOrder:
    """Ask a host to undo an earlier order of this campaign (abort --revert)."""
    return types_pb2.WorkOrder(
        order_id=order_id,
        host_id=host_id,
        campaign_id=campaign_id,
        sequence=sequence,
        issued_at=times.timestamp(now),
        expires_at=times.timestamp(now + ORDER_TTL),
        action=types_pb2.WORK_ORDER_ACTION_REVERT,
        revert_order_id=reverts,
        reboot=types_pb2.REBOOT_POLICY_NEVER,
        verify_timeout=times.duration(timedelta(minutes=5)),
    )


def sign(order: types_pb2.WorkOrder, key: Ed25519PrivateKey) -> types_pb2.SignedEnvelope:
    return seal(order.SerializeToString(), WORK_ORDER_TYPE, key)
