"""Campaigns at run time: the imperative shell around the pure scheduler.

At each check-in the engine asks `decide` whether this host's turn has
come and, if so, signs and records its work order; progress reports update
the assignments; a periodic tick times out silent orders, halts campaigns
whose budgets are breached and completes finished ones (the rules are
`campaigns.lifecycle`, shared with the simulator). Decisions are
serialized by one lock, and an order is counted as assigned before the
lock is let go, so two check-ins can never both take the last slot of a
concurrency budget. Recording it (the host's next sequence, the signed
order, its audit record) happens after, group-committed with the orders
of other check-ins: an emergency campaign approved for ten thousand hosts
costs a few transactions, not ten thousand in a row. An order the store
refuses (another replica was first) is uncounted again and not handed out.

Counts are kept, not recounted: each open campaign has a `LiveCount`, read
from the store once when the engine starts or the campaign opens, then
told of every check-in, enrollment, revocation, assignment, result and
time-out. A check-in costs the same whether the fleet has a thousand hosts
or a hundred thousand. `check_counts` compares them with a full recount.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.agentrelease import Family
from fleetpatch.debversion import debian_version, rpm_version
from fleetpatch.v1 import types_pb2

from controller.audit import AuditEntry
from controller.campaigns import (
    Assign,
    CampaignError,
    CampaignSpec,
    CampaignState,
    Decision,
    HostFacts,
    Tallies,
    Wait,
    decide,
    parse_campaign,
)
from controller.campaigns.lifecycle import (
    Halt,
    accepted_on_resume,
    order_timed_out,
    revert_due,
    verdict,
)
from controller.campaigns.live import PATCH, REVERT, Counted, LiveCount, Order
from controller.campaigns.scheduler import DecisionKey, decision_key
from controller.campaigns.windows import WindowCache
from controller.errors import Conflict, ControllerUnavailable, NotFound, Refused, UsageError
from controller.metrics.collector import CampaignFigures
from controller.metrics.instruments import Metrics
from controller.metrics.presence import Presence
from controller.model import (
    PATCHED,
    AgentRelease,
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    CellView,
    Host,
)
from controller.periodic import every
from controller.rollout import analysis, workorders
from controller.rollout.tally import count, host_facts
from controller.store.backend import LEADER_LEASE_SECONDS
from controller.store.campaigns import Sealing
from controller.store.thread import GroupCommit, StoreThread

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
LIVE = (CampaignState.RUNNING,)
OPEN = (CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.HALTED)
# A Wait answer holds until its `until` or until the counts change (the
# scheduler's contract, property-tested); hosts that `decide` cannot tell
# apart share it. Kept at most this long all the same, as a safety net.
DECISION_MAX_AGE = 30.0  # seconds
# How long the counts of a draft or approved campaign are kept for `campaign
# show` before they are counted again (a finished one's are kept: its orders
# no longer change).
CLOSED_VIEW_MAX_AGE = 30.0  # seconds
FINISHED = (CampaignState.COMPLETED, CampaignState.ABORTED)
# A replica catching up (`resync`) reads the check-ins since its last read
# less this much (replicas' clocks differ; reading one twice is harmless),
# and counts everything again from the store past this many audit records,
# or after a change it does not follow record by record (a relabel).
SEEN_OVERLAP = timedelta(seconds=60)
CATCH_UP_MAX = 50_000
# The least lease of a leader replica (three ticks otherwise): a loaded
# machine's late tick must not hand the lead around.
MIN_LEADER_LEASE_SECONDS = 10.0
_HOST_UNCOUNTED = ("host.enroll", "host.expire", "host.renew")  # pending hosts, certificates


class CampaignEngine:
    def __init__(
        self,
        db: StoreThread,
        key: Ed25519PrivateKey,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._key = key
        self._clock = clock or (lambda: datetime.now(UTC))
        self._metrics = metrics or Metrics(Presence(timedelta(minutes=5)))
        self._states: Counter[CampaignState] = Counter()  # every campaign, by state
        self._lock = asyncio.Lock()
        self._specs: dict[str, CampaignSpec] = {}
        self._live: list[CampaignRecord] = []
        # Silence and report time-outs run from here at the earliest: while
        # the controller was down, nobody could report to it.
        self._watching_since = self._clock()
        self._counts: dict[str, LiveCount] = {}  # the open campaigns'
        self._closed: dict[str, tuple[tuple[str, datetime], float, Counted]] = {}
        self._waits: dict[tuple[str, DecisionKey], tuple[int, float, Wait]] = {}
        self._windows = WindowCache()
        # Published packages never change (a version may gain a family).
        self._releases: dict[tuple[str, Family], AgentRelease] = {}
        self._no_package: set[tuple[str, str]] = set()  # (campaign, manager) already logged
        # Every order in flight, of any campaign, by host (one at most: a
        # host with one gets no other): read at start, then kept.
        self._in_flight: dict[str, Assignment] = {}
        # Orders decided and counted, being recorded (group-committed).
        self._writer: GroupCommit[Sealing, Assignment | None] = GroupCommit(
            db, lambda s, pending: s.assign_many(pending), "assignment writer"
        )
        self._recording: set[str] = set()  # their hosts
        self._writes: set[asyncio.Future[Assignment | None]] = set()
        self._analysed: dict[str, datetime] = {}  # campaign -> when its analyses were last asked
        # Whether this replica runs the tick (Store.lead); None before the first ask.
        self.leading: bool | None = None
        self._lease = LEADER_LEASE_SECONDS  # three ticks, once run_ticks knows the tick
        # Push (controller.api.push): told which hosts to nudge, and why,
        # when an emergency campaign starts running or a revert is ordered,
        # here or (noticed at the next re-read) on another replica.
        self.on_nudge: Callable[[list[str], str], object] | None = None
        self._urgent_seen: set[tuple[str, str, datetime]] = set()
        # Where the last read from the store left off: (audit head, check-ins since).
        self._synced: tuple[int, datetime] | None = None

    async def start(self) -> None:
        if not self._writer.running:
            self._writer.start()
        since = self._clock() - SEEN_OVERLAP
        head, in_flight = await self._db.call(lambda s: (s.audit_head()[0], s.in_flight()))
        self._in_flight = {a.host_id: a for a in in_flight}
        await self._refresh_live()
        self._synced = (head, since)

    async def close(self) -> None:
        """Record the orders reserved so far, then stop the writer."""
        await self._writer.close()

    async def _recorded_all(self) -> None:
        """Wait until every reserved order is recorded or given up (before
        counting again from the store, so that none is counted twice or lost)."""
        if self._writes:
            await asyncio.wait(list(self._writes))

    async def _refresh_live(self) -> None:
        """Re-read the campaigns: which hand out work, which are counted."""
        records = await self._db.call(lambda s: s.list_campaigns())
        self._states = Counter(CampaignState(r.state) for r in records)
        self._live = sorted(
            (r for r in records if r.state in LIVE or _reverting(r)),
            key=lambda r: r.approved_at or r.created_at,
        )
        counted = {r.campaign_id: r for r in records if r.state in OPEN or _reverting(r)}
        for campaign_id in set(self._counts) - set(counted):
            del self._counts[campaign_id]
        # Kept Wait answers of campaigns that no longer hand out work are dead weight.
        self._waits = {key: wait for key, wait in self._waits.items() if key[0] in counted}
        missing = [r for r in counted.values() if r.campaign_id not in self._counts]
        if missing:
            self._counts.update(await self._build(missing))
        for record in counted.values():
            self._counts[record.campaign_id].set_state(
                CampaignState(record.state), record.accepted_failures, record.accepted_silent
            )
        self._nudge_urgent()

    def _nudge_urgent(self) -> None:
        """Nudge the hosts that urgent work newly waits for: the targeted
        hosts not assigned yet of an emergency campaign just approved or
        resumed; the patched hosts of a campaign just aborted with
        --revert. Each (campaign, state, change) once per replica."""
        for record in self._live:
            live = self._counts.get(record.campaign_id)
            if live is None:
                continue
            if _reverting(record):
                reason = "revert"
            elif record.state == CampaignState.RUNNING and self.spec(record).emergency:
                reason = "campaign"
            else:
                continue
            key = (record.campaign_id, str(record.state), record.updated_at)
            if key in self._urgent_seen:
                continue
            self._urgent_seen.add(key)
            if self.on_nudge is None:
                continue
            reverting = reason == "revert"
            ready = set() if reverting else self._ready(record, live)
            hosts = urgent_hosts(live, reverting, ready)
            log.info("campaign %s: urgent (%s): %d host(s) to nudge", record.campaign_id,
                     reason, len(hosts))  # fmt: skip
            self.on_nudge(hosts, reason)

    async def _build(self, records: Sequence[CampaignRecord]) -> dict[str, LiveCount]:
        """Count these campaigns from the store: the one full read of the fleet."""
        ids = [r.campaign_id for r in records]
        hosts, orders = await self._db.call(
            lambda s: (s.active_places(), {i: s.assignments(i) for i in ids})
        )
        active = [host_facts(h) for h in hosts]
        now = self._clock()
        built = {}
        for record in records:
            built[record.campaign_id] = LiveCount.build(
                self.spec(record), CampaignState(record.state), record.accepted_failures,
                record.accepted_silent, active, [_order(a) for a in orders[record.campaign_id]],
                self._watching_since, now,
            )  # fmt: skip
        return built

    def spec(self, record: CampaignRecord) -> CampaignSpec:
        spec = self._specs.get(record.campaign_id)
        if spec is None:
            spec = parse_campaign(record.spec, record.campaign_id, bounded=False)
            self._specs[record.campaign_id] = spec
        return spec

    def readable_spec(self, record: CampaignRecord) -> CampaignSpec | None:
        """`spec`, or None when the stored file no longer reads (for what a
        listing shows: it must not fail for one campaign)."""
        try:
            return self.spec(record)
        except CampaignError:
            return None

    # -- admin -----------------------------------------------------------------

    async def create(self, text: str, source: str, actor: str) -> CampaignRecord:
        try:
            spec = parse_campaign(text, source or "campaign")
        except CampaignError as exc:
            raise UsageError(str(exc)) from None
        if spec.agent_update is not None:
            await self._published(spec.agent_update.version)
        for item in spec.rollout.analysis:
            problem = await asyncio.to_thread(analysis.check, spec.rollout.prometheus, item)
            if problem is not None:
                raise UsageError(f"rollout.analysis {item.name!r}: {problem}")
        now = self._clock()
        record = CampaignRecord(
            campaign_id="c-" + secrets.token_hex(6),
            name=spec.name,
            spec=text,
            state=CampaignState.DRAFT,
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        entry = AuditEntry(now, actor, "campaign.create", record.campaign_id, "draft", spec.name)
        await self._db.call(lambda s: s.create_campaign(record, entry))
        self._states[CampaignState.DRAFT] += 1
        return record

    async def _published(self, version: str) -> list[AgentRelease]:
        """The published packages of an agent release (at least one);
        NotFound naming how to publish them."""
        found = await self._db.call(lambda s: s.releases_of(version))
        if not found:
            debian = debian_version(version)
            raise NotFound(
                f"agent release {version} is not published (fleetpatch release publish "
                f"fleetpatch-agent_{debian}_<arch>.deb, and for dnf hosts "
                f"fleetpatch-agent-{rpm_version(debian)}-1.<arch>.rpm)"
            )
        return found

    async def _release(self, record: CampaignRecord, host: HostFacts) -> AgentRelease | None:
        """The package of the campaign's agent release for the host's family
        (its package manager); None for a patch campaign, and when none is
        published: the host
        waits (logged once per campaign and package manager) rather than be
        handed another family's package, which its agent would refuse."""
        spec = self.spec(record)
        if spec.agent_update is None:
            return None  # a patch campaign: no package
        version = spec.agent_update.version
        family = Family.of_manager(host.package_manager)
        found = self._releases.get((version, family)) if family is not None else None
        if found is None and family is not None:
            found = await self._db.call(lambda s: s.get_release(version, family))
            if found is not None:
                self._releases[version, family] = found
        if found is None and (record.campaign_id, host.package_manager) not in self._no_package:
            self._no_package.add((record.campaign_id, host.package_manager))
            log.warning(
                "campaign %s: no package of agent release %s for %s hosts (%s first): they "
                "wait until one is published", record.campaign_id, version,
                host.package_manager or "unknown package manager", host.host_id,
            )  # fmt: skip
        return found

    async def _transition(
        self, campaign_id: str, expect: Sequence[str], actor: str, action: str, new: str,
        detail: str = "", *, idempotent: bool = False, **changes: object,
    ) -> CampaignRecord:  # fmt: skip
        """Move a campaign from one of ``expect`` to ``new``, audited; Conflict
        from any other state. ``idempotent``: a campaign already ``new``
        is returned unchanged (a person's verb asked twice succeeds)."""
        now = self._clock()
        entry = AuditEntry(now, actor, action, campaign_id, new, detail)
        done_if = new if idempotent else None
        async with self._lock:
            record = await self._db.call(
                lambda s: s.update_campaign(
                    campaign_id, expect, entry, done_if, state=new, updated_at=now, **changes
                )
            )
            await self._refresh_live()
        log.info("campaign %s: %s by %s -> %s %s", campaign_id, action, actor, new, detail)
        return record

    async def approve(
        self, campaign_id: str, actor: str, second_approver: bool = False
    ) -> CampaignRecord:
        """Approve a draft: it runs. ``second_approver`` (the two-person
        rule, `campaigns.require_second_approver`): the admin who created it
        may not approve it; that refusal is audited and raises Refused. The
        record says who created what the approver approved, and an
        emergency campaign (which ignores windows) says so."""
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        if second_approver and record.state == CampaignState.DRAFT and record.created_by == actor:
            reason = (
                f"campaign {campaign_id} was created by {actor}; with "
                "campaigns.require_second_approver another approver must approve it"
            )
            refused = AuditEntry(
                self._clock(), actor, "campaign.approve", campaign_id, "refused", reason
            )
            await self._db.call(lambda s: s.append_audit(refused))
            raise Refused(reason)
        emergency = "emergency campaign " if self.spec(record).emergency else ""
        detail = f"{emergency}approved by {actor}, created by {record.created_by}"
        return await self._transition(
            campaign_id, [CampaignState.DRAFT], actor, "campaign.approve",
            CampaignState.RUNNING, detail, idempotent=True, approved_at=self._clock(),
        )  # fmt: skip

    async def pause(self, campaign_id: str, actor: str) -> CampaignRecord:
        return await self._transition(
            campaign_id, [CampaignState.RUNNING], actor, "campaign.pause",
            CampaignState.PAUSED, idempotent=True,
        )  # fmt: skip

    async def resume(self, campaign_id: str, actor: str) -> CampaignRecord:
        """Resume a paused or halted campaign. Failures and silent hosts that
        halted it are accepted: the budgets apply to what comes after."""
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        changes: dict[str, object] = {}
        detail = ""
        if record.state == CampaignState.HALTED:
            accepted = accepted_on_resume(self.spec(record), await self._tallies(record))
            changes["accepted_failures"] = dict(accepted.failures)
            changes["accepted_silent"] = dict(accepted.silent)
            changes["halt_kind"], changes["halt_reason"] = None, ""
            detail = f"accepting what halted it: {record.halt_reason}"
        live = self._counts.get(campaign_id)
        if live is not None:
            live.counts.forget_readings()  # asked afresh at the next tick
        self._analysed.pop(campaign_id, None)
        return await self._transition(
            campaign_id, [CampaignState.PAUSED, CampaignState.HALTED], actor,
            "campaign.resume", CampaignState.RUNNING, detail, idempotent=True, **changes,
        )  # fmt: skip

    async def abort(self, campaign_id: str, actor: str, revert: bool) -> CampaignRecord:
        if revert:
            record = await self._db.call(lambda s: s.get_campaign(campaign_id))
            if self.spec(record).agent_update is not None:
                raise UsageError(
                    f"campaign {campaign_id} updates the agent, which --revert cannot undo: abort "
                    "it without --revert (hosts whose new agent fails its checks go back by "
                    "themselves)"
                )
            if record.state == CampaignState.ABORTED and not record.revert_requested:
                raise Conflict(
                    f"campaign {campaign_id} was aborted without --revert; it cannot be "
                    "reverted afterwards"
                )
        return await self._transition(
            campaign_id,
            [CampaignState.DRAFT, *OPEN, CampaignState.APPROVED],
            actor, "campaign.abort", CampaignState.ABORTED,
            "and revert patched hosts" if revert else "", idempotent=True,
            revert_requested=int(revert),
        )  # fmt: skip

    async def _counted(self, record: CampaignRecord) -> Counted:
        return (await self._counted_all([record]))[record.campaign_id]

    async def _counted_all(self, records: Sequence[CampaignRecord]) -> dict[str, Counted]:
        """The campaigns' counts: kept ones for open campaigns; the others
        are counted from the store, all in one read, and kept until they
        change (a draft's for CLOSED_VIEW_MAX_AGE: hosts come and go)."""
        found: dict[str, Counted] = {}
        missing = []
        now = time.monotonic()
        for record in records:
            live = self._counts.get(record.campaign_id)
            cached = self._closed.get(record.campaign_id)
            if live is not None:
                found[record.campaign_id] = live.counted(self._clock())
            elif (
                cached is not None
                and cached[0] == _version(record)
                and (record.state in FINISHED or now - cached[1] < CLOSED_VIEW_MAX_AGE)
            ):
                found[record.campaign_id] = cached[2]
            else:
                missing.append(record)
        if missing:
            built = await self._build(missing)
            for record in missing:
                counted = built[record.campaign_id].counted(self._clock())
                self._closed[record.campaign_id] = (_version(record), now, counted)
                found[record.campaign_id] = counted
        return found

    async def _tallies(self, record: CampaignRecord) -> Tallies:
        live = self._counts.get(record.campaign_id)
        if live is not None:
            return live.tallies(self._clock())
        return (await self._counted(record)).tallies

    async def view(self, campaign_id: str) -> tuple[CampaignRecord, list[CellView]]:
        """The campaign and, per ring x region, its counts and why hosts wait."""
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        owed = await self._db.call(lambda s: s.owed(campaign_id))
        releases = await self._db.call(lambda s: s.list_releases())
        return record, self._cells(record, await self._counted(record), owed, releases)

    async def views(self) -> list[tuple[CampaignRecord, list[CellView]]]:
        """`view` of every campaign (counting the fleet once at most)."""
        records = await self._db.call(lambda s: s.list_campaigns())
        counted = await self._counted_all(records)
        owed = await self._db.call(
            lambda s: {r.campaign_id: s.owed(r.campaign_id) for r in records}
        )
        releases = await self._db.call(lambda s: s.list_releases())
        return [
            (r, self._cells(r, counted[r.campaign_id], owed[r.campaign_id], releases))
            for r in records
        ]

    def _cells(
        self, record: CampaignRecord, counted: Counted,
        owed: dict[tuple[int, str], dict[str, int]], releases: Sequence[AgentRelease] = (),
    ) -> list[CellView]:  # fmt: skip
        """Counts per cell and why its waiting hosts wait. In an agent-update
        campaign, a host whose turn has come but whose package family has
        no package of the release published waits for one (`_release`):
        ``no_rpm_release`` (``no_deb_release``), or ``no_package_family``
        for a host of neither family, rather than "ready"."""
        spec = self.spec(record)
        now = self._clock()
        tallies = counted.tallies
        reasons: dict[tuple[int, str], dict[str, int]] = {}
        soonest: dict[tuple[int, str], datetime] = {}
        version = spec.agent_update.version if spec.agent_update is not None else None
        published = {r.family for r in releases if r.version == version}
        for facts, cell, hosts in counted.waiting:
            decision = decide(spec, facts, tallies, now, self._windows)
            label = "ready" if isinstance(decision, Assign) else decision.reason.value
            if label == "ready" and version is not None:
                family = Family.of_manager(facts.package_manager)
                if family is None:
                    label = "no_package_family"
                elif family not in published:
                    label = f"no_{family}_release"
            reasons.setdefault(cell, {})
            reasons[cell][label] = reasons[cell].get(label, 0) + hosts
            if isinstance(decision, Wait) and decision.until is not None:
                soonest[cell] = min(soonest.get(cell, decision.until), decision.until)
        cells = []
        for (ring, region), tally in sorted(tallies.cells.items()):
            counts = {
                "eligible": tally.eligible, "waiting": tally.outstanding + tally.unreachable,
                "in_flight": tally.in_flight, "succeeded": tally.succeeded, "failed": tally.failed,
                "reverted": tally.reverted, "revert_failed": tally.revert_failed,
                "timed_out": tally.timed_out, "unreachable": tally.unreachable,
                "silent": tally.silent,
                "pending_reboot": owed.get((ring, region), {}).get("pending_reboot", 0),
                "pending_restart": owed.get((ring, region), {}).get("pending_restart", 0),
            }  # fmt: skip
            cells.append(
                CellView(ring, region, counts, reasons.get((ring, region), {}),
                         soonest.get((ring, region)))
            )  # fmt: skip
        return cells

    def figures(self) -> tuple[tuple[CampaignFigures, ...], dict[CampaignState, int]]:
        """The open campaigns' kept counts and every campaign's state, for a
        metrics scrape: read from memory, never from the store. Call it on
        the engine's event loop."""
        now = self._clock()
        open_ = tuple(
            CampaignFigures(campaign_id, live.spec, live.tallies(now))
            for campaign_id, live in sorted(self._counts.items())
        )
        return open_, dict(self._states)

    # -- the check-in path -----------------------------------------------------

    @property
    def metrics(self) -> Metrics:
        """The controller's metrics, which the servicers add to as well."""
        return self._metrics

    @property
    def busy(self) -> bool:
        """Whether any campaign is counted (else check-ins skip the engine)."""
        return bool(self._counts)

    def joined(self, host: Host) -> None:
        """A host enrolled: the open campaigns that target it count it."""
        now = self._clock()
        for live in self._counts.values():
            live.join(host_facts(host), now)

    def left(self, host_id: str) -> None:
        """A host was revoked: no campaign counts it any more."""
        for live in self._counts.values():
            live.leave(host_id)

    async def order_for(
        self, host: HostFacts, highest_sequence: int
    ) -> types_pb2.SignedEnvelope | None:
        """Count the host's check-in; the work order it should carry out
        now, if any.

        A host with an order in flight gets it again only if it never
        received it (its highest accepted sequence is below the order's).
        The decision is made under the engine's lock; the order is recorded
        after it, group-committed with those of other check-ins (counted as
        assigned meanwhile, so no budget is taken twice), and handed out only
        once it is durable.
        """
        async with self._lock:
            now = self._clock()
            for live in self._counts.values():
                live.seen(host, now)
            if not self._live or host.host_id in self._recording:
                return None
            current = self._in_flight.get(host.host_id)
            if current is not None:
                if highest_sequence < current.sequence:
                    return types_pb2.SignedEnvelope.FromString(current.envelope)
                return None
            for record in self._live:
                reserved = await self._consider(record, host, now)
                if reserved is not None:
                    break
            else:
                return None
        assignment = await self._record(reserved)
        return None if assignment is None else types_pb2.SignedEnvelope.FromString(
            assignment.envelope
        )  # fmt: skip

    async def _consider(
        self, record: CampaignRecord, host: HostFacts, now: datetime
    ) -> Reserved | None:
        live = self._counts.get(record.campaign_id)
        if live is None or host.host_id not in live.members:
            return None  # not targeted (the members are the targeted, active hosts)
        patch = live.status_of(host.host_id)
        if record.state == CampaignState.ABORTED:
            if patch is None or not revert_due(
                patch.status in PATCHED, host.host_id in live.reverting
            ):
                return None
            return await self._reserve(record, host, REVERT, now, None, patch.order_id)
        if patch is not None:
            return None
        decision = self._decide(record, live, host, now)
        updates_agent = self.spec(record).agent_update is not None
        release = await self._release(record, host) if isinstance(decision, Assign) else None
        if not isinstance(decision, Assign) or (updates_agent and release is None):
            return None
        return await self._reserve(
            record, host, PATCH, now, decision.window_closes_at, "", release=release
        )

    def _ready(self, record: CampaignRecord, live: LiveCount) -> set[DecisionKey]:
        """The groups of hosts not assigned yet whose turn has come now (one
        `decide` per group, not per host): a ring that has not opened yet
        is not nudged."""
        now = self._clock()
        tallies = live.tallies(now)
        spec = self.spec(record)
        return {
            decision_key(facts) for facts, _, _ in live.waiting()
            if isinstance(decide(spec, facts, tallies, now, self._windows), Assign)
        }  # fmt: skip

    def _decide(
        self, record: CampaignRecord, live: LiveCount, facts: HostFacts, now: datetime
    ) -> Decision:
        """`decide`, answered from the last Wait of a host alike while it holds."""
        key = (record.campaign_id, decision_key(facts))
        cached = self._waits.get(key)
        tallies = live.tallies(now)
        if cached is not None:
            version, asked, wait = cached
            fresh = version == live.version and time.monotonic() - asked < DECISION_MAX_AGE
            if fresh and (wait.until is None or now < wait.until):
                return wait
        decision = decide(self.spec(record), facts, tallies, now, self._windows)
        if isinstance(decision, Wait):
            self._waits[key] = (live.version, time.monotonic(), decision)
        else:
            self._waits.pop(key, None)
        return decision

    async def check_counts(self, campaign_id: str) -> list[str]:
        """Differences between the kept counts of an open campaign and a full
        recount from the store ([] when they agree): the consistency check."""
        live = self._counts.get(campaign_id)
        if live is None:
            return []
        record, hosts, assignments = await self._db.call(
            lambda s: (
                s.get_campaign(campaign_id), s.list_hosts(limit=10_000_000),
                s.assignments(campaign_id),
            )
        )  # fmt: skip
        now = self._clock()
        kept = live.tallies(now)
        full = count(self.spec(record), record, hosts, assignments, now, self._watching_since)
        return _differences(kept, full.tallies)

    async def _reserve(
        self, record: CampaignRecord, host: HostFacts, kind: AssignmentKind, now: datetime,
        window_closes_at: datetime | None, reverts: str, release: AgentRelease | None = None,
    ) -> Reserved:  # fmt: skip
        """Count an order for the host as assigned (under the lock), to be
        recorded by `_record`; what it will say, but for the host's order
        sequence, which the store gives when it records it."""
        spec = self.spec(record)
        order_id = "o-" + secrets.token_hex(8)
        action = str(kind)
        make: Callable[[int], types_pb2.WorkOrder]
        if kind == REVERT:

            def make(sequence: int) -> types_pb2.WorkOrder:
                return workorders.revert_order(
                    record.campaign_id, order_id, host.host_id, sequence, now, reverts
                )

        elif spec.agent_update is not None:
            action = "agent-update"
            if release is None:
                raise ValueError(f"campaign {record.campaign_id}: no agent package for this host")
            family = Family.of_manager(host.package_manager)
            update = release

            def make(sequence: int) -> types_pb2.WorkOrder:
                return workorders.agent_update_order(
                    spec, update, record.campaign_id, order_id, host.host_id, sequence, now,
                    window_closes_at, family,
                )  # fmt: skip

        else:
            baseline = spec.patch.baseline if spec.patch is not None else None
            resolved: list[tuple[str, str]] = []
            if baseline is not None:
                resolved = await self._db.call(
                    lambda s: s.baseline_packages(
                        host.host_id, baseline.min_severity, baseline.older_than, now
                    )
                )

            def make(sequence: int) -> types_pb2.WorkOrder:
                return workorders.patch_order(
                    spec, record.campaign_id, order_id, host.host_id, sequence, now,
                    window_closes_at, resolved,
                )  # fmt: skip

        key = self._key

        def seal(sequence: int) -> tuple[Assignment, AuditEntry]:
            """The signed order with the host's next sequence (on the store
            thread, inside the transaction that records it)."""
            envelope = workorders.sign(make(sequence), key)
            assignment = Assignment(
                order_id=order_id, campaign_id=record.campaign_id, host_id=host.host_id,
                kind=kind, ring=host.ring, region=host.region, sequence=sequence,
                envelope=envelope.SerializeToString(), status=AssignmentStatus.IN_FLIGHT,
                assigned_at=now,
            )  # fmt: skip
            entry = AuditEntry(
                now, "controller", f"order.assign.{action}", order_id, "assigned",
                f"campaign {record.campaign_id} host {host.host_id} ring {host.ring} "
                f"region {host.region} sequence {sequence}",
            )  # fmt: skip
            return assignment, entry

        live = self._counts[record.campaign_id]
        was_reverting = host.host_id in live.reverting
        live.assigned(host.host_id, order_id, kind, host.ring, now)
        self._recording.add(host.host_id)
        return Reserved(record.campaign_id, host.host_id, order_id, kind, action, live,
                        was_reverting, seal)  # fmt: skip

    async def _record(self, reserved: Reserved) -> Assignment | None:
        """Record a reserved order (group-committed with others); None when
        the store refused it (another replica was first). What is kept here
        follows the store whatever happens to the caller meanwhile."""
        written = self._writer.enqueue((reserved.host_id, reserved.seal))
        written.add_done_callback(lambda done: self._recorded(reserved, done))
        self._writes.add(written)
        return await asyncio.shield(written)

    def _recorded(self, reserved: Reserved, done: asyncio.Future[Assignment | None]) -> None:
        self._writes.discard(done)
        self._recording.discard(reserved.host_id)
        failed = done.cancelled() or done.exception() is not None
        assignment = None if failed else done.result()
        if assignment is None:
            reserved.live.unassigned(
                reserved.host_id, reserved.order_id, reserved.kind, reserved.was_reverting
            )
            if not failed:
                log.info("campaign %s: host %s was assigned meanwhile by another replica",
                         reserved.campaign_id, reserved.host_id)  # fmt: skip
            return
        self._in_flight[reserved.host_id] = assignment
        log.info("campaign %s: %s order %s to host %s", reserved.campaign_id, reserved.action,
                 reserved.order_id, reserved.host_id)  # fmt: skip

    # -- results and the periodic tick ----------------------------------------

    async def on_results(
        self, host_id: str, results: Sequence[tuple[str, str, str, str, datetime]]
    ) -> None:
        if not results:
            return
        applied = await self._db.call(lambda s: s.apply_results(host_id, results))
        in_flight = {change.order_id for change in applied}
        for order_id, step, _, _, at in results:
            if order_id in in_flight:
                self._metrics.reported(order_id, step, at)
        changed: dict[str, None] = {}
        for change in applied:
            current = self._in_flight.get(host_id)
            if change.status is not None and current and current.order_id == change.order_id:
                del self._in_flight[host_id]
            live = self._counts.get(change.campaign_id)
            flight = live.in_flight.get(change.order_id) if live is not None else None
            if change.status is not None:
                kind = flight.kind if flight is not None else AssignmentKind.PATCH
                self._metrics.finished(change.order_id, kind, change.status, change.at)
            if live is not None:
                if change.status is None:
                    live.reported(change.order_id, change.at)
                else:
                    live.finished(change.order_id, change.status, change.at)
            changed[change.campaign_id] = None
        for campaign_id in changed:
            await self._evaluate(campaign_id)

    async def tick(self) -> None:
        """Time out silent orders, halt breached campaigns, complete finished ones."""
        records = await self._db.call(lambda s: s.list_campaigns())
        now = self._clock()
        for record in records:
            if record.state in OPEN:
                await self._time_out_late(record, now)
                await self._analyse(record, now)
                await self._evaluate(record.campaign_id)

    async def _analyse(self, record: CampaignRecord, now: datetime) -> None:
        """Ask a running campaign's analyses, when their interval is up."""
        live = self._counts.get(record.campaign_id)
        spec = self.spec(record)
        if live is None or record.state != CampaignState.RUNNING or not spec.rollout.analysis:
            return
        last = self._analysed.get(record.campaign_id)
        if last is not None and now - last < spec.rollout.analysis_interval:
            return
        self._analysed[record.campaign_id] = now
        url = spec.rollout.prometheus
        readings = await asyncio.gather(
            *(asyncio.to_thread(analysis.read, url, item, now) for item in spec.rollout.analysis)
        )
        for item, reading in zip(spec.rollout.analysis, readings, strict=True):
            if reading.value is None:
                log.warning("campaign %s: analysis %s: %s", record.campaign_id, item.name,
                            reading.detail)  # fmt: skip
            live.counts.read(item.name, reading)

    async def _time_out_late(self, record: CampaignRecord, now: datetime) -> None:
        live = self._counts.get(record.campaign_id)
        if live is None:
            return
        spec = self.spec(record)
        late = [
            order_id for order_id, flight in live.in_flight.items()
            if order_timed_out(spec, flight.last_report_at, self._watching_since, now)
        ]  # fmt: skip
        if late:
            seen = {order_id: live.in_flight[order_id].last_report_at for order_id in late}
            timed_out = await self._db.call(lambda s: s.time_out(late, now, seen))
            for order_id in timed_out:
                flight = live.in_flight.get(order_id)
                if flight is not None:
                    self._in_flight.pop(flight.host_id, None)
                    self._metrics.finished(order_id, flight.kind, AssignmentStatus.TIMED_OUT, now)
                live.finished(order_id, AssignmentStatus.TIMED_OUT, now)
            log.warning("campaign %s: %d order(s) timed out", record.campaign_id, len(timed_out))

    async def _evaluate(self, campaign_id: str) -> None:
        if self.leading is False:
            return  # halting and completing is the leading replica's
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        if record.state != CampaignState.RUNNING:
            return
        outcome = verdict(self.spec(record), await self._tallies(record), self._clock())
        try:
            if isinstance(outcome, Halt):
                halt = outcome.reason
                await self._transition(
                    campaign_id, [CampaignState.RUNNING], "controller", "campaign.halt",
                    CampaignState.HALTED, halt.message,
                    halt_kind=halt.kind, halt_reason=halt.message,
                )  # fmt: skip
                self._metrics.halted(halt.kind)
            elif outcome is not None:
                await self._transition(
                    campaign_id, [CampaignState.RUNNING], "controller", "campaign.complete",
                    CampaignState.COMPLETED,
                )  # fmt: skip
        except Conflict:
            pass  # a person changed it meanwhile: theirs wins

    async def run_ticks(self, interval: float, stop: asyncio.Event) -> None:
        """Tick every ``interval`` seconds while this replica leads (always
        on SQLite; on PostgreSQL, one replica of those sharing the database)."""
        # A leader not heard from for three ticks loses the lead (PostgreSQL).
        self._lease = max(3 * interval, MIN_LEADER_LEASE_SECONDS)
        await every(interval, stop, self.tick_if_leading, "campaign tick")

    async def tick_if_leading(self) -> None:
        lease = self._lease
        try:
            leading, shared = await self._db.call(lambda s: (s.lead(lease), s.shared))
        except ControllerUnavailable:
            # Who leads cannot be told: not this one, until it can be again
            # (the lock went with the connection, if it was held here).
            if self.leading:
                log.warning("not running the campaign tick while the database cannot be reached")
            self.leading = False
            raise
        counted = self.leading is not None
        if leading != self.leading:
            if leading:
                log.info("leading: this controller runs the campaign tick")
            else:
                log.info("another controller replica runs the campaign tick")
        self.leading = leading
        if shared and counted:
            # Other replicas assign, report and approve too, and tell only
            # their own counts: count again from the database, so that a
            # tick (and the next decisions here) see what they did.
            await self.resync()
        if leading:
            await self.tick()

    async def resync(self) -> None:
        """Catch up with what other replicas did (once per tick when
        replicas share the database): their orders, results and time-outs
        from the audit trail after the last record read, their hosts'
        check-ins since the last read. Costs what changed, not the fleet;
        counts everything again (the full read `start` makes) when too much
        changed to follow or something it does not follow record by record."""
        async with self._lock:
            await self._recorded_all()
            if self._synced is not None and await self._catch_up(*self._synced):
                await self._refresh_live()
                return
            self._counts.clear()
            self._waits.clear()  # kept against counts that are gone
            await self.start()

    async def _catch_up(self, head: int, since: datetime) -> bool:
        """Apply the changes after audit record ``head`` and the check-ins
        after ``since``; False (nothing applied) when a full count is due."""
        now = self._clock()
        records, seen = await self._db.call(
            lambda s: (s.audit_page(head, CATCH_UP_MAX + 1), s.active_places(seen_since=since))
        )
        if len(records) > CATCH_UP_MAX:
            return False
        actions = [r.entry.action for r in records]
        if any(a.startswith("host.") and a != "host.revoke" and not a.startswith(_HOST_UNCOUNTED)
               for a in actions):  # fmt: skip
            return False
        assigned = [r.entry.target for r in records if r.entry.action.startswith("order.assign.")]
        orders = {a.order_id: a for a in await self._db.call(
            lambda s: s.assignments_by_id(assigned))} if assigned else {}  # fmt: skip
        for record in records:
            entry = record.entry
            if entry.action.startswith("order.assign.") and entry.target in orders:
                self._caught_assigned(orders[entry.target])
            elif entry.action in ("order.result", "order.timeout"):
                self._caught_finished(entry.target, AssignmentStatus(entry.outcome), entry.at)
            elif entry.action == "host.revoke":
                self._in_flight.pop(entry.target, None)
                self.left(entry.target)
        for host in seen:
            facts = host_facts(host)
            for live in self._counts.values():
                live.seen(facts, host.last_seen or now)
        self._synced = (records[-1].seq if records else head, now - SEEN_OVERLAP)
        return True

    def _caught_assigned(self, order: Assignment) -> None:
        """An order recorded through any replica (this one's are known)."""
        live = self._counts.get(order.campaign_id)
        if live is None or order.order_id in live.in_flight:
            return  # not counted here, or known
        if (
            (order.host_id in live.reverting)
            if order.kind == REVERT
            else (order.host_id in live.patches)
        ):
            return  # known, and finished since
        live.assigned(order.host_id, order.order_id, order.kind, order.ring, order.assigned_at)
        current = self._in_flight.get(order.host_id)
        if current is None or current.sequence < order.sequence:
            self._in_flight[order.host_id] = order  # handed out again if the host never got it

    def _caught_finished(self, order_id: str, status: AssignmentStatus, at: datetime) -> None:
        """An order's final status, recorded through any replica."""
        for live in self._counts.values():
            flight = live.in_flight.get(order_id)
            if flight is None:
                continue  # known already (or not counted here)
            current = self._in_flight.get(flight.host_id)
            if current is not None and current.order_id == order_id:
                del self._in_flight[flight.host_id]
            live.finished(order_id, status, at)


