"""Check-ins that bring nothing new, answered at once and written behind.

Most check-ins of a settled fleet only say "still here": the inventory and
available updates the controller holds already, and new facts (uptime, free
disk) and health. Writing each one before answering it costs a share of a
transaction and two thread hand-offs, a third of the controller's CPU per
check-in as measured (README, "Performance"). Fleet's "async host processing"
makes the same trade for the same reason.

How it stays right:

- **What is held.** For each active host whose last check-in was written
  through (``learn``), what its answer needs: the inventory and updates
  hashes the controller holds, region, ring and labels, and the *placement
  generation* read in the same transaction before the host's row. At most
  ``max_hosts``: the host learnt longest ago makes room, so hosts gone from
  the fleet leave in time; a host revoked here is dropped at once.
- **When it is used.** A check-in is answered from what is held
  (``answer``) only when it carries no inventory and no scan, its two
  hashes are the held ones, and the held generation is the current one.
  Anything else goes through the store, durable before the answer, as
  before; so does every check-in while the store is failing.
- **The generation** counts changes to a host's status, region, ring or
  labels (a pending host's activation and expiry aside), made by any
  statement on any replica (a trigger, migration 0011). It is read with
  every write behind and at least every ``poll`` seconds: another
  replica's change is seen within ``poll``. A count that goes back (its
  table emptied by hand) drops all that is held. On this replica an admin
  change reads it again (``sync``) before it is answered; a revocation
  also takes effect at once through the revoked set.
- **What is written behind**, every ``interval`` (or sooner, when many are
  waiting): each host's last_seen (never moved back), its newest facts and
  health, and how many check-ins that was, in one transaction. Facts and
  health are kept as the agent sent them and made JSON (``as_json``) on
  the store thread as the batch is written: one pass over many hosts, off
  the event loop, and none for a check-in a newer one replaced. A host
  whose check-in goes through the store while one is waiting here or
  being written (``superseded``) keeps only the count: the store has newer
  facts, even if that write fails and is tried again.
- **When the store fails or hangs**, nothing is answered from memory once
  a read or write of it has failed, or once none that succeeded started
  within the last ``fresh_for`` seconds (1 s): check-ins go through the
  store, which answers UNAVAILABLE while it is down. After a failed write
  (behind, or of a check-in written through), reads that succeed do not
  make memory trusted again, only a write that does: a database that
  reads but refuses writes (a standby, a primary just demoted) is down.
  The check-ins answered before the outage was seen are kept, and written
  once it is back.
- **Read by an admin** (a host, or a listing of them, on this replica):
  what is waiting is written first, so that it shows what the hosts'
  last check-ins said. Another replica's is seen within its ``interval``.
- **If the controller dies**, at most ``interval`` of last_seen, facts and
  health is lost, which every host sends again at its next check-in: no
  order, report or inventory is ever written behind. ``close`` writes what
  is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from controller.errors import StoreUnavailable
from controller.model import JSON, CheckInOutcome, Heartbeat
from controller.store.thread import StoreThread

log = logging.getLogger(__name__)

# Hosts held by default: about 0.45 KB each (tests/unit/test_heartbeats.py).
MAX_HOSTS = 500_000
# Written at once, without waiting for the interval, when this many wait.
FLUSH_AT = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class _Answered:
    """A host's check-ins answered and not written yet: the newest one's
    time, facts and health as sent (JSON once written), and how many."""

    at: datetime
    facts: object | None  # None: a newer check-in of the host writes them
    health: object | None
    count: int


def _as_is(said: Any) -> JSON:
    """The default ``as_json``: facts and health given as mappings."""
    return dict(said)


class Heartbeats:
    """Call everything but ``start``/``close``/``sync`` from the event loop,
    without awaiting between ``answer`` and ``accept`` (nothing is locked)."""

    def __init__(
        self,
        db: StoreThread,
        interval: float = 1.0,
        poll: float = 0.25,
        max_hosts: int = MAX_HOSTS,
        flush_at: int = FLUSH_AT,
        fresh_for: float = 1.0,
        as_json: Callable[[Any], JSON] = _as_is,
    ) -> None:
        """``as_json``: what a check-in's facts or health are stored as
        (the agents' messages: controller.api.convert.to_json)."""
        self._db = db
        self._interval = interval
        self._poll = min(poll, interval)
        self._max_hosts = max_hosts
        self._flush_at = flush_at
        self._held: dict[str, CheckInOutcome] = {}
        self._labels: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}
        self._as_json = as_json
        self._waiting: dict[str, _Answered] = {}
        # The batch being written, and its hosts that a check-in written
        # through has superseded meanwhile (should the write fail).
        self._writing: dict[str, _Answered] = {}
        self._superseded: set[str] = set()
        self._generation = -1  # none read yet
        # What is held is used until then: a read of the generation, started
        # at most ``fresh_for`` seconds before, succeeded. A store that hangs
        # (a partition, a stopped server) is no longer trusted after that.
        self._fresh_for = max(fresh_for, 2 * self._poll)
        self._fresh_until = 0.0
        self._unwritten = False  # the last write behind failed (reads then trust nothing)
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()  # the writer's and an admin read's, in turn
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.answered = 0  # check-ins answered from memory
        self.written = 0  # heartbeats written behind

    # -- the check-in path ---------------------------------------------------

    def answer(self, host_id: str, inventory_hash: str, updates_hash: str) -> CheckInOutcome | None:
        """What a check-in with these hashes and nothing else is answered
        with, when it can be answered from memory; None: through the store."""
        if time.monotonic() > self._fresh_until:
            return None
        held = self._held.get(host_id)
        if (
            held is None
            or held.generation != self._generation
            or held.inventory_hash != inventory_hash
            or held.updates_hash != updates_hash
        ):
            return None
        return held

    def accept(self, host_id: str, at: datetime, facts: object, health: object) -> None:
        """A check-in answered from memory: write it behind (its facts and
        health as sent, made JSON by ``as_json`` when written)."""
        before = self._waiting.get(host_id)
        count = 1 if before is None else before.count + 1
        self._waiting[host_id] = _Answered(at, facts, health, count)
        self.answered += 1  # fleetpatch_checkins_written_behind, read when scraped
        if len(self._waiting) >= self._flush_at:
            self._full.set()

    def superseded(self, host_id: str) -> None:
        """A check-in of ``host_id`` is going through the store: its facts
        are newer than any waiting here."""
        before = self._waiting.get(host_id)
        if before is not None and before.facts is not None:
            self._waiting[host_id] = dataclasses.replace(before, facts=None, health=None)
        if host_id in self._writing:
            self._superseded.add(host_id)

    def forget(self, host_id: str) -> None:
        """``host_id`` was revoked: hold nothing of it."""
        self._held.pop(host_id, None)

    def learn(self, host_id: str, outcome: CheckInOutcome) -> None:
        """A check-in written through: hold what it read (an active host).
        Held hosts are kept in the order they were last learnt; when there
        are ``max_hosts``, the one learnt longest ago makes room (a host
        gone from the fleet is learnt no more, and goes in time)."""
        self._held.pop(host_id, None)
        self._unwritten = False  # it was written: the store takes writes
        if not outcome.known or outcome.revoked or self._max_hosts <= 0:
            return
        while len(self._held) >= self._max_hosts:
            del self._held[next(iter(self._held))]
        # Hosts share their labels and region where they are equal, as most are.
        if len(self._labels) > self._max_hosts:  # as many sets as hosts: sharing none
            self._labels.clear()
        labels = self._labels.setdefault(frozenset(outcome.labels.items()), outcome.labels)
        self._held[host_id] = dataclasses.replace(
            outcome, activated=False, labels=labels, region=sys.intern(outcome.region)
        )

    # -- the generation and the writes ------------------------------------------

    def _read(self, generation: int, started: float) -> None:
        """The generation was read by a call started at ``started`` (the
        store thread runs calls in order, so reads arrive in order too)."""
        if generation < self._generation:  # the count started again: trust nothing held
            self._held.clear()
        self._generation = generation
        if not self._unwritten:  # a store that reads but does not write is not trusted
            self._fresh_until = max(self._fresh_until, started + self._fresh_for)

    def write_failed(self, exc: Exception, what: str = "writing a check-in") -> None:
        """A write failed (a check-in written through, or ``what``): nothing
        is answered from memory until a write succeeds (a check-in's
        `learn`, or a flush). Reads that succeed meanwhile do not count: a
        database that refuses writes (a standby, a primary just demoted)
        still answers them."""
        self._unwritten = True
        self._distrust(what, exc)

    def _distrust(self, what: str, exc: Exception) -> None:
        if self._fresh_until:
            log.warning("check-ins go through the store until it answers again: %s failed: %s",
                        what, exc)  # fmt: skip
        self._fresh_until = 0.0

    async def sync(self) -> None:
        """Read the generation now (after a change made on this replica)."""
        started = time.monotonic()
        try:
            generation = await self._db.call(lambda s: s.hosts_generation())
        except Exception as exc:
            self._distrust("reading the hosts' generation", exc)
            return
        self._read(generation, started)

    async def flush(self) -> None:
        """Write what is waiting now (the writer does every ``interval``;
        an admin reading hosts, before it reads). A caller cancelled
        meanwhile (an admin call whose client gave up) does not cancel the
        write: what it took is out of memory until written or put back."""
        await asyncio.shield(self._flush_in_turn())

    async def _flush_in_turn(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting, {}
        if not batch:
            return
        started = time.monotonic()
        self._writing, self._superseded = batch, set()
        try:
            # On the store thread: the batch made JSON, then written.
            generation = await self._db.call(lambda s: s.record_heartbeats(self._stored(batch)))
        except Exception as exc:
            for host_id, taken in batch.items():
                older = (
                    dataclasses.replace(taken, facts=None, health=None)
                    if host_id in self._superseded else taken
                )  # fmt: skip
                newer = self._waiting.get(host_id)
                self._waiting[host_id] = (
                    older if newer is None
                    else dataclasses.replace(newer, count=newer.count + older.count)
                )  # fmt: skip
            if not isinstance(exc, StoreUnavailable):
                log.exception("writing %d check-ins behind failed", len(batch))
            self.write_failed(exc, f"writing {len(batch)} check-ins behind")
            return
        finally:
            self._writing, self._superseded = {}, set()
        self.written += len(batch)
        self._unwritten = False
        self._read(generation, started)

    def _stored(self, batch: Mapping[str, _Answered]) -> list[Heartbeat]:
        """The batch as written (on the store thread). A host whose facts or
        health cannot be made JSON has its check-ins counted and its time
        written, and keeps the facts stored before: one host's bad input
        never holds up the others' writes."""
        return [self._heartbeat(host_id, said) for host_id, said in batch.items()]

    def _heartbeat(self, host_id: str, said: _Answered) -> Heartbeat:
        if said.facts is None:
            return Heartbeat(host_id, said.at, None, None, said.count)
        try:
            facts, health = self._as_json(said.facts), self._as_json(said.health)
        except Exception as exc:  # the check-in path checks what it knows to fail
            log.warning("host %s: its facts or health are not stored: %s", host_id, exc)
            return Heartbeat(host_id, said.at, None, None, said.count)
        return Heartbeat(host_id, said.at, facts, health, said.count)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat writer")

    async def _run(self) -> None:
        last_write = time.monotonic()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._poll)
            self._full.clear()
            if self._stopping:
                return
            now = time.monotonic()
            if self._waiting and (
                now - last_write >= self._interval or len(self._waiting) >= self._flush_at
            ):
                last_write = now
                await self.flush()
            else:
                await self.sync()

    async def close(self) -> None:
        """Stop (a write in progress ends first, never cut off), and write
        what is waiting."""
        if self._task is not None:
            self._stopping = True
            self._full.set()
            await self._task
        count = len(self._waiting)
        await self.flush()
        self._fresh_until = 0.0  # answered from memory no more
        if self._waiting:
            log.error("%d check-ins answered could not be written at shutdown", count)
