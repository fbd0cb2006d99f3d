"""Protobuf <-> the controller's plain data. Only servicers and the admin
client touch protobuf classes; everything else speaks model dataclasses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fleetpatch.inventory import UPDATE_FIELDS
from fleetpatch.v1 import admin_pb2, types_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from controller.api.times import OUT_OF_RANGE, from_timestamp, in_range, timestamp
from controller.audit import AuditRecord
from controller.campaigns.spec import CampaignSpec
from controller.checkpoint import Checkpoint, CheckpointError
from controller.errors import UsageError
from controller.fleet.admins import AdminRecord, AdminStatus
from controller.fleet.pki import renew_at
from controller.fleet.renewal import FAILING_AFTER
from controller.fleet.tokens import Token
from controller.model import (
    AgentRelease,
    Assignment,
    CampaignRecord,
    CellHistory,
    CellView,
    Host,
    HostStatus,
    Package,
    ProgressReport,
)

_STATUS = {
    HostStatus.ACTIVE: admin_pb2.HOST_STATUS_ACTIVE,
    HostStatus.REVOKED: admin_pb2.HOST_STATUS_REVOKED,
    HostStatus.PENDING: admin_pb2.HOST_STATUS_PENDING,
}


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def to_json(message: Message) -> dict[str, Any]:
    """A message as JSON a person (or jq) can use: every field present,
    zero values included, and 64-bit integers as numbers rather than the
    strings the protobuf JSON mapping uses.

    Read at every check-in (facts and health), so messages made only of
    scalars, enums, repeated fields, such messages and timestamps are
    converted here from their set fields, over a template of the zero
    values (a tenth of the time); others go through `json_format`. A unit
    test holds both to the same output."""
    fields = _plain_fields(message.DESCRIPTOR)
    if fields is None:
        doc = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        _int64_as_numbers(message, doc)
        return doc
    doc = {name: [] if value == [] else value for name, value in fields.items()}  # own lists
    for field, value in message.ListFields():
        if field.is_repeated:
            doc[field.name] = [_plain_value(field, item) for item in value]
        else:
            doc[field.name] = _plain_value(field, value)
    return doc


_TEMPLATES: dict[str, dict[str, Any] | None] = {}
_PLAIN_SCALARS = {
    FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM,
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, *_INT64,
}  # fmt: skip


def _plain_fields(descriptor: Any) -> dict[str, Any] | None:
    """The zero-value template of a message `to_json` converts itself
    (None: one for json_format: maps, oneofs, floats, bytes, optional
    scalars, well-known types other than Timestamp)."""
    name = descriptor.full_name
    if name in _TEMPLATES:
        return _TEMPLATES[name]
    _TEMPLATES[name] = None  # a message that contains itself stays with json_format
    template: dict[str, Any] | None = {}
    for field in descriptor.fields:
        if field.containing_oneof is not None or template is None:
            template = None
        elif field.message_type is not None:
            nested = field.message_type
            if nested.GetOptions().map_entry:
                template = None
            elif nested.full_name == "google.protobuf.Timestamp" or (
                _plain_fields(nested) is not None
            ):
                if field.is_repeated:
                    template[field.name] = []
            else:
                template = None
        elif field.type not in _PLAIN_SCALARS or field.has_presence:
            template = None
        elif field.is_repeated:
            template[field.name] = []
        elif field.type == FieldDescriptor.TYPE_ENUM:
            template[field.name] = field.enum_type.values[0].name
        else:
            template[field.name] = field.default_value
    _TEMPLATES[name] = template
    return template


def _plain_value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return value if known is None else known.name
    if field.message_type is None:
        return value
    if field.message_type.full_name == "google.protobuf.Timestamp":
        try:
            return value.ToJsonString()
        except ValueError as exc:  # out of range: bad input, not a fault
            raise UsageError(f"{field.name}: {exc}") from None
    return to_json(value)


def _int64_as_numbers(message: Message, doc: dict[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        if field.name not in doc:
            continue
        if field.type in _INT64:
            value = doc[field.name]
            doc[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue  # well-known types have their own JSON form
            nested = getattr(message, field.name)
            if isinstance(doc[field.name], list):
                for item, sub in zip(nested, doc[field.name], strict=True):
                    _int64_as_numbers(item, sub)
            else:
                _int64_as_numbers(nested, doc[field.name])


def token_to_pb(token: Token) -> admin_pb2.Token:
    return admin_pb2.Token(
        token_id=token.token_id,
        region=token.region,
        ring=token.ring,
        labels=token.labels,
        uses_allowed=token.uses_allowed,
        uses=token.uses,
        created_at=timestamp(token.created_at),
        expires_at=timestamp(token.expires_at),
        revoked=token.revoked,
    )


def admin_to_pb(admin: AdminRecord) -> admin_pb2.Admin:
    return admin_pb2.Admin(
        name=admin.name,
        role=admin.role,
        revoked=admin.status is AdminStatus.REVOKED,
        created_at=timestamp(admin.created_at),
        created_by=admin.created_by,
        revoked_at=timestamp(admin.revoked_at),
        certificate_serial=admin.certificate_serial,
        certificate_expires_at=timestamp(admin.certificate_expires_at),
    )


def host_to_pb(host: Host, owes: Iterable[str] = ()) -> admin_pb2.Host:
    pb = admin_pb2.Host(
        host_id=host.host_id,
        region=host.region,
        ring=host.ring,
        labels=dict(host.labels),
        status=_STATUS[host.status],
        enrolled_at=timestamp(host.enrolled_at),
        last_seen=timestamp(host.last_seen),
        inventory_hash=host.inventory_hash,
        package_count=host.package_count,
        certificate_serial=host.certificate_serial,
        certificate_expires_at=timestamp(host.certificate_expires_at),
        inventory_updates=host.inventory_updates,
        checkins=host.checkins,
        renewal_failures=host.renewal_failures,
        renewal_error=host.renewal_error,
        renewal_failing=host.renewal_failures >= FAILING_AFTER,
        owes=list(owes),
    )
    if host.certificate_not_before is not None and host.certificate_expires_at is not None:
        pb.certificate_renew_at.FromDatetime(
            renew_at(host.certificate_not_before, host.certificate_expires_at)
        )
    json_format.ParseDict(dict(host.facts), pb.facts, ignore_unknown_fields=True)
    json_format.ParseDict(dict(host.health), pb.health, ignore_unknown_fields=True)
    return pb


def report_from_pb(host_id: str, pb: types_pb2.ProgressReport) -> ProgressReport:
    return ProgressReport(
        idempotency_key=pb.idempotency_key,
        host_id=host_id,
        order_id=pb.order_id,
        step=pb.step,
        final=pb.final,
        outcome=pb.outcome,
        detail=pb.detail,
        at=from_timestamp(pb.at) if pb.HasField("at") else datetime.now(UTC),
        payload=pb.SerializeToString(),
    )


def packages_from_pb(inventory: types_pb2.Inventory) -> list[Package]:
    return [(p.name, p.version, p.arch) for p in inventory.packages]


def sources_from_pb(inventory: types_pb2.Inventory) -> dict[str, tuple[str, str]]:
    """Binary name -> (source, source version), for the packages that name
    a source (an empty field means the same as the binary's)."""
    return {
        p.name: (p.source or p.name, p.source_version or p.version)
        for p in inventory.packages
        if p.source or p.source_version
    }


def updates_to_pb(
    rows: Sequence[tuple[object, ...]], scanned_at: datetime | None
) -> types_pb2.AvailableUpdates:
    """Stored rows of UPDATE_FIELDS as the wire's AvailableUpdates."""
    pb = types_pb2.AvailableUpdates(
        updates=[types_pb2.AvailableUpdate(**dict(zip(UPDATE_FIELDS, row, strict=True)))  # type: ignore[arg-type]
                 for row in rows]
    )  # fmt: skip
    if scanned_at is not None:
        pb.scanned_at.FromDatetime(scanned_at)
    return pb


def packages_to_pb(packages: Sequence[Package]) -> types_pb2.Inventory:
    return types_pb2.Inventory(
        packages=[types_pb2.Package(name=n, version=v, arch=a) for n, v, a in packages]
    )


def campaign_to_pb(
    record: CampaignRecord,
    cells: Sequence[CellView],
    spec: CampaignSpec | None = None,
    with_text: bool = True,
) -> admin_pb2.Campaign:
    """A campaign as admins see it; ``spec`` (its file, read) for what a
    listing shows without the file (``with_text=False``: a campaign file
    may be a megabyte, and a list of them would pass any limit)."""
    pb = admin_pb2.Campaign(
        campaign_id=record.campaign_id,
        name=record.name,
        state=record.state,
        spec=record.spec if with_text else "",
        created_by=record.created_by,
        created_at=timestamp(record.created_at),
        approved_at=timestamp(record.approved_at),
        updated_at=timestamp(record.updated_at),
        halt_kind=record.halt_kind or "",
        halt_reason=record.halt_reason,
        revert_requested=record.revert_requested,
    )
    if spec is not None:
        pb.kind = spec.kind
        if spec.agent_update is not None:
            pb.agent_update_version = spec.agent_update.version
            pb.agent_update_rollback_after.FromTimedelta(spec.agent_update.rollback_after)
    for cell in cells:
        pb.cells.append(
            admin_pb2.CampaignCell(
                ring=cell.ring,
                region=cell.region,
                waiting_reasons=cell.waiting_reasons,
                next_change=cell.next_change.isoformat() if cell.next_change else "",
                **cell.counts,
            )
        )
    return pb


def audit_to_pb(record: AuditRecord) -> admin_pb2.AuditRecord:
    e = record.entry
    return admin_pb2.AuditRecord(
        seq=record.seq, at=timestamp(e.at), actor=e.actor, action=e.action, target=e.target,
        outcome=e.outcome, detail=e.detail, prev_hash=record.prev_hash, hash=record.hash,
    )  # fmt: skip


_MAX_UINT64 = 2**64 - 1


def checkpoint_to_pb(checkpoint: Checkpoint) -> admin_pb2.AuditCheckpoint:
    """Raises CheckpointError for a seq or a time the message cannot hold
    (a checkpoint file read by `audit verify --checkpoint` says anything)."""
    if not 0 <= checkpoint.seq <= _MAX_UINT64:
        raise CheckpointError(
            f"the checkpoint's seq {checkpoint.seq} is out of range (0 to {_MAX_UINT64})"
        )
    if not in_range(checkpoint.at):
        raise CheckpointError(f"the checkpoint's time {checkpoint.at.isoformat()} {OUT_OF_RANGE}")
    return admin_pb2.AuditCheckpoint(
        seq=checkpoint.seq, hash=checkpoint.hash, at=timestamp(checkpoint.at),
        key_id=checkpoint.key_id, signature=checkpoint.signature,
    )  # fmt: skip


def checkpoint_from_pb(message: admin_pb2.AuditCheckpoint) -> Checkpoint:
    """Raises UsageError for a time out of range."""
    return Checkpoint(
        message.seq, message.hash, from_timestamp(message.at), message.key_id,
        bytes(message.signature),
    )  # fmt: skip


def release_to_pb(release: AgentRelease) -> admin_pb2.AgentRelease:
    return admin_pb2.AgentRelease(
        version=release.version,
        artifact=release.artifact,
        sha256=bytes.fromhex(release.sha256),
        size=release.size,
        key_fingerprint=release.key_fingerprint,
        published_at=timestamp(release.published_at),
        published_by=release.published_by,
        family=str(release.family),
    )


def history_to_pb(cell: CellHistory) -> admin_pb2.CellHistory:
    return admin_pb2.CellHistory(
        ring=cell.ring, region=cell.region, hosts=cell.hosts, orders=cell.orders,
        succeeded=cell.succeeded, failed=cell.failed, reverted=cell.reverted,
        revert_failed=cell.revert_failed, timed_out=cell.timed_out,
        apply_seconds=cell.apply_seconds, verify_seconds=cell.verify_seconds,
        reboot_seconds=cell.reboot_seconds,
    )  # fmt: skip


def history_from_pb(pb: admin_pb2.CellHistory) -> CellHistory:
    return CellHistory(
        ring=pb.ring, region=pb.region, hosts=pb.hosts, orders=pb.orders,
        succeeded=pb.succeeded, failed=pb.failed, reverted=pb.reverted,
        revert_failed=pb.revert_failed, timed_out=pb.timed_out,
        apply_seconds=tuple(pb.apply_seconds), verify_seconds=tuple(pb.verify_seconds),
        reboot_seconds=tuple(pb.reboot_seconds),
    )  # fmt: skip


def campaign_hosts_to_pb(
    assignments: Sequence[Assignment], hostnames: Mapping[str, str],
    reports: Mapping[str, Sequence[bytes]],
) -> list[admin_pb2.CampaignHost]:  # fmt: skip
    """`campaign show --hosts`: each assignment with the versions its
    host's reports name, before and after."""
    return [
        admin_pb2.CampaignHost(
            host_id=a.host_id, hostname=hostnames.get(a.host_id, ""), ring=a.ring,
            region=a.region, kind=a.kind.value, status=a.status.value, step=a.step,
            detail=a.detail, assigned_at=timestamp(a.assigned_at),
            finished_at=timestamp(a.finished_at),
            changes=merged_changes(reports.get(a.order_id, ())),
        )
        for a in assignments
    ]  # fmt: skip


def merged_changes(payloads: Iterable[bytes]) -> list[types_pb2.PackageChange]:
    """Each package's version before (as first reported) and after (as
    last reported) over one order's progress reports, by name. A report
    that does not decode is skipped (it was stored as the agent sent it)."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for payload in payloads:
        report = types_pb2.ProgressReport()
        try:
            report.ParseFromString(payload)
        except DecodeError:
            continue
        for change in report.changes:
            before.setdefault(change.name, change.from_version)
            after[change.name] = change.to_version
    return [
        types_pb2.PackageChange(name=name, from_version=before[name], to_version=after[name])
        for name in sorted(after)
    ]
