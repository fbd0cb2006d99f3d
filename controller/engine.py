"""Campaigns at run time: the imperative shell around the pure scheduler.

At each check-in the engine asks `decide` whether this host's turn has
come and, if so, signs and records its work order; progress reports update
the assignments; a periodic tick times out silent orders, halts campaigns
whose budgets are breached and completes finished ones. Decisions and
assignments are serialized by one lock, so two check-ins can never both
take the last slot of a concurrency budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.debversion import debian_version
from fleetpatch.v1 import types_pb2

from . import workorders
from .audit import AuditEntry
from .campaigns import (
    Assign,
    CampaignError,
    CampaignSpec,
    CampaignState,
    Wait,
    decide,
    is_targeted,
    parse_campaign,
)
from .campaigns.lifecycle import (
    Halt,
    accepted_on_resume,
    order_timed_out,
    revert_due,
    verdict,
)
from .errors import Conflict, NotFound, UsageError
from .model import AgentRelease, Assignment, AssignmentStatus, CampaignRecord, Host
from .storethread import StoreThread
from .tally import Count, count, host_facts

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
LIVE = (CampaignState.RUNNING.value,)
TALLY_MAX_AGE = 1.0  # seconds
OPEN = (CampaignState.RUNNING.value, CampaignState.PAUSED.value, CampaignState.HALTED.value)


@dataclass(frozen=True)
class CellView:
    """One ring x region row of `campaign show`."""

    ring: int
    region: str
    counts: dict[str, int]
    waiting_reasons: dict[str, int]
    next_change: datetime | None


class CampaignEngine:
    def __init__(self, db: StoreThread, key: Ed25519PrivateKey, clock: Clock | None = None) -> None:
        self._db = db
        self._key = key
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._specs: dict[str, CampaignSpec] = {}
        self._live: list[CampaignRecord] = []
        # Silence and report time-outs run from here at the earliest: while
        # the controller was down, nobody could report to it.
        self._watching_since = self._clock()
        # Counting a campaign reads every host: at each check-in that would
        # be O(fleet). Counts are cached until anything they depend on
        # changes (an assignment, a result, a time-out, a state change bumps
        # the version) or TALLY_MAX_AGE passes (silence depends on time).
        self._version = 0
        self._tallies: dict[str, tuple[int, float, Count, list[Assignment]]] = {}
        self._releases: dict[str, AgentRelease] = {}  # published versions never change

    async def start(self) -> None:
        await self._refresh_live()

    async def _refresh_live(self) -> None:
        records = await self._db.call(lambda s: s.list_campaigns())
        self._live = sorted(
            (
                r
                for r in records
                if r.state in LIVE or (r.revert_requested and r.state == "aborted")
            ),
            key=lambda r: r.approved_at or r.created_at,
        )

    def spec(self, record: CampaignRecord) -> CampaignSpec:
        spec = self._specs.get(record.campaign_id)
        if spec is None:
            spec = parse_campaign(record.spec, record.campaign_id)
            self._specs[record.campaign_id] = spec
        return spec

    # -- admin -----------------------------------------------------------------

    async def create(self, text: str, source: str, actor: str) -> CampaignRecord:
        try:
            spec = parse_campaign(text, source or "campaign")
        except CampaignError as exc:
            raise UsageError(str(exc)) from None
        if spec.agent_update is not None:
            await self._release(spec.agent_update.version)
        now = self._clock()
        record = CampaignRecord(
            campaign_id="c-" + secrets.token_hex(6),
            name=spec.name,
            spec=text,
            state=CampaignState.DRAFT.value,
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        entry = AuditEntry(now, actor, "campaign.create", record.campaign_id, "draft", spec.name)
        await self._db.call(lambda s: s.create_campaign(record, entry))
        return record

    async def _release(self, version: str) -> AgentRelease:
        """A published agent release; NotFound naming how to publish it."""
        found = self._releases.get(version)
        if found is None:
            found = await self._db.call(lambda s: s.get_release(version))
            if found is None:
                raise NotFound(
                    f"agent release {version} is not published (fleetpatch release publish "
                    f"fleetpatch-agent_{debian_version(version)}_<arch>.deb)"
                )
            self._releases[version] = found
        return found

    async def _transition(
        self, campaign_id: str, expect: Sequence[str], actor: str, action: str, new: str,
        detail: str = "", **changes: object,
    ) -> CampaignRecord:  # fmt: skip
        now = self._clock()
        entry = AuditEntry(now, actor, action, campaign_id, new, detail)
        async with self._lock:
            record = await self._db.call(
                lambda s: s.update_campaign(
                    campaign_id, expect, entry, state=new, updated_at=now, **changes
                )
            )
            await self._refresh_live()
            self._changed()
        log.info("campaign %s: %s by %s -> %s %s", campaign_id, action, actor, new, detail)
        return record

    async def approve(self, campaign_id: str, actor: str) -> CampaignRecord:
        return await self._transition(
            campaign_id, [CampaignState.DRAFT.value], actor, "campaign.approve",
            CampaignState.RUNNING.value, approved_at=self._clock(),
        )  # fmt: skip

    async def pause(self, campaign_id: str, actor: str) -> CampaignRecord:
        return await self._transition(
            campaign_id, [CampaignState.RUNNING.value], actor, "campaign.pause",
            CampaignState.PAUSED.value,
        )  # fmt: skip

    async def resume(self, campaign_id: str, actor: str) -> CampaignRecord:
        """Resume a paused or halted campaign. Failures and silent hosts that
        halted it are accepted: the budgets apply to what comes after."""
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        changes: dict[str, object] = {}
        detail = ""
        if record.state == CampaignState.HALTED.value:
            accepted = accepted_on_resume(self.spec(record), (await self._count(record)).tallies)
            changes["accepted_failures"] = dict(accepted.failures)
            changes["accepted_silent"] = dict(accepted.silent)
            changes["halt_kind"], changes["halt_reason"] = "", ""
            detail = f"accepting what halted it: {record.halt_reason}"
        return await self._transition(
            campaign_id, [CampaignState.PAUSED.value, CampaignState.HALTED.value], actor,
            "campaign.resume", CampaignState.RUNNING.value, detail, **changes,
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
        return await self._transition(
            campaign_id,
            [CampaignState.DRAFT.value, *OPEN, CampaignState.APPROVED.value],
            actor, "campaign.abort", CampaignState.ABORTED.value,
            "and revert patched hosts" if revert else "", revert_requested=int(revert),
        )  # fmt: skip

    async def _count(self, record: CampaignRecord) -> Count:
        return (await self._snapshot(record))[0]

    async def view(self, campaign_id: str) -> tuple[CampaignRecord, list[CellView]]:
        """The campaign and, per ring x region, its counts and why hosts wait."""
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        spec = self.spec(record)
        counted = await self._count(record)
        now = self._clock()
        reasons: dict[tuple[int, str], dict[str, int]] = {}
        soonest: dict[tuple[int, str], datetime] = {}
        for facts in counted.unassigned:
            key = (facts.ring, facts.region)
            decision = decide(spec, facts, counted.tallies, now)
            label = "ready" if isinstance(decision, Assign) else decision.reason.value
            reasons.setdefault(key, {})
            reasons[key][label] = reasons[key].get(label, 0) + 1
            if isinstance(decision, Wait) and decision.until is not None:
                soonest[key] = min(soonest.get(key, decision.until), decision.until)
        cells = []
        for (ring, region), tally in sorted(counted.tallies.cells.items()):
            counts = {
                "eligible": tally.eligible, "waiting": tally.outstanding + tally.unreachable,
                "in_flight": tally.in_flight, "succeeded": tally.succeeded, "failed": tally.failed,
                "reverted": tally.reverted, "revert_failed": tally.revert_failed,
                "timed_out": tally.timed_out, "unreachable": tally.unreachable,
                "silent": tally.silent,
            }  # fmt: skip
            cells.append(
                CellView(ring, region, counts, reasons.get((ring, region), {}),
                         soonest.get((ring, region)))
            )  # fmt: skip
        return record, cells

    # -- the check-in path -----------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether any campaign could hand out work (else check-ins skip us)."""
        return bool(self._live)

    async def order_for(self, host: Host, highest_sequence: int) -> types_pb2.SignedEnvelope | None:
        """The work order this host should carry out now, if any.

        A host with an order in flight gets it again only if it never
        received it (its highest accepted sequence is below the order's).
        """
        async with self._lock:
            current = await self._db.call(lambda s: s.in_flight_for_host(host.host_id))
            if current is not None:
                if highest_sequence < current.sequence:
                    return types_pb2.SignedEnvelope.FromString(current.envelope)
                return None
            for record in self._live:
                envelope = await self._consider(record, host)
                if envelope is not None:
                    return envelope
        return None

    async def _consider(
        self, record: CampaignRecord, host: Host
    ) -> types_pb2.SignedEnvelope | None:
        spec = self.spec(record)
        facts = host_facts(host)
        if not is_targeted(spec, facts):
            return None
        counted, assignments = await self._snapshot(record)
        tallies = counted.tallies
        mine = {a.kind: a for a in assignments if a.host_id == host.host_id}
        now = self._clock()
        if record.state == CampaignState.ABORTED.value:
            patched = mine.get("patch")
            if patched is None or not revert_due(
                patched.status in (AssignmentStatus.SUCCEEDED, AssignmentStatus.PENDING_REBOOT),
                "revert" in mine,
            ):
                return None
            return await self._assign(record, host, "revert", now, None, patched.order_id)
        if "patch" in mine:
            return None
        decision = decide(spec, facts, tallies, now)
        if not isinstance(decision, Assign):
            return None
        return await self._assign(record, host, "patch", now, decision.window_closes_at, "")

    async def _snapshot(self, record: CampaignRecord) -> tuple[Count, list[Assignment]]:
        """The campaign's counts and assignments, from the cache when fresh."""
        cached = self._tallies.get(record.campaign_id)
        if (
            cached is not None
            and cached[0] == self._version
            and time.monotonic() - cached[1] < TALLY_MAX_AGE
        ):
            return cached[2], cached[3]
        version, started = self._version, time.monotonic()
        hosts, assignments = await self._db.call(
            lambda s: (s.list_hosts(limit=10_000_000), s.assignments(record.campaign_id))
        )
        counted = count(
            self.spec(record), record, hosts, assignments, self._clock(), self._watching_since
        )
        self._tallies[record.campaign_id] = (version, started, counted, assignments)
        return counted, assignments

    def _changed(self) -> None:
        self._version += 1

    async def _assign(
        self, record: CampaignRecord, host: Host, kind: str, now: datetime,
        window_closes_at: datetime | None, reverts: str,
    ) -> types_pb2.SignedEnvelope:  # fmt: skip
        spec = self.spec(record)
        sequence = await self._db.call(lambda s: s.next_sequence(host.host_id))
        order_id = "o-" + secrets.token_hex(8)
        action = kind
        if kind == "revert":
            order = workorders.revert_order(
                record.campaign_id, order_id, host.host_id, sequence, now, reverts
            )
        elif spec.agent_update is not None:
            action = "agent-update"
            order = workorders.agent_update_order(
                spec, await self._release(spec.agent_update.version), record.campaign_id,
                order_id, host.host_id, sequence, now, window_closes_at,
            )  # fmt: skip
        else:
            order = workorders.patch_order(
                spec, record.campaign_id, order_id, host.host_id, sequence, now, window_closes_at
            )
        envelope = workorders.sign(order, self._key)
        assignment = Assignment(
            order_id=order_id, campaign_id=record.campaign_id, host_id=host.host_id, kind=kind,
            ring=host.ring, region=host.region, sequence=sequence,
            envelope=envelope.SerializeToString(), status=AssignmentStatus.IN_FLIGHT,
            assigned_at=now,
        )  # fmt: skip
        entry = AuditEntry(
            now, "controller", f"order.assign.{action}", order_id, "assigned",
            f"campaign {record.campaign_id} host {host.host_id} ring {host.ring} "
            f"region {host.region} sequence {sequence}",
        )  # fmt: skip
        await self._db.call(lambda s: s.assign(assignment, entry))
        self._changed()
        log.info("campaign %s: %s order %s to host %s", record.campaign_id, action, order_id,
                 host.host_id)  # fmt: skip
        return envelope

    # -- results and the periodic tick ----------------------------------------

    async def on_results(
        self, host_id: str, results: Sequence[tuple[str, str, str, str, datetime]]
    ) -> None:
        if not results:
            return
        changed = await self._db.call(lambda s: s.apply_results(host_id, results))
        if changed:
            self._changed()
        for campaign_id in changed:
            await self._evaluate(campaign_id)

    async def tick(self) -> None:
        """Time out silent orders, halt breached campaigns, complete finished ones."""
        records = await self._db.call(lambda s: s.list_campaigns())
        now = self._clock()
        for record in records:
            if record.state in OPEN:
                await self._time_out_late(record, now)
                await self._evaluate(record.campaign_id)

    async def _time_out_late(self, record: CampaignRecord, now: datetime) -> None:
        spec = self.spec(record)
        assignments = await self._db.call(lambda s: s.assignments(record.campaign_id))
        late = [
            a.order_id for a in assignments
            if a.status is AssignmentStatus.IN_FLIGHT
            and order_timed_out(spec, a.last_report_at or a.assigned_at, self._watching_since, now)
        ]  # fmt: skip
        if late:
            timed_out = await self._db.call(lambda s: s.time_out(late, now))
            self._changed()
            log.warning("campaign %s: %d order(s) timed out", record.campaign_id, timed_out)

    async def _evaluate(self, campaign_id: str) -> None:
        record = await self._db.call(lambda s: s.get_campaign(campaign_id))
        if record.state != CampaignState.RUNNING.value:
            return
        counted = await self._count(record)
        outcome = verdict(self.spec(record), counted.tallies, self._clock())
        try:
            if isinstance(outcome, Halt):
                halt = outcome.reason
                await self._transition(
                    campaign_id, [CampaignState.RUNNING.value], "controller", "campaign.halt",
                    CampaignState.HALTED.value, halt.message,
                    halt_kind=halt.kind.value, halt_reason=halt.message,
                )  # fmt: skip
            elif outcome is not None:
                await self._transition(
                    campaign_id, [CampaignState.RUNNING.value], "controller", "campaign.complete",
                    CampaignState.COMPLETED.value,
                )  # fmt: skip
        except Conflict:
            pass  # a person changed it meanwhile: theirs wins

    async def run_ticks(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("campaign tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
