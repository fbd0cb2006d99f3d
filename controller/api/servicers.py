"""gRPC servicers: thin shells that check who calls, convert protobuf to
plain data, call the core, and convert back. Domain errors become gRPC
status codes here and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fleetpatch import catrust
from fleetpatch import labels as labelspec
from fleetpatch.identity import Identity, Role
from fleetpatch.inventory import UPDATE_FIELDS, inventory_hash, updates_hash
from fleetpatch.orderspec import REFUSED, UNREADABLE_ORDER
from fleetpatch.overload import retry_after_trailer
from fleetpatch.push import WATCH_OPEN
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2

from controller import audit, checkpoint
from controller.api import auditkeeping, convert, limits, times
from controller.api.auditkeeping import RefusalLog
from controller.api.auth import peer_certificate, peer_identity, peer_issuer
from controller.api.checkin import Pace
from controller.api.lenient import Unread, decoded
from controller.api.push import Watchers
from controller.audit import AuditEntry
from controller.checkpoint import Checkpoints
from controller.datadir import Settings
from controller.errors import (
    AlreadyExists,
    Conflict,
    FleetpatchError,
    NotFound,
    Overloaded,
    Refused,
    StoreUnavailable,
    TokenRefused,
    UsageError,
)
from controller.fleet import admins, enrollment, renewal, tokens
from controller.fleet.admins import AdminRecord, AdminStatus
from controller.fleet.carotation import Authorities
from controller.fleet.pki import CertificateAuthority
from controller.fleet.relabel import Relabel
from controller.model import (
    AssignmentStatus,
    CheckIn,
    CheckInOutcome,
    Host,
    Package,
    ProgressReport,
)
from controller.quietlog import Quiet
from controller.refusals import RefusalCounter
from controller.releases.publishing import Header, Releases
from controller.rollout.engine import CampaignEngine
from controller.rollout.tally import facts_of
from controller.store import Store
from controller.store.admins import IssuedCertificate
from controller.store.heartbeats import Heartbeats
from controller.store.thread import CheckInBatcher, StoreThread

log = logging.getLogger(__name__)
_quiet = Quiet(log, logging.INFO)
_quiet_hosts = Quiet(log, logging.INFO)  # keyed by host: kept apart from the fleet-wide keys
StoredCheckIn = CheckIn  # in AgentService, CheckIn names the RPC

Context = grpc.aio.ServicerContext[Any, Any]
# Audit records read per store call when walking or exporting the trail.
AUDIT_PAGE = 2000
# An export message stays well under gRPC's 4 MiB default receive limit.
EXPORT_MESSAGE_BYTES = 1024 * 1024
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_STATUS_OF: list[tuple[type[FleetpatchError], grpc.StatusCode]] = [
    (TokenRefused, grpc.StatusCode.UNAUTHENTICATED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Refused, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_for(error: FleetpatchError) -> grpc.StatusCode:
    for kind, code in _STATUS_OF:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _admission(
    servicer: object, method: str, context: Context
) -> AbstractContextManager[limits.Served | None]:
    """What the servicer admits this call under (`AgentService.admit`); none
    for servicers that do not limit their callers."""
    admit = getattr(servicer, "admit", None)
    return nullcontext() if admit is None else admit(method, context)


async def _refuse(method: str, context: Context, exc: FleetpatchError) -> None:
    # What the peer sent may be quoted in it (an id it asked for): bounded,
    # for the status's header and for the log.
    text = limits.status_text(str(exc))
    if isinstance(exc, Overloaded | StoreUnavailable):
        # The whole fleet meets these at once: a line per interval.
        _quiet.say(f"{method} {type(exc).__name__}", "%s refused for %s: %s", method,
                   context.peer(), text)  # fmt: skip
        context.set_trailing_metadata(retry_after_trailer(exc.retry_after))
    else:
        identity = peer_identity(context)
        if identity is not None and identity.role is Role.ADMIN:
            log.info("%s refused for %s: %s", method, context.peer(), text)
        else:
            # A host (or, on the enrollment port, an address) asking again
            # and again, as a revoked or broken agent does: a line per
            # interval for each, with how many were not logged.
            who = identity.name if identity is not None else context.peer().rpartition(":")[0]
            _quiet_hosts.say(f"{method} {type(exc).__name__} {who}", "%s refused for %s: %s",
                             method, context.peer(), text)  # fmt: skip
    await context.abort(status_for(exc), text)


def _named(value: str, what: str) -> str:
    """``value``, the id of a ``what`` that a request names; NotFound,
    quoting only its start, when it is longer than any (limits.MAX_ID)."""
    if len(value) > limits.MAX_ID:
        raise NotFound(f"no {what} {limits.quoted_id(value)}")
    return value


def rpc(
    method: Callable[[Any, _Req, Context], Awaitable[_Resp]],
) -> Callable[[Any, _Req, Context], Awaitable[_Resp]]:
    """Admit the caller, decode its request, call the method; domain errors
    become gRPC status (Overloaded with a retry delay in the trailers)."""

    @wraps(method)
    async def wrapper(self: Any, request: _Req, context: Context) -> _Resp:
        try:
            with _admission(self, method.__name__, context) as served:
                message = await decoded(request)
                if served is not None and isinstance(request, Unread):
                    served.units = limits.call_units(request.size)
                return await method(self, message, context)
        except FleetpatchError as exc:
            await _refuse(method.__name__, context, exc)
            raise  # unreachable: abort raises

    return wrapper


def rpc_stream(
    method: Callable[[Any, _Req, Context], AsyncIterator[_Resp]],
) -> Callable[[Any, _Req, Context], AsyncIterator[_Resp]]:
    """`rpc` for methods that stream their response (async generators)."""

    @wraps(method)
    async def wrapper(self: Any, request: _Req, context: Context) -> AsyncIterator[_Resp]:
        try:
            with _admission(self, method.__name__, context):
                async for item in method(self, await decoded(request), context):
                    yield item
        except FleetpatchError as exc:
            await _refuse(method.__name__, context, exc)

    return wrapper


def _readable(report: ProgressReport) -> ProgressReport:
    """The report as it is stored. A refusal of an order whose id could not
    be read (unparseable bytes, an unknown key) is stored and audited all
    the same, under a placeholder order id: refusing it would leave it at
    the head of the host's queue. Raises UsageError for ids and steps past
    limits.MAX_REPORT_ID; cuts the detail at limits.MAX_REPORT_DETAIL."""
    if report.step == REFUSED and not report.order_id:
        report = dataclasses.replace(report, order_id=UNREADABLE_ORDER)
    for name in ("idempotency_key", "order_id", "step"):
        if len(getattr(report, name)) > limits.MAX_REPORT_ID:
            raise UsageError(f"a progress report's {name} is longer than {limits.MAX_REPORT_ID}")
    if len(report.detail) > limits.MAX_REPORT_DETAIL:
        cut = report.detail[: limits.MAX_REPORT_DETAIL]
        report = dataclasses.replace(report, detail=f"{cut}... (cut at {limits.MAX_REPORT_DETAIL})")
    return report


async def _inventory(
    request: agent_pb2.CheckInRequest,
) -> tuple[list[Package], dict[str, tuple[str, str]]]:
    """The check-in's inventory, bounded and checked against its hash;
    converted and hashed off the event loop when it is large."""
    entries = len(request.inventory.packages)
    if entries > limits.MAX_INVENTORY_ENTRIES:
        raise UsageError(
            f"the inventory lists {entries} packages; at most "
            f"{limits.MAX_INVENTORY_ENTRIES} are taken"
        )

    def convert_and_check() -> tuple[list[Package], dict[str, tuple[str, str]]]:
        limits.check_strings(request.inventory, "inventory", limits.MAX_PACKAGE_FIELD)
        packages = convert.packages_from_pb(request.inventory)
        sources = convert.sources_from_pb(request.inventory)
        if inventory_hash(packages, sources) != request.inventory_hash:
            raise UsageError("the inventory does not match its hash")
        return packages, sources

    if entries <= 1000:
        return convert_and_check()
    return await asyncio.to_thread(convert_and_check)


def _updates(request: agent_pb2.CheckInRequest) -> list[tuple[object, ...]]:
    """The check-in's available updates (rows of UPDATE_FIELDS), bounded and
    checked against their hash. Raises UsageError."""
    entries = len(request.updates.updates)
    if entries > limits.MAX_INVENTORY_ENTRIES:
        raise UsageError(
            f"the scan lists {entries} updates; at most {limits.MAX_INVENTORY_ENTRIES} are taken"
        )
    limits.check_strings(request.updates, "updates", limits.MAX_PACKAGE_FIELD)
    rows = [tuple(getattr(u, f) for f in UPDATE_FIELDS) for u in request.updates.updates]
    if updates_hash(rows) != request.updates_hash:
        raise UsageError("the available updates do not match their hash")
    return rows


def _walk_page(walk: audit.ChainWalk, after: int, store: Store) -> int | None:
    """Feed ``walk`` the page after sequence ``after``; the last sequence
    fed, or None at the end of the trail."""
    page = store.audit_page(after, AUDIT_PAGE)
    walk.feed(page)
    return page[-1].seq if page else None


def _export_page(
    after: int, since: datetime | None, store: Store
) -> tuple[list[admin_pb2.ExportAuditResponse], int | None]:
    """The page after sequence ``after`` (records at or after ``since``),
    as messages of at most about EXPORT_MESSAGE_BYTES each; and the last
    sequence read, None at the end of the trail."""
    page = store.audit_page(after, AUDIT_PAGE)
    messages: list[admin_pb2.ExportAuditResponse] = []
    batch: list[admin_pb2.AuditRecord] = []
    size = 0
    for record in page:
        if since is not None and record.entry.at < since:
            continue
        e = record.entry
        batch.append(convert.audit_to_pb(record))
        # An upper bound (4 bytes a character), without encoding anything.
        size += 256 + 4 * (len(e.actor) + len(e.action) + len(e.target) + len(e.outcome)
                           + len(e.detail))  # fmt: skip
        if size >= EXPORT_MESSAGE_BYTES:
            messages.append(admin_pb2.ExportAuditResponse(records=batch))
            batch, size = [], 0
    if batch:
        messages.append(admin_pb2.ExportAuditResponse(records=batch))
    return messages, (page[-1].seq if page else None)


def audited(action: Callable[[Store], _Resp], entry: AuditEntry) -> Callable[[Store], _Resp]:
    """``action``, then its audit record, on the store thread."""

    def run(store: Store) -> _Resp:
        result = action(store)
        store.append_audit(entry)
        return result

    return run


def issued_certificate(cert: x509.Certificate) -> IssuedCertificate:
    """How the store keeps a certificate issued to an admin."""
    return IssuedCertificate(
        format(cert.serial_number, "x"), cert.not_valid_before_utc, cert.not_valid_after_utc
    )


class Revocations:
    """Revoked host ids, kept in memory so every RPC can refuse them cheaply.
    ``on_revoke`` is told of each host revoked from now on (its Watch stream
    is closed)."""

    def __init__(self, revoked: set[str], on_revoke: Callable[[str], object] | None = None) -> None:
        self._revoked = revoked
        self.on_revoke = on_revoke

    def add(self, host_id: str) -> None:
        self._revoked.add(host_id)
        if self.on_revoke is not None:
            self.on_revoke(host_id)

    def __contains__(self, host_id: str) -> bool:
        return host_id in self._revoked


def require(context: Context, role: Role, revoked: Revocations) -> Identity:
    identity = peer_identity(context)
    if identity is None:
        raise Refused("this call needs a client certificate (use the mutual-TLS port)")
    if identity.role is not role:
        raise Refused(f"a {identity.role} certificate may not make this call")
    if role is Role.HOST and identity.name in revoked:
        raise Refused(f"host {identity.name} has been revoked")
    return identity


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        db: StoreThread,
        batcher: CheckInBatcher,
        ca: CertificateAuthority,
        signing_keys: list[types_pb2.SigningKey],
        settings: Settings,
        revoked: Revocations,
        engine: CampaignEngine,
        releases: Releases,
        rotations: list[types_pb2.SigningKey] | None = None,
        withdrawn: list[types_pb2.WithdrawnKey] | None = None,
        rng: random.Random | None = None,
        admission: limits.Admission | None = None,
        pending: set[str] | None = None,
        refusals: RefusalLog | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        authorities: Authorities | None = None,
        watchers: Watchers | None = None,
        greeting: Callable[[], str | None] = lambda: None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._releases = releases
        # Check-ins that bring nothing new: answered from memory, written
        # behind (controller/store/heartbeats.py); None: each written first.
        self._heartbeats = heartbeats
        # Push: the connected hosts' Watch streams; ``greeting`` says why a
        # stream is nudged as it opens, if it is (a signing key just revoked).
        self.watchers = watchers if watchers is not None else Watchers()
        self._greeting = greeting
        self._batcher = batcher
        # A CA rotation: enrollments and renewals come from the new CA, and
        # agents are offered both CAs (fleetpatch.catrust).
        self._authorities = authorities or Authorities(ca, ca, [ca.cert], [])
        self._trust_hash = catrust.bundle_hash(self._authorities.trusted)
        self._signing_keys = signing_keys
        self._settings = settings
        self._revoked = revoked
        self._engine = engine
        # What every check-in's answer says of the keys; fields left empty
        # are not passed (an empty list given costs a third of the answer).
        keys: dict[str, Any] = {
            "signing_keys": rotations,
            "withdrawn_keys": withdrawn,
            "current_key_id": signing_keys[0].key_id if signing_keys else "",
        }
        self._keys = {name: value for name, value in keys.items() if value}
        self._rng = rng or random.Random()
        self._pace = Pace(settings.checkin_interval, settings.checkin_jitter, self._rng)
        self._refusals = refusals or RefusalLog(db, RefusalCounter(settings.refusal_window))
        self.admission = admission or limits.Admission()
        self.enroll_refusals = limits.RefusalLimit()
        # Hosts enrolled that have not made a mutual-TLS call yet.
        self._pending = pending if pending is not None else set()

    def admit(self, method: str, context: Context) -> AbstractContextManager[limits.Served]:
        """Calls are admitted per host (one of each kind at a time) and
        within the controller's overall bound; enrollments by the latter
        only, since they come before there is a host."""
        if method == "Enroll":
            return self.admission.admit(None, method)
        return self.admission.admit(require(context, Role.HOST, self._revoked).name, method)

    @rpc
    async def Enroll(
        self, request: agent_pb2.EnrollRequest, context: Context
    ) -> agent_pb2.EnrollResponse:
        peer = limits.peer_address(context.peer())
        self.enroll_refusals.check(peer, time.monotonic())
        try:
            limits.check_strings(request, "the enrollment request")
            enrolled = await enrollment.enroll(
                self._db, self._authorities.issuing, request.token, request.csr_pem,
                dict(request.labels),
                convert.to_json(request.facts), datetime.now(UTC),
                self._settings.host_certificate_lifetime,
            )  # fmt: skip
        except (TokenRefused, UsageError) as exc:
            await self._refused_enrollment(peer, request.token, exc)
            raise
        host, cert = enrolled.host, enrolled.certificate
        machine_id = request.facts.machine_id
        try:
            twins = [
                h for h in await self._db.call(lambda s: s.hosts_with_machine_id(machine_id))
                if h != host.host_id
            ]  # fmt: skip
        except Exception as exc:  # the host is enrolled: an error now would have it enroll again
            log.warning("host %s enrolled, but looking for other hosts with its machine-id "
                        "failed: %s", host.host_id, exc)  # fmt: skip
            twins = []
        if twins:
            log.warning(
                "host %s reports machine-id %s, as %d other host(s) do: %s (cloned images?)",
                host.host_id, machine_id, len(twins), ", ".join(twins),
            )  # fmt: skip
        self._pending.add(host.host_id)
        self._engine.metrics.presence.enrolled(host.host_id, host.ring, host.region)
        log.info(
            "enrolled host %s (%s) in %s ring %d with token %s",
            host.host_id, request.facts.hostname or "?", host.region, host.ring,
            enrolled.token_id,
        )  # fmt: skip
        return agent_pb2.EnrollResponse(
            host_id=host.host_id,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            ca_pem=self._authorities.trusted_pem,
            ca_endorsements_pem=[
                c.public_bytes(serialization.Encoding.PEM) for c in self._authorities.endorsements
            ],
            signing_keys=self._signing_keys,
            region=host.region,
            ring=host.ring,
            same_machine_id=twins,
        )

    async def _refused_enrollment(self, peer: str, token: str, error: FleetpatchError) -> None:
        """Audit a refused enrollment: who tried, with which token, and why
        (with the attempts turned away unheard since the last one)."""
        turned_away = self.enroll_refusals.refused(peer, time.monotonic())
        detail = str(error)[: limits.MAX_REPORT_DETAIL]
        if turned_away:
            detail += f" ({turned_away} more attempt(s) turned away while refused too often)"
        entry = AuditEntry(
            datetime.now(UTC), f"peer:{peer}", "host.enroll", tokens.id_of(token), "refused",
            detail,
        )  # fmt: skip
        await self._db.call(lambda s: s.append_audit(entry))

    async def _activated(self, host_id: str, activate: Callable[[Store], Host | None]) -> None:
        """The first mutual-TLS call of a pending host: it proved that its
        agent kept what enrollment gave it, and campaigns count it from now
        on. ``activate``: the store call that made it active (or found it
        was already), returning the host when it did."""
        host = await self._db.call(activate)
        self._pending.discard(host_id)
        if host is not None:
            self._engine.joined(host)
            self._engine.metrics.presence.activated(host.host_id, host.ring, host.region)
            log.info("host %s is active (first mutual-TLS call)", host_id)

    @rpc
    async def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: Context
    ) -> agent_pb2.CheckInResponse:
        started = time.perf_counter()
        try:
            return await self._check_in(request, context)
        finally:
            self._engine.metrics.checkin_seconds.observe(time.perf_counter() - started)

    async def _check_in(
        self, request: agent_pb2.CheckInRequest, context: Context
    ) -> agent_pb2.CheckInResponse:
        host_id = require(context, Role.HOST, self._revoked).name
        limits.check_strings(request.facts, "facts")
        limits.check_strings(request.health, "health")
        if request.health.HasField("observed_at"):  # kept to be made JSON later (Heartbeats)
            times.check_timestamp(request.health.observed_at)
        packages: list[Package] | None = None
        sources: dict[str, tuple[str, str]] = {}
        if request.HasField("inventory"):
            packages, sources = await _inventory(request)
            if len(packages) >= limits.LARGE_INVENTORY:
                # Once this call and its request are gone, give their memory back.
                asyncio.get_running_loop().call_later(1.0, limits.release_memory)
        updates = _updates(request) if request.HasField("updates") else None
        scanned_at = (
            times.from_timestamp(request.updates.scanned_at)
            if updates is not None and request.updates.HasField("scanned_at") else None
        )  # fmt: skip
        at = datetime.now(UTC)
        beats = self._heartbeats
        outcome = None
        reported = None  # the facts as JSON, once made
        if beats is not None and packages is None and updates is None:
            outcome = beats.answer(host_id, request.inventory_hash, request.updates_hash)
            if outcome is not None:  # nothing new: answered now, written behind (made JSON then)
                beats.accept(host_id, at, request.facts, request.health)
        if outcome is None:
            reported = convert.to_json(request.facts)
            outcome = await self._written(
                CheckIn(
                    host_id=host_id,
                    at=at,
                    facts=reported,
                    health=convert.to_json(request.health),
                    inventory_hash=request.inventory_hash,
                    packages=packages,
                    updates_hash=request.updates_hash,
                    updates=updates,
                    scanned_at=scanned_at,
                    sources=sources,
                )
            )
        if request.renewal_failures:  # rare: a store call only then
            await self._renewal_failing(host_id, request)
        self._engine.metrics.presence.seen(host_id, outcome.ring, outcome.region, at)
        order = None
        if self._engine.busy:
            if reported is None:
                reported = convert.to_json(request.facts)
            facts = facts_of(host_id, outcome.region, outcome.ring, outcome.labels, reported, at)
            order = await self._engine.order_for(facts, request.highest_sequence)
            if order is not None:
                limits.charge(limits.ORDER_UNITS)  # what the order cost, for `Capacity`
        self.watchers.served(host_id)  # a nudged host's turn is over
        return agent_pb2.CheckInResponse(
            ca_trust=self._trust(request.ca_trust_hash, context),
            work_order=order,
            **self._keys,
            next_checkin=self._pace.next(),
            known_inventory_hash=outcome.inventory_hash,
            inventory_required=outcome.inventory_hash != request.inventory_hash,
            known_updates_hash=outcome.updates_hash,
        )

    async def _written(self, checkin: StoredCheckIn) -> CheckInOutcome:
        """``checkin`` written before it is answered: what the store holds
        of its host afterwards; Refused when the host may not check in."""
        host_id, beats = checkin.host_id, self._heartbeats
        if beats is not None:
            beats.superseded(host_id)
        try:
            outcome = await self._batcher.submit(checkin)
        except Exception as exc:
            if beats is not None:  # a store that reads but does not write is not trusted
                beats.write_failed(exc)
            raise
        if beats is not None:
            beats.learn(host_id, outcome)
        if outcome.revoked:
            self._revoked.add(host_id)
            raise Refused(f"host {host_id} has been revoked")
        if not outcome.known:
            raise Refused(f"host {host_id} is not enrolled with this controller")
        if outcome.activated:  # the check-in's own transaction made it active
            await self._activated(host_id, lambda s: s.get_host(host_id))
        return outcome

    def _trust(self, reported: str, context: Context) -> agent_pb2.CaTrust | None:
        """The CAs to offer a host that trusts those of digest ``reported``
        (none from agents too old to say): when it trusts others, or during
        a CA rotation while its certificate is from the old CA (then with
        renew_now)."""
        if not reported:
            return None
        found = self._authorities
        renew_now = found.rotating and peer_issuer(context) != found.issuing.cert.subject
        if reported == self._trust_hash and not renew_now:
            return None
        pem = serialization.Encoding.PEM
        return agent_pb2.CaTrust(
            ca_pem=[c.public_bytes(pem) for c in found.trusted],
            endorsements_pem=[c.public_bytes(pem) for c in found.endorsements],
            renew_now=renew_now,
        )

    async def _renewal_failing(self, host_id: str, request: agent_pb2.CheckInRequest) -> None:
        failures = request.renewal_failures
        error = request.renewal_error[: limits.MAX_REPORT_DETAIL]
        log.warning("host %s: certificate renewal failed %d time(s) in a row: %s",
                    host_id, failures, error)  # fmt: skip
        await self._db.call(lambda s: s.record_renewal_failure(host_id, failures, error))

    @rpc
    async def Renew(
        self, request: agent_pb2.RenewRequest, context: Context
    ) -> agent_pb2.RenewResponse:
        """A new certificate for the calling host, for the key in its CSR;
        the host id is the one of the certificate it calls with."""
        host_id = require(context, Role.HOST, self._revoked).name
        presented = peer_certificate(context)
        if presented is None:  # require() has seen it: cannot happen
            raise Refused("this call needs a client certificate (use the mutual-TLS port)")
        if host_id in self._pending:
            await self._activated(host_id, lambda s: s.activate_host(host_id))
        renewed = await renewal.renew(
            self._db, self._authorities.issuing, host_id, presented, request.csr_pem,
            self._settings.host_certificate_lifetime, self._clock(),
        )  # fmt: skip
        cert = renewed.certificate
        log.info("host %s renewed its certificate %s: serial %x, valid until %s",
                 host_id, renewed.previous_serial, cert.serial_number,
                 f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%SZ}")  # fmt: skip
        return agent_pb2.RenewResponse(
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM)
        )

    @rpc
    async def ReportProgress(
        self, request: agent_pb2.ReportProgressRequest, context: Context
    ) -> agent_pb2.ReportProgressResponse:
        host_id = require(context, Role.HOST, self._revoked).name
        if host_id in self._pending:
            await self._activated(host_id, lambda s: s.activate_host(host_id))
        if len(request.reports) > limits.MAX_REPORTS_PER_CALL:
            raise UsageError(f"at most {limits.MAX_REPORTS_PER_CALL} reports per call")
        reports = [_readable(convert.report_from_pb(host_id, r)) for r in request.reports]
        for report in reports:
            if not report.idempotency_key or not report.order_id or not report.step:
                raise UsageError("a progress report lacks its idempotency key, order or step")
        new = await self._db.call(lambda s: s.record_reports(reports, datetime.now(UTC)))
        await self._engine.on_results(
            host_id,
            [(r.order_id, r.step, r.outcome if r.final else "", r.detail, r.at) for r in reports],
        )
        # Audited with the controller's time (an agent's clock, or a hostile
        # agent, must not backdate the trail), and counted rather than
        # recorded one by one (a refusing host must not flood it).
        if new:
            await self._refusals.refused(
                host_id, [(r.order_id, r.detail) for r in reports if r.step == REFUSED]
            )
        for report in reports:
            if report.final:
                log.info("host %s: order %s finished %s: %s",
                         host_id, report.order_id, report.outcome, report.detail)  # fmt: skip
        log.debug("host %s: %d report(s), %d new", host_id, len(reports), new)
        return agent_pb2.ReportProgressResponse(
            acknowledged_keys=[r.idempotency_key for r in reports]
        )

    async def Watch(
        self, request: agent_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[agent_pb2.Nudge]:
        """The host's nudges, until it is revoked or watches again. Not
        admitted like the other calls: a stream is idle nearly always, and
        must not take the room of check-ins.

        The stream is registered as soon as the caller is known, with no
        wait in between, so that a host has one however many calls it
        opens (each ends the one before) and a revocation after `require`
        still closes it. The request (a WatchRequest, which carries
        nothing) is not read: a call whose request never came would wait
        here unregistered, held by nothing, as many as a host opened."""
        try:
            host_id = require(context, Role.HOST, self._revoked).name
        except FleetpatchError as exc:
            await _refuse("Watch", context, exc)
            return
        stream = self.watchers.open(host_id)
        try:
            # Headers at once: the agent knows its stream is open (and
            # registered here) before the first nudge.
            await context.send_initial_metadata(((WATCH_OPEN, "1"),))
            reason = self._greeting()
            if reason is not None:  # paced as any nudge: a restart reconnects them all
                self.watchers.nudge([host_id], reason, quiet=True)
            async for nudge in self.watchers.follow(stream):
                yield agent_pb2.Nudge(reason=nudge.reason, spread_ms=nudge.spread_ms)
        finally:
            self.watchers.release(host_id, stream)

    @rpc_stream
    async def FetchArtifact(
        self, request: agent_pb2.FetchArtifactRequest, context: Context
    ) -> AsyncIterator[agent_pb2.ArtifactChunk]:
        host_id = require(context, Role.HOST, self._revoked).name
        published = await self._releases.find(request.sha256)
        log.info("host %s fetches agent release %s (%s)", host_id, published.version,
                 published.artifact)  # fmt: skip
        first = True
        async with contextlib.aclosing(self._releases.read(published)) as chunks:
            async for data in chunks:
                yield agent_pb2.ArtifactChunk(data=data, size=published.size if first else 0)
                first = False


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        db: StoreThread,
        revoked: Revocations,
        engine: CampaignEngine,
        releases: Releases,
        checkpoints: Checkpoints,
        ca: CertificateAuthority,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trusted_pem: bytes | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._db = db
        self._revoked = revoked
        # Check-ins answered from memory read the change of a host's
        # placement before the admin who made it is answered.
        self._heartbeats = heartbeats
        self._engine = engine
        self._releases = releases
        self._checkpoints = checkpoints
        self._ca = ca  # issues admin certificates (the new CA during a rotation)
        # The CAs an admin CLI should trust (both during a CA rotation).
        self._trusted_pem = trusted_pem or ca.cert_pem
        self._settings = settings
        self._clock = clock

    async def admin(self, context: Context, method: str) -> AdminRecord:
        """`_admin` for the services beside this one (VulnService)."""
        return await self._admin(context, method)

    async def _admin(self, context: Context, method: str) -> AdminRecord:
        """The admin calling ``method``, by the certificate they call with;
        Refused (audited) when it is not an admin certificate issued here
        and current, or their role may not make this call."""
        identity = require(context, Role.ADMIN, self._revoked)
        presented = peer_certificate(context)
        serial = "" if presented is None else format(presented.serial_number, "x")
        found = await self._db.call(lambda s: s.admin_for_certificate(identity.name, serial))
        try:
            return admins.authorize(found, identity.name, method)
        except Refused as exc:
            entry = AuditEntry(
                self._clock(), f"admin:{identity.name}", "admin.refused", method, "refused",
                str(exc),
            )  # fmt: skip
            await self._db.call(lambda s: s.append_audit(entry))
            raise

    @rpc
    async def AddAdmin(
        self, request: admin_pb2.AddAdminRequest, context: Context
    ) -> admin_pb2.AddAdminResponse:
        owner = await self._admin(context, "AddAdmin")
        name = admins.check_name(request.name)
        role = admins.parse_role(request.role)
        now = self._clock()
        cert = self._ca.sign_csr(
            request.csr_pem, Identity(Role.ADMIN, name), self._settings.admin_certificate_lifetime,
            now,
        )  # fmt: skip
        issued = issued_certificate(cert)
        record = AdminRecord(name, role, AdminStatus.ACTIVE, now, owner.actor)
        entry = AuditEntry(
            now, owner.actor, "admin.add", f"admin:{name}", "ok",
            f"role {role}, certificate {issued.serial} valid until "
            f"{issued.not_after:%Y-%m-%d %H:%M:%SZ}",
        )  # fmt: skip
        added = await self._db.call(lambda s: s.add_admin(record, issued, entry))
        log.warning("admin %s added admin %s as %s", owner.name, name, role)
        return admin_pb2.AddAdminResponse(
            admin=convert.admin_to_pb(added),
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            ca_pem=self._trusted_pem,
        )

    @rpc
    async def ListAdmins(
        self, request: admin_pb2.ListAdminsRequest, context: Context
    ) -> admin_pb2.ListAdminsResponse:
        await self._admin(context, "ListAdmins")
        found = await self._db.call(lambda s: s.list_admins())
        return admin_pb2.ListAdminsResponse(admins=[convert.admin_to_pb(a) for a in found])

    @rpc
    async def RevokeAdmin(
        self, request: admin_pb2.RevokeAdminRequest, context: Context
    ) -> admin_pb2.RevokeAdminResponse:
        owner = await self._admin(context, "RevokeAdmin")
        name = _named(request.name, "admin")
        now = self._clock()
        entry = AuditEntry(now, owner.actor, "admin.revoke", f"admin:{name}", "ok")
        revoked = await self._db.call(lambda s: s.revoke_admin(name, now, entry))
        log.warning("admin %s revoked admin %s", owner.name, name)
        return admin_pb2.RevokeAdminResponse(admin=convert.admin_to_pb(revoked))

    @rpc
    async def RenewAdmin(
        self, request: admin_pb2.RenewAdminRequest, context: Context
    ) -> admin_pb2.RenewAdminResponse:
        admin = await self._admin(context, "RenewAdmin")
        presented = peer_certificate(context)
        previous = "" if presented is None else format(presented.serial_number, "x")
        now = self._clock()
        cert = self._ca.sign_csr(
            request.csr_pem, Identity(Role.ADMIN, admin.name),
            self._settings.admin_certificate_lifetime, now,
        )  # fmt: skip
        issued = issued_certificate(cert)
        entry = AuditEntry(
            now, admin.actor, "admin.renew", admin.actor, "ok",
            f"certificate {previous} renewed as {issued.serial}, valid until "
            f"{issued.not_after:%Y-%m-%d %H:%M:%SZ}",
        )  # fmt: skip
        await self._db.call(lambda s: s.renew_admin_certificate(admin.name, issued, entry))
        log.info("admin %s renewed their certificate %s as %s", admin.name, previous,
                 issued.serial)  # fmt: skip
        return admin_pb2.RenewAdminResponse(
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM), ca_pem=self._trusted_pem
        )

    @rpc
    async def CreateToken(
        self, request: admin_pb2.CreateTokenRequest, context: Context
    ) -> admin_pb2.CreateTokenResponse:
        admin = await self._admin(context, "CreateToken")
        try:
            labelspec.check_region(request.region)
            labelspec.check_ring(request.ring)
            token_labels = labelspec.parse_labels(f"{k}={v}" for k, v in request.labels.items())
            token, secret = tokens.new_token(
                request.region,
                request.ring,
                request.uses,
                request.ttl.ToTimedelta(),
                token_labels,
                datetime.now(UTC),
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        entry = AuditEntry(
            datetime.now(UTC), admin.actor, "token.create", token.token_id, "ok",
            f"region {token.region} ring {token.ring} uses {token.uses_allowed}",
        )  # fmt: skip
        await self._db.call(audited(lambda s: s.create_token(token), entry))
        log.info(
            "admin %s created token %s for %s ring %d (%d uses)",
            admin.name,
            token.token_id,
            token.region,
            token.ring,
            token.uses_allowed,
        )
        return admin_pb2.CreateTokenResponse(token=convert.token_to_pb(token), secret=secret)

    @rpc
    async def ListTokens(
        self, request: admin_pb2.ListTokensRequest, context: Context
    ) -> admin_pb2.ListTokensResponse:
        await self._admin(context, "ListTokens")
        found = await self._db.call(lambda s: s.list_tokens())
        return admin_pb2.ListTokensResponse(tokens=[convert.token_to_pb(t) for t in found])

    @rpc
    async def RevokeToken(
        self, request: admin_pb2.RevokeTokenRequest, context: Context
    ) -> admin_pb2.RevokeTokenResponse:
        admin = await self._admin(context, "RevokeToken")
        _named(request.token_id, "enrollment token")
        entry = AuditEntry(datetime.now(UTC), admin.actor, "token.revoke", request.token_id, "ok")
        token = await self._db.call(lambda s: s.revoke_token(request.token_id, entry))
        log.info("admin %s revoked token %s", admin.name, token.token_id)
        return admin_pb2.RevokeTokenResponse(token=convert.token_to_pb(token))

    async def _written_behind(self) -> None:
        """Write the check-ins this replica answered from memory and holds
        (controller/store/heartbeats.py), so that a host read now shows
        what its last check-in said."""
        if self._heartbeats is not None:
            await self._heartbeats.flush()

    @rpc
    async def ListHosts(
        self, request: admin_pb2.ListHostsRequest, context: Context
    ) -> admin_pb2.ListHostsResponse:
        await self._admin(context, "ListHosts")
        await self._written_behind()
        limit = min(request.page_size or 500, 5000)
        ring = request.ring if request.HasField("ring") else None
        found, owes = await self._db.call(
            lambda s: _with_owes(s, s.list_hosts(request.region, ring, request.page_token, limit))
        )
        return admin_pb2.ListHostsResponse(
            hosts=[convert.host_to_pb(h, owes.get(h.host_id, ())) for h in found],
            next_page_token=found[-1].host_id if len(found) == limit else "",
        )

    @rpc
    async def GetHost(
        self, request: admin_pb2.GetHostRequest, context: Context
    ) -> admin_pb2.GetHostResponse:
        await self._admin(context, "GetHost")
        _named(request.host_id, "host")
        await self._written_behind()
        host, packages, updates, owes = await self._db.call(
            lambda s: (
                s.get_host(request.host_id), s.get_inventory(request.host_id),
                s.get_updates(request.host_id), s.owed_by([request.host_id]),
            )
        )  # fmt: skip
        response = admin_pb2.GetHostResponse(
            host=convert.host_to_pb(host, owes.get(host.host_id, ())),
            inventory=convert.packages_to_pb(packages),
        )
        if updates is not None:
            response.updates.CopyFrom(convert.updates_to_pb(*updates))
        return response

    @rpc
    async def RevokeHost(
        self, request: admin_pb2.RevokeHostRequest, context: Context
    ) -> admin_pb2.RevokeHostResponse:
        admin = await self._admin(context, "RevokeHost")
        _named(request.host_id, "host")
        now = datetime.now(UTC)
        entry = AuditEntry(now, admin.actor, "host.revoke", request.host_id, "ok")
        host = await self._db.call(lambda s: s.revoke_host(request.host_id, now, entry))
        self._revoked.add(host.host_id)
        self._engine.left(host.host_id)
        self._engine.metrics.presence.revoked(host.host_id)
        log.warning("admin %s revoked host %s", admin.name, host.host_id)
        return admin_pb2.RevokeHostResponse(host=convert.host_to_pb(host))

    @rpc
    async def RelabelHost(
        self, request: admin_pb2.RelabelHostRequest, context: Context
    ) -> admin_pb2.RelabelHostResponse:
        admin = await self._admin(context, "RelabelHost")
        _named(request.host_id, "host")
        change = Relabel(
            dict(request.set_labels), tuple(request.remove_labels),
            request.region if request.HasField("region") else None,
            request.ring if request.HasField("ring") else None,
        ).checked()  # fmt: skip
        host, detail = await self._db.call(
            lambda s: s.relabel_host(request.host_id, change, admin.actor,
                                     datetime.now(UTC))
        )  # fmt: skip
        if detail:
            if self._heartbeats is not None:
                await self._heartbeats.sync()
            self._engine.metrics.presence.moved(host.host_id, host.ring, host.region)
            log.warning("admin %s relabelled host %s: %s", admin.name, host.host_id, detail)
        return admin_pb2.RelabelHostResponse(host=convert.host_to_pb(host))

    # -- campaigns -------------------------------------------------------------

    async def _campaign(self, campaign_id: str) -> admin_pb2.CampaignResponse:
        record, cells = await self._engine.view(campaign_id)
        return admin_pb2.CampaignResponse(
            campaign=convert.campaign_to_pb(record, cells, self._engine.readable_spec(record))
        )

    @rpc
    async def CreateCampaign(
        self, request: admin_pb2.CreateCampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        admin = await self._admin(context, "CreateCampaign")
        record = await self._engine.create(request.spec, request.source, admin.actor)
        return await self._campaign(record.campaign_id)

    @rpc
    async def ApproveCampaign(
        self, request: admin_pb2.CampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        admin = await self._admin(context, "ApproveCampaign")
        _named(request.campaign_id, "campaign")
        await self._engine.approve(
            request.campaign_id, admin.actor, self._settings.require_second_approver
        )
        return await self._campaign(request.campaign_id)

    @rpc
    async def PauseCampaign(
        self, request: admin_pb2.CampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        admin = await self._admin(context, "PauseCampaign")
        _named(request.campaign_id, "campaign")
        await self._engine.pause(request.campaign_id, admin.actor)
        return await self._campaign(request.campaign_id)

    @rpc
    async def ResumeCampaign(
        self, request: admin_pb2.CampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        admin = await self._admin(context, "ResumeCampaign")
        _named(request.campaign_id, "campaign")
        await self._engine.resume(request.campaign_id, admin.actor)
        return await self._campaign(request.campaign_id)

    @rpc
    async def AbortCampaign(
        self, request: admin_pb2.AbortCampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        admin = await self._admin(context, "AbortCampaign")
        _named(request.campaign_id, "campaign")
        await self._engine.abort(request.campaign_id, admin.actor, request.revert)
        return await self._campaign(request.campaign_id)

    @rpc
    async def GetCampaign(
        self, request: admin_pb2.CampaignRequest, context: Context
    ) -> admin_pb2.CampaignResponse:
        await self._admin(context, "GetCampaign")
        _named(request.campaign_id, "campaign")
        return await self._campaign(request.campaign_id)

    @rpc
    async def ListCampaignHosts(
        self, request: admin_pb2.ListCampaignHostsRequest, context: Context
    ) -> admin_pb2.ListCampaignHostsResponse:
        await self._admin(context, "ListCampaignHosts")
        _named(request.campaign_id, "campaign")
        status = None
        if request.status:
            try:
                status = AssignmentStatus(request.status)
            except ValueError:
                words = ", ".join(s.value for s in AssignmentStatus)
                raise UsageError(
                    f"no host state {limits.quoted_id(request.status)}: one of {words}"
                ) from None
        found, hostnames, reports = await self._db.call(
            lambda s: s.campaign_hosts(request.campaign_id, status)
        )
        return admin_pb2.ListCampaignHostsResponse(
            hosts=convert.campaign_hosts_to_pb(found, hostnames, reports)
        )

    @rpc
    async def ListCampaigns(
        self, request: admin_pb2.ListCampaignsRequest, context: Context
    ) -> admin_pb2.ListCampaignsResponse:
        await self._admin(context, "ListCampaigns")
        # Without each file: a list of megabyte plans would pass any limit.
        campaigns = [
            convert.campaign_to_pb(r, cells, self._engine.readable_spec(r), with_text=False)
            for r, cells in await self._engine.views()
        ]
        return admin_pb2.ListCampaignsResponse(campaigns=campaigns)

    # -- agent releases ----------------------------------------------------------

    @rpc
    async def PublishAgentRelease(
        self,
        request_iterator: AsyncIterator[admin_pb2.PublishAgentReleaseRequest],
        context: Context,
    ) -> admin_pb2.PublishAgentReleaseResponse:
        admin = await self._admin(context, "PublishAgentRelease")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise UsageError(
                "the first message must be the release header (artifact, manifest, signature, "
                "size), then the package's bytes"
            )
        h = first.header
        header = Header(h.artifact, h.manifest, h.signature, h.size)

        async def data() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "data":
                    raise UsageError("only the first message may be a header; then data only")
                yield message.data

        published = await self._releases.publish(header, data(), admin.actor)
        return admin_pb2.PublishAgentReleaseResponse(release=convert.release_to_pb(published))

    @rpc
    async def ListAgentReleases(
        self, request: admin_pb2.ListAgentReleasesRequest, context: Context
    ) -> admin_pb2.ListAgentReleasesResponse:
        await self._admin(context, "ListAgentReleases")
        found = await self._releases.list()
        return admin_pb2.ListAgentReleasesResponse(
            releases=[convert.release_to_pb(r) for r in found]
        )

    # -- audit -----------------------------------------------------------------

    @rpc
    async def VerifyAudit(
        self, request: admin_pb2.VerifyAuditRequest, context: Context
    ) -> admin_pb2.VerifyAuditResponse:
        await self._admin(context, "VerifyAudit")
        held = None
        if request.HasField("checkpoint"):
            held = convert.checkpoint_from_pb(request.checkpoint)
            self._checkpoints.check(held)  # before the long walk: a bad file fails fast
        walk, after = audit.ChainWalk(), 0
        while walk.ok:
            # A page per store call: the walk holds one page, and check-ins
            # are served between pages.
            fed = await self._db.call(functools.partial(_walk_page, walk, after))
            if fed is None:
                break
            after = fed
        verdict = walk.verdict()
        if verdict.ok and held is not None:
            at_seq = await self._db.call(lambda s: s.audit_hash_at(held.seq))
            problem = checkpoint.held(held, verdict.records, at_seq)
            if problem:
                first = held.seq if verdict.records >= held.seq else verdict.records + 1
                verdict = audit.Verdict(False, verdict.records, first, problem)
        return admin_pb2.VerifyAuditResponse(
            ok=verdict.ok,
            records=verdict.records,
            first_broken_seq=verdict.first_broken or 0,
            problem=verdict.problem,
        )

    @rpc
    async def AuditCheckpoint(
        self, request: admin_pb2.AuditCheckpointRequest, context: Context
    ) -> admin_pb2.AuditCheckpointResponse:
        admin = await self._admin(context, "AuditCheckpoint")
        signed = await auditkeeping.checkpoint(self._db, self._checkpoints, datetime.now(UTC))
        log.info("admin %s took an audit checkpoint: %s", admin.name, signed.to_json(indent=None))
        return admin_pb2.AuditCheckpointResponse(checkpoint=convert.checkpoint_to_pb(signed))

    @rpc
    async def GetFleetHistory(
        self, request: admin_pb2.FleetHistoryRequest, context: Context
    ) -> admin_pb2.FleetHistoryResponse:
        await self._admin(context, "GetFleetHistory")
        cells = await self._db.call(lambda s: s.fleet_history())
        return admin_pb2.FleetHistoryResponse(cells=[convert.history_to_pb(c) for c in cells])

    @rpc_stream
    async def ExportAudit(
        self, request: admin_pb2.ExportAuditRequest, context: Context
    ) -> AsyncIterator[admin_pb2.ExportAuditResponse]:
        await self._admin(context, "ExportAudit")
        since = times.from_timestamp(request.since) if request.HasField("since") else None
        after: int | None = 0
        while after is not None:
            # Keyset pagination, one page per store call; the next page is
            # read only once this one was handed to gRPC (flow control).
            messages, after = await self._db.call(functools.partial(_export_page, after, since))
            for message in messages:
                yield message


def _with_owes(store: Store, hosts: list[Host]) -> tuple[list[Host], dict[str, list[str]]]:
    """Hosts, with what each still owes after being patched (one query)."""
    return hosts, store.owed_by([h.host_id for h in hosts])