@dataclass(frozen=True)
class Reserved:
    """An order decided and counted, not recorded yet."""

    campaign_id: str
    host_id: str
    order_id: str
    kind: AssignmentKind
    action: str  # for the log: patch, revert, agent-update
    live: LiveCount  # the counts that took it
    was_reverting: bool  # the host had been sent a revert before
    seal: Callable[[int], tuple[Assignment, AuditEntry]]


def urgent_hosts(live: LiveCount, reverting: bool, ready: set[DecisionKey]) -> list[str]:
    """The hosts of a campaign that urgent work waits for: with
    ``reverting``, the patched ones not sent a revert yet; otherwise the
    targeted ones not assigned yet whose group is ``ready``."""
    if reverting:
        return [
            host_id for host_id, patch in live.patches.items()
            if patch.status in PATCHED and host_id not in live.reverting
        ]  # fmt: skip
    return [
        host_id for host_id, member in live.members.items()
        if member.key in ready and live.status_of(host_id) is None
    ]  # fmt: skip


def _reverting(record: CampaignRecord) -> bool:
    """Aborted with --revert: it still hands out reverts."""
    return record.state == CampaignState.ABORTED and record.revert_requested


def _order(a: Assignment) -> Order:
    return Order(
        a.order_id, a.host_id, a.kind, a.ring, a.status, a.last_report_at or a.assigned_at,
        a.finished_at,
    )  # fmt: skip


def _differences(kept: Tallies, full: Tallies) -> list[str]:
    found = [
        f"ring {ring} region {region}: kept {kept.cell(ring, region)}, "
        f"counted {full.cell(ring, region)}"
        for ring, region in sorted(set(kept.cells) | set(full.cells))
        if kept.cell(ring, region) != full.cell(ring, region)
    ]
    if dict(kept.ring_finished_at) != dict(full.ring_finished_at):
        found.append(f"rings finished: kept {dict(kept.ring_finished_at)}, "
                     f"counted {dict(full.ring_finished_at)}")  # fmt: skip
    return found


def _version(record: CampaignRecord) -> tuple[str, datetime]:
    """Changes whenever the campaign does."""
    return record.state, record.updated_at
