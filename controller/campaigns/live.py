"""A campaign's counts on a running controller, kept as hosts and orders
change, never by reading the fleet again.

The engine builds one `LiveCount` per open campaign from one full read (at
start, or when a campaign opens), then tells it of every change: a
check-in (`seen`), a host that left (`leave`), an order assigned, a
result, a time-out. Silence is the one count that time alone changes: each
member has at most one entry in a heap ordered by when it turns silent
(`lifecycle.silent_after`); `advance(now)` takes the due ones and puts a
member seen since back with its new time, so the heap holds one entry per
host, not one per check-in.

The full recount (`controller.tally.count`) is the consistency check: a
test drives both through the same changes and compares them.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.campaigns.counts import COUNTED, ELIGIBLE, SILENT, UNREACHABLE, Cell, Counts
from controller.campaigns.lifecycle import host_silent, silent_after
from controller.campaigns.scheduler import DecisionKey, HostFacts, decision_key, is_targeted
from controller.campaigns.spec import CampaignSpec
from controller.campaigns.tallies import CampaignState, Tallies
from controller.model import AssignmentKind, AssignmentStatus

PATCH, REVERT = AssignmentKind.PATCH, AssignmentKind.REVERT


@dataclass(slots=True)
class Member:
    """A targeted, active host, as this campaign counts it."""

    facts: HostFacts
    cell: Cell
    key: DecisionKey
    last_seen: datetime | None
    silent: bool = False
    queued: bool = False  # has an entry in the silence heap


@dataclass(slots=True)
class InFlight:
    """An order of this campaign that has not finished."""

    host_id: str
    kind: AssignmentKind
    ring: int
    last_report_at: datetime


@dataclass(frozen=True)
class Order:
    """One of the campaign's orders, as `LiveCount.build` reads it."""

    order_id: str
    host_id: str
    kind: AssignmentKind
    ring: int
    status: AssignmentStatus
    last_report_at: datetime  # or its assignment, when it has no report
    finished_at: datetime | None


@dataclass(slots=True)
class PatchOrder:
    order_id: str
    status: AssignmentStatus


@dataclass(frozen=True)
class Counted:
    """A campaign's counts at one instant, and its hosts not yet assigned
    as (sample facts, cell, how many) per group `decide` cannot tell apart."""

    tallies: Tallies
    waiting: tuple[tuple[HostFacts, Cell, int], ...]


