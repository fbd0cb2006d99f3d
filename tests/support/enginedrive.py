"""The real controller's campaign engine, driven in virtual time by the same
simulated fleet a rehearsal uses: the other side of the differential test.

`drive` takes a `Simulation` that has not run, and plays its fleet (the
same hosts, check-in phases, fates, outages and controller outages) against
a real `CampaignEngine` over a real SQLite store and a fake clock: check-ins
go through the store's batch path and `order_for`, reports through
`on_results`, time-outs and verdicts through `tick`, a controller outage
stops everything and starts a new engine over the same store, as a restart
does. The hosts' side is the simulator's agent model (how each step of a
host's order ends, and when), so the two runs differ only in the
controller's side: which is exactly what must agree.

Hosts check in at every interval while idle, as real agents do (the
simulator's ``every_check_in`` mode), and report every step at once.

The store is called inline, on the loop's own thread (`InlineStore`). In
the controller a store thread keeps the event loop free for other callers;
here there are none, since the driver awaits each call before the next
event, so the thread changes nothing the engine decides. It did cost a
thread hand-off for each of the million store calls a long scenario makes,
which was most of the test's time.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.orders.states import TERMINAL, Event, State, next_state
from controller.campaigns import CampaignState, HostFacts
from controller.rollout.engine import CampaignEngine
from controller.store import Store
from controller.store.thread import StoreThread
from simulator.agentmodel import Order
from simulator.engine import CONTROLLER, OUTAGE, Simulation
from simulator.hosts import SimHost
from tests.support.engine import check_in, enroll, host_row

_T = TypeVar("_T")
CHECK_IN, STEP, TICK, RECONNECT, DOWN, UP, LOSE, REGAIN = range(8)


@dataclass
class _Host:
    sim: SimHost
    anchor: int
    down: int = 0
    busy: bool = False
    gone: bool = False  # went dark for good
    state: State = State.RECEIVED
    event: Event = Event.OK
    order_id: str = ""
    order: Order | None = None
    sequence: int = 0
    queue: list[tuple[State, int]] = field(default_factory=list)
    plan: int = -1  # its one valid check-in event


@dataclass(frozen=True)
class Driven:
    """What the real engine did: per ring, the counts of `campaign show`;
    the final state; each halt's kind and ring."""

    state: str
    rings: dict[int, dict[str, int]]
    halts: list[tuple[str, int]]


class InlineStore(StoreThread):
    """A `StoreThread` that runs each call at once on the caller's thread."""

    def __init__(self, store: Store) -> None:  # no thread, so no super().__init__
        self._store = store

    async def call(self, fn: Callable[[Store], _T]) -> _T:
        return fn(self._store)

    def close(self) -> None:
        self._store.close()


