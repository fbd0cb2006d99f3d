"""VulnService: importing feeds, exposure views, compliance (issue 15).
Admin certificates only, like AdminService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import grpc
from fleetpatch.v1 import vulns_pb2, vulns_pb2_grpc

from controller.api import times
from controller.api.servicers import audited, rpc
from controller.audit import AuditEntry
from controller.campaigns.errors import CampaignError
from controller.campaigns.spec import parse_campaign
from controller.datadir import Settings
from controller.errors import NotFound, UsageError
from controller.fleet.admins import AdminRecord
from controller.model import CampaignRecord
from controller.rollout.engine import CampaignEngine
from controller.store import Store
from controller.store.thread import StoreThread
from controller.store.vulns import ExposureRow, VulnRecord
from controller.vulns import SEVERITIES, check_severity, policy, releases, versions
from controller.vulns.feeds import MAX_ID, MAX_SUMMARY, Affected, Vuln
from controller.vulns.match import Matcher

Context = grpc.aio.ServicerContext[object, object]

# An import is held in memory until it commits: the full Debian tracker is
# about 120,000 records once merged; a feed larger than this is refused.
MAX_IMPORT_RECORDS = 2_000_000
MAX_AFFECTED = 10_000  # per record
MAX_VERSION = 256


class VulnService(vulns_pb2_grpc.VulnServiceServicer):
    def __init__(
        self,
        db: StoreThread,
        engine: CampaignEngine,
        matcher: Matcher,
        settings: Settings,
        admin: Callable[[Context, str], Awaitable[AdminRecord]],
    ) -> None:
        self._db = db
        self._engine = engine
        self._matcher = matcher
        self._settings = settings
        self._admin = admin

    @rpc
    async def ImportVulns(
        self, request_iterator: AsyncIterator[vulns_pb2.ImportVulnsRequest], context: Context
    ) -> vulns_pb2.ImportVulnsResponse:
        admin = await self._admin(context, "ImportVulns")
        records: list[Vuln] = []
        source, replace, feed_date, committed = "", False, None, False
        async for message in request_iterator:
            if committed:
                raise UsageError("nothing may follow the message that commits an import")
            if not source:
                source, replace = message.source, message.replace
            elif (message.source, message.replace) != (source, replace):
                raise UsageError("every message of an import names the same source")
            records += [_vuln(v) for v in message.vulns]
            if len(records) > MAX_IMPORT_RECORDS:
                raise UsageError(f"a feed of more than {MAX_IMPORT_RECORDS} records is refused")
            if message.commit:
                committed = True
                if message.HasField("feed_date"):
                    feed_date = times.from_timestamp(message.feed_date)
        if not committed:
            raise UsageError("the import ended without its commit message; nothing was changed")
        if source not in ("debian-tracker", "osv"):
            raise UsageError(f"unknown feed source {source!r} (debian-tracker, osv)")
        now = datetime.now(UTC)
        actor = admin.actor
        summary = await self._db.call(
            lambda s: s.import_vulns(source, replace, feed_date, records, now, actor)
        )
        entry = AuditEntry(
            now, actor, "vulns.import", source, "ok",
            f"{summary.records} records, {summary.added} new, {summary.removed} removed",
        )  # fmt: skip
        await self._db.call(audited(lambda s: None, entry))
        self._matcher.wake()
        return vulns_pb2.ImportVulnsResponse(
            source=source, records=summary.records, added=summary.added, removed=summary.removed
        )

    @rpc
    async def ListVulns(
        self, request: vulns_pb2.ListVulnsRequest, context: Context
    ) -> vulns_pb2.ListVulnsResponse:
        await self._admin(context, "ListVulns")
        severity = check_severity(request.min_severity)
        ring = request.ring if request.HasField("ring") else None
        found, sources = await self._db.call(
            lambda s: (s.list_vulns(severity, request.region, ring), s.vuln_sources())
        )
        response = vulns_pb2.ListVulnsResponse()
        for v in found:
            response.vulns.add(
                vuln_id=v.vuln_id, severity=v.severity, published=times.timestamp(v.published),
                hosts=v.hosts, fixable=v.fixable, fixed_versions=v.fixed_versions,
                packages=v.packages, first_seen=times.timestamp(v.first_seen),
            )  # fmt: skip
        for src in sources:
            response.sources.add(
                source=src.source, feed_date=times.timestamp(src.feed_date),
                imported_at=times.timestamp(src.imported_at), imported_by=src.imported_by,
                records=src.records,
            )  # fmt: skip
        return response

    @rpc
    async def GetVuln(
        self, request: vulns_pb2.GetVulnRequest, context: Context
    ) -> vulns_pb2.GetVulnResponse:
        await self._admin(context, "GetVuln")
        name = request.vuln_id

        def read(store: Store) -> tuple[list[VulnRecord], list[ExposureRow]]:
            ids = store.resolve_vuln(name)
            found = [r for r in (store.get_vuln(i) for i in ids) if r is not None]
            return found, store.exposures(vuln_ids=ids)

        found, exposures = await self._db.call(read)
        if not found:
            raise NotFound(f"no imported vulnerability or advisory is named {name!r}")
        names = {name} | {r.vuln_id for r in found} | {a for r in found for a in r.aliases}
        packages = {a[1] for r in found for a in r.affected}
        campaigns = [
            vulns_pb2.CampaignRef(campaign_id=c.campaign_id, name=c.name, state=c.state.value)
            for c, _ in await self._engine.views()
            if _fixes(c, names, packages)
        ]
        return vulns_pb2.GetVulnResponse(
            vulns=[_vuln_pb(r) for r in found],
            exposures=[_exposure_pb(e) for e in exposures],
            campaigns=campaigns,
        )

    @rpc
    async def ListExposures(
        self, request: vulns_pb2.ListExposuresRequest, context: Context
    ) -> vulns_pb2.ListExposuresResponse:
        await self._admin(context, "ListExposures")
        severity = check_severity(request.min_severity)
        ring = request.ring if request.HasField("ring") else None
        names = list(request.vuln_ids)

        def read(store: Store) -> tuple[list[ExposureRow], dict[str, list[list[str]]]]:
            ids: list[str] = []
            for name in names:
                found = store.resolve_vuln(name)
                if not found:
                    raise NotFound(f"no imported vulnerability or advisory is named {name!r}")
                ids += found
            rows = store.exposures(ids, request.host_id, request.open_only, request.region, ring)
            if severity:
                allowed = SEVERITIES[: SEVERITIES.index(severity) + 1]
                rows = [r for r in rows if r.severity in allowed]
            wanted = sorted({r.host_id for r in rows}) if request.with_binaries else []
            return rows, store.inventory_rows(wanted)

        rows, inventories = await self._db.call(read)
        response = vulns_pb2.ListExposuresResponse()
        for row in rows:
            pb = response.exposures.add()
            pb.CopyFrom(_exposure_pb(row))
            for name, version in _binaries(row, inventories.get(row.host_id, [])):
                pb.binaries.add(name=name, version=version)
        return response

    @rpc
    async def GetCompliance(
        self, request: vulns_pb2.ComplianceRequest, context: Context
    ) -> vulns_pb2.ComplianceResponse:
        await self._admin(context, "GetCompliance")
        if request.by not in ("", *policy.GROUPINGS):
            raise UsageError(f"--by {request.by!r}: one of {', '.join(policy.GROUPINGS)}")
        grace = self._settings.compliance_grace

        def read(store: Store) -> policy.Report:
            open_rows = store.exposures(open_only=True)
            covered = {r[0] for r in store.affected_releases()}
            first = store.fleet_first_seen()
            report = policy.compliance(
                store.list_hosts(limit=10_000_000), open_rows, covered, first, grace,
                datetime.now(UTC), request.by,
            )  # fmt: skip
            return policy.Report(
                report.groups, report.breaches, policy.remediation(store.remediations())
            )

        report = await self._db.call(read)
        response = vulns_pb2.ComplianceResponse(
            groups=[
                vulns_pb2.ComplianceGroup(
                    key=g.key, hosts=g.hosts, on_policy=g.on_policy, unassessed=g.unassessed
                )
                for g in report.groups
            ],
            policy=[
                vulns_pb2.GraceOf(severity=k, grace=times.duration(v)) for k, v in grace.items()
            ],
        )
        for b in report.breaches:
            response.out_of_policy.add(
                host_id=b.host_id, group=b.group, vuln_id=b.vuln_id, severity=b.severity,
                package=b.package, fixed=b.fixed, age=times.duration(b.age),
                grace=times.duration(b.grace),
            )  # fmt: skip
        for r in report.remediation:
            response.remediation.add(
                severity=r.severity, count=r.count, mean=times.duration(r.mean),
                p90=times.duration(r.p90),
            )  # fmt: skip
        return response


def _binaries(row: ExposureRow, inventory: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    return releases.binaries_for(releases.os_family(row.os), row.package, inventory)


def _fixes(record: CampaignRecord, names: set[str], packages: set[str]) -> bool:
    """Whether a patch campaign names the vulnerability (its ``fixes``) or
    one of the packages it affects."""
    try:
        spec = parse_campaign(record.spec, record.campaign_id, bounded=False)
    except CampaignError:
        return False
    if spec.patch is None:
        return False
    return bool(names & set(spec.fixes)) or any(p.name in packages for p in spec.patch.packages)


def _vuln(pb: vulns_pb2.Vulnerability) -> Vuln:
    """A record as sent, checked as the CLI checked it: an admin's client
    is not trusted to have read the feed right."""
    if not pb.vuln_id or len(pb.vuln_id) > MAX_ID or not pb.vuln_id.isprintable():
        raise UsageError(f"{pb.vuln_id[:MAX_ID]!r} is not a vulnerability id")
    if pb.severity not in SEVERITIES and not pb.withdrawn:
        raise UsageError(f"{pb.vuln_id}: severity {pb.severity!r} is not one of {SEVERITIES}")
    if len(pb.affected) > MAX_AFFECTED:
        raise UsageError(f"{pb.vuln_id}: more than {MAX_AFFECTED} affected ranges")
    affected = []
    for a in pb.affected:
        family = releases.family(a.release)
        if not a.release or not a.package or len(a.package) > MAX_ID:
            raise UsageError(f"{pb.vuln_id}: an affected range without a release or package")
        for version in (a.introduced, a.fixed):
            if version and (len(version) > MAX_VERSION or not versions.valid(family, version)):
                raise UsageError(
                    f"{pb.vuln_id}: {version[:MAX_VERSION]!r} is not a {family} version"
                )
        affected.append(Affected(a.release, a.package, a.introduced, a.fixed))
    return Vuln(
        pb.vuln_id, pb.severity or "unknown", pb.summary[:MAX_SUMMARY],
        times.from_timestamp(pb.published) if pb.HasField("published") else None,
        times.from_timestamp(pb.modified) if pb.HasField("modified") else None,
        tuple(a[:MAX_ID] for a in pb.aliases), tuple(affected), pb.withdrawn,
    )  # fmt: skip


def _vuln_pb(r: VulnRecord) -> vulns_pb2.Vulnerability:
    return vulns_pb2.Vulnerability(
        vuln_id=r.vuln_id, severity=r.severity, summary=r.summary,
        published=times.timestamp(r.published), modified=times.timestamp(r.modified),
        aliases=r.aliases, source=r.source,
        affected=[
            vulns_pb2.AffectedRange(release=a[0], package=a[1], introduced=a[2], fixed=a[3])
            for a in r.affected
        ],
    )  # fmt: skip


def _exposure_pb(e: ExposureRow) -> vulns_pb2.Exposure:
    return vulns_pb2.Exposure(
        host_id=e.host_id, vuln_id=e.vuln_id, severity=e.severity, package=e.package,
        installed=e.installed, fixed=e.fixed, available=e.available,
        first_seen=times.timestamp(e.first_seen), fixed_at=times.timestamp(e.fixed_at),
        region=e.region, ring=e.ring, os=e.os, published=times.timestamp(e.published),
    )  # fmt: skip