@dataclass
class LiveCount:
    """The counts of one campaign, changed by the engine as things happen.

    ``watching_since`` is when this controller started watching
    (`lifecycle`). Not thread-safe: the engine calls it from its event loop.
    """

    spec: CampaignSpec
    state: CampaignState
    watching_since: datetime | None
    counts: Counts = field(init=False)
    members: dict[str, Member] = field(default_factory=dict, init=False)
    patches: dict[str, PatchOrder] = field(default_factory=dict, init=False)  # by host
    reverting: set[str] = field(default_factory=set, init=False)  # hosts sent a revert
    in_flight: dict[str, InFlight] = field(default_factory=dict, init=False)  # by order
    _waiting: Counter[DecisionKey] = field(default_factory=Counter, init=False)
    _samples: dict[DecisionKey, tuple[HostFacts, Cell]] = field(default_factory=dict, init=False)
    _heap: list[tuple[datetime, int, str]] = field(default_factory=list, init=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self.counts = Counts()
        self.counts.state = self.state

    # -- building -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        spec: CampaignSpec,
        state: CampaignState,
        accepted_failures: Mapping[int, int],
        accepted_silent: Mapping[int, int],
        hosts: Iterable[HostFacts],
        orders: Iterable[Order],
        watching_since: datetime | None,
        now: datetime,
    ) -> LiveCount:
        """From the active hosts and every order of the campaign."""
        live = cls(spec, state, watching_since)
        live.counts.accepted_failures = dict(accepted_failures)
        live.counts.accepted_silent = dict(accepted_silent)
        for order in orders:
            if order.kind == REVERT:
                live.reverting.add(order.host_id)
            else:
                live.patches[order.host_id] = PatchOrder(order.order_id, order.status)
            if order.status is AssignmentStatus.IN_FLIGHT:
                live.in_flight[order.order_id] = InFlight(
                    order.host_id, order.kind, order.ring, order.last_report_at
                )
            elif order.kind == PATCH and order.finished_at is not None:
                live.counts.finished(order.ring, order.finished_at)
        for facts in hosts:
            live.join(facts, now)
        return live

    # -- what happens ---------------------------------------------------------

    def seen(self, facts: HostFacts, now: datetime) -> None:
        """The host checked in at ``now`` with these facts (its targeting and
        decision key may have changed)."""
        member = self.members.get(facts.host_id)
        if member is not None and member.key == decision_key(facts):
            if member.silent:
                self._count(member, -1)
                member.silent = False
                self._count(member, +1)
            member.last_seen = now
            self._queue(member)
            return
        if member is not None:
            self.leave(facts.host_id)  # what targets it or what decide reads changed
        self.join(dataclasses.replace(facts, last_seen=now), now)

    def leave(self, host_id: str) -> None:
        """The host is no longer counted (revoked, or no longer targeted)."""
        member = self.members.pop(host_id, None)
        if member is not None:
            self._count(member, -1)

    def assigned(
        self, host_id: str, order_id: str, kind: AssignmentKind, ring: int, now: datetime
    ) -> None:
        self.in_flight[order_id] = InFlight(host_id, kind, ring, now)
        if kind == REVERT:
            self.reverting.add(host_id)
            return
        member = self._uncount(host_id)
        self.patches[host_id] = PatchOrder(order_id, AssignmentStatus.IN_FLIGHT)
        self._recount(member)

    def unassigned(
        self, host_id: str, order_id: str, kind: AssignmentKind, was_reverting: bool
    ) -> None:
        """Undo `assigned` for an order that could not be recorded."""
        self.in_flight.pop(order_id, None)
        if kind == REVERT:
            if not was_reverting:
                self.reverting.discard(host_id)
            return
        patch = self.patches.get(host_id)
        if patch is None or patch.order_id != order_id:
            return
        member = self._uncount(host_id)
        del self.patches[host_id]
        self._recount(member)

    def reported(self, order_id: str, at: datetime) -> None:
        """A report (not final) for an order in flight."""
        flight = self.in_flight.get(order_id)
        if flight is not None:
            flight.last_report_at = at  # as the store records it

    def finished(self, order_id: str, status: AssignmentStatus, at: datetime) -> None:
        """An order in flight got its final ``status`` (a result or a time-out)."""
        flight = self.in_flight.pop(order_id, None)
        if flight is None or flight.kind == REVERT:
            return
        patch = self.patches.get(flight.host_id)
        if patch is None or patch.order_id != order_id:
            return
        member = self._uncount(flight.host_id)
        patch.status = status
        self._recount(member)
        self.counts.finished(flight.ring, at)

    def set_state(
        self,
        state: CampaignState,
        accepted_failures: Mapping[int, int] | None = None,
        accepted_silent: Mapping[int, int] | None = None,
    ) -> None:
        self.state = state
        if accepted_failures is not None:
            self.counts.accepted_failures = dict(accepted_failures)
        if accepted_silent is not None:
            self.counts.accepted_silent = dict(accepted_silent)
        self.counts.set_state(state)

    def advance(self, now: datetime) -> None:
        """Count the members that have turned silent by ``now``."""
        heap = self._heap
        while heap and heap[0][0] < now:
            _, _, host_id = heapq.heappop(heap)
            member = self.members.get(host_id)
            if member is None:
                continue
            member.queued = False
            if member.silent:
                continue
            if host_silent(self.spec, member.last_seen, self.watching_since, now):
                self._count(member, -1)
                member.silent = True
                self._count(member, +1)
            else:
                self._queue(member)

    # -- what it says ---------------------------------------------------------

    @property
    def version(self) -> int:
        """Changes whenever any count or the state does."""
        return self.counts.version

    def tallies(self, now: datetime) -> Tallies:
        self.advance(now)
        return self.counts.snapshot()

    def status_of(self, host_id: str) -> PatchOrder | None:
        return self.patches.get(host_id)

    def waiting(self) -> list[tuple[HostFacts, Cell, int]]:
        """The hosts not assigned yet, as one (sample facts, cell, how many)
        per group that `decide` cannot tell apart."""
        return [(*self._samples[key], n) for key, n in self._waiting.items() if n > 0]

    def counted(self, now: datetime) -> Counted:
        return Counted(self.tallies(now), tuple(self.waiting()))

    # -- inside ---------------------------------------------------------------

    def join(self, facts: HostFacts, now: datetime) -> None:
        """A host to count (enrolled, or read at the start), if targeted."""
        if facts.host_id in self.members:
            return
        if not is_targeted(self.spec, facts):
            return
        seen = facts.last_seen
        member = Member(facts, (facts.ring, facts.region), decision_key(facts), seen)
        member.silent = host_silent(self.spec, member.last_seen, self.watching_since, now)
        self.members[facts.host_id] = member
        self._count(member, +1)
        if not member.silent:
            self._queue(member)

    def _queue(self, member: Member) -> None:
        if member.queued:
            return  # its entry is looked at when due, and moved on if it was seen since
        after = silent_after(self.spec, member.last_seen, self.watching_since)
        if after is None:
            return
        member.queued = True
        heapq.heappush(self._heap, (after, next(self._seq), member.facts.host_id))

    def _uncount(self, host_id: str) -> Member | None:
        """Take the member's counts away before a change (see `_recount`)."""
        member = self.members.get(host_id)
        if member is not None:
            self._count(member, -1)
        return member

    def _recount(self, member: Member | None) -> None:
        if member is not None:
            self._count(member, +1)

    def _count(self, member: Member, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) everything ``member`` counts for."""
        counts, cell = self.counts, member.cell
        counts.add(cell, ELIGIBLE, sign)
        patch = self.patches.get(member.facts.host_id)
        if patch is None:
            if member.silent:
                counts.add(cell, UNREACHABLE, sign)
            self._waiting[member.key] += sign
            if sign > 0:
                self._samples.setdefault(member.key, (member.facts, cell))
            return
        counts.add(cell, COUNTED[patch.status], sign)
        if member.silent:
            counts.add(cell, SILENT, sign)