class Driver:
    def __init__(self, sim: Simulation, data: Path) -> None:
        self.sim = sim
        self.time = sim.time
        self.tick = self.time.tick
        self.interval = self.time.interval
        self.horizon = int(sim.settings.horizon / timedelta(microseconds=1))
        self.now = 0
        self.heap: list[tuple[int, int, int, object]] = []
        self.seq = 0
        self.key = Ed25519PrivateKey.generate()
        self.db = InlineStore(Store.open(data / "controller.db"))
        self.engine: CampaignEngine | None = None
        self.ctl_up = True
        self.halts: list[tuple[str, int]] = []
        sim._seed()  # its hosts' phases, and the outages it draws, as the rehearsal has them
        # Hosts the fleet has offline throughout are down from the start, for good.
        self.hosts = {h.facts.host_id: _Host(h, h.anchor, down=h.down) for h in sim.hosts}
        self.campaign_id = ""
        self.reports = 0  # results handed to the engine, so far

    def clock(self) -> datetime:
        return self.time.to_datetime(self.now)

    def push(self, t: int, kind: int, payload: object = None) -> int:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, payload))
        return self.seq

    async def run(self, campaign_text: str) -> Driven:
        await self._enroll()
        await self._start_engine()
        assert self.engine is not None
        record = await self.engine.create(campaign_text, "drive.toml", "admin:test")
        self.campaign_id = record.campaign_id
        await self.engine.approve(record.campaign_id, "admin:test")
        for host in self.hosts.values():
            self._plan_check_in(host, self.time.check_in_after(host.anchor, 0))
        for t, kind, _, payload in self.sim._heap:  # the rehearsal's own outages
            if kind == OUTAGE:
                chosen, begin = cast(tuple[list[SimHost], bool], payload)
                for sim_host in chosen:
                    self.push(t, LOSE if begin else REGAIN, sim_host.facts.host_id)
            elif kind == CONTROLLER:
                self.push(t, DOWN if payload else UP)
        self.push(self.tick, TICK)
        while self.heap:
            t, kind, seq, payload = heapq.heappop(self.heap)
            if t > self.horizon:
                break
            self.now = t
            reports = self.reports
            await self._handle(kind, seq, payload)
            # The engine halts and completes only on results and ticks: after
            # a check-in that brought nothing, the campaign is as it was.
            if (kind != CHECK_IN or self.reports != reports) and await self._over():
                break
        return await self._result()

    async def _over(self) -> bool:
        assert self.engine is not None
        record = await self.db.call(lambda s: s.get_campaign(self.campaign_id))
        if record.state == CampaignState.COMPLETED.value:
            return True
        if record.state == CampaignState.HALTED.value:
            halt = (str(record.halt_kind or ""), _ring(record.halt_reason))
            if not self.halts or self.halts[-1] != halt:
                self.halts.append(halt)
            # As the rehearsal: over once nothing is in flight any more.
            _, cells = await self.engine.view(self.campaign_id)
            return sum(cell.counts["in_flight"] for cell in cells) == 0
        return False

    async def _result(self) -> Driven:
        assert self.engine is not None
        record, cells = await self.engine.view(self.campaign_id)
        rings: dict[int, Counter[str]] = {}
        for cell in cells:
            rings.setdefault(cell.ring, Counter()).update(cell.counts)
        await self.engine.close()
        self.db.close()
        return Driven(record.state, {r: dict(c) for r, c in rings.items()}, self.halts)

    # -- the fleet --------------------------------------------------------------

    async def _enroll(self) -> None:
        start = self.clock()
        hosts = [
            host_row(
                h.sim.facts.host_id, h.sim.facts.region, h.sim.facts.ring, start,
                labels=h.sim.facts.labels, reported=_reported(h.sim.facts),
                last_seen=None if h.sim.last_seen is None
                else self.time.to_datetime(h.sim.last_seen),
            )
            for h in self.hosts.values()
        ]  # fmt: skip
        await enroll(self.db, hosts, start)

    async def _start_engine(self) -> None:
        if self.engine is not None:
            await self.engine.close()
        self.engine = CampaignEngine(self.db, self.key, clock=self.clock)
        await self.engine.start()

    def _plan_check_in(self, host: _Host, t: int) -> None:
        host.plan = self.push(t, CHECK_IN, host)

    async def _handle(self, kind: int, seq: int, payload: Any) -> None:
        if kind == CHECK_IN:
            await self._check_in(payload, seq)
        elif kind == STEP:
            await self._step(payload)
        elif kind == TICK:
            if self.ctl_up:
                assert self.engine is not None
                await self.engine.tick()
            self.push(self.now + self.tick, TICK)
        elif kind == RECONNECT:
            await self._reconnect(payload)
        else:
            await self._outage(kind, payload)

    async def _outage(self, kind: int, payload: Any) -> None:
        if kind in (DOWN, UP):
            self.ctl_up = kind == UP
            if self.ctl_up:
                await self._start_engine()  # a restart: a new engine over the same store
            hosts = list(self.hosts.values())
        else:
            hosts = [self.hosts[payload]]
        for host in hosts:
            if kind in (DOWN, LOSE):
                host.down += 1
                continue
            host.down -= 1
            if host.down == 0:
                self.push(self.now + host.sim.reconnect, RECONNECT, host)

    async def _check_in(self, host: _Host, seq: int) -> None:
        if seq != host.plan or host.gone:
            return
        if host.down or host.busy:
            return  # it checks in again when it reconnects or finishes
        await self._report_to_controller(host)
        self._plan_check_in(host, self.now + self.interval)

    async def _report_to_controller(self, host: _Host) -> None:
        assert self.engine is not None
        at = self.clock()
        facts = host.sim.facts
        order = await check_in(self.db, self.engine, facts, _reported(facts), at, host.sequence)
        if order is None:
            return
        host.sequence = order.sequence
        host.order_id = order.order_id
        closes = (
            self.time.at(order.window_closes_at.ToDatetime().replace(tzinfo=at.tzinfo))
            if order.HasField("window_closes_at") else None
        )  # fmt: skip
        host.order = Order(closes)
        host.busy = True
        await self._enter(host, State.RECEIVED)

    async def _enter(self, host: _Host, state: State) -> None:
        host.state = state
        if state is State.VERIFY and host.sim.fate.goes_dark:
            host.gone = True
            return
        await self._report(host, state, self.now)
        if state in TERMINAL:
            host.busy = False
            if not host.down:
                await self._report_to_controller(host)  # at once, for the next order
                self._plan_check_in(host, self.now + self.interval)
            return
        assert host.order is not None
        event, took = self.sim._agent.step(state, host.sim.fate, host.order, self.now)
        host.event = event
        if took:
            self.push(self.now + took, STEP, host)
        else:
            await self._step(host)

    async def _step(self, host: _Host) -> None:
        await self._enter(host, next_state(host.state, host.event))

    async def _report(self, host: _Host, state: State, at: int) -> None:
        if host.down:
            host.queue.append((state, at))
            return
        assert self.engine is not None
        self.reports += 1
        outcome = state.value if state in TERMINAL else ""
        await self.engine.on_results(
            host.sim.facts.host_id,
            [(host.order_id, state.value, outcome, "", self.time.to_datetime(at))],
        )

    async def _reconnect(self, host: _Host) -> None:
        if host.down or host.gone:
            return
        queued, host.queue = host.queue, []
        for state, at in queued:
            await self._report(host, state, at)
        if not host.busy:
            await self._report_to_controller(host)
            self._plan_check_in(host, self.now + self.interval)


def _reported(facts: HostFacts) -> dict[str, object]:
    """What the host reports of itself, as the store keeps it."""
    return {"os_id": facts.os_id, "timezone": facts.timezone, "agent_version": facts.agent_version}


def _ring(reason: str) -> int:
    """The ring a halt names ("ring 0: 2 failed host(s) ...")."""
    return int(reason.split(":", 1)[0].removeprefix("ring "))


def drive(sim: Simulation, campaign_text: str, data: Path) -> Driven:
    """Run the engine over ``sim``'s fleet (which must not have run)."""
    return asyncio.run(Driver(sim, data).run(campaign_text))
