"""The controller's campaign engine in-process, over a real SQLite store and
a clock the test moves: for unit tests of the engine's rules at run time,
with no sleeps and no gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import types_pb2

from controller.campaigns import HostFacts
from controller.fleet.tokens import new_token
from controller.model import JSON, CheckIn, Host, HostStatus
from controller.rollout.engine import CampaignEngine
from controller.rollout.tally import host_facts
from controller.store import Store
from controller.store.thread import StoreThread

T = TypeVar("T")
START = datetime(2026, 12, 5, 1, tzinfo=UTC)


def host_row(
    host_id: str,
    region: str,
    ring: int,
    now: datetime,
    *,
    labels: Mapping[str, str] | None = None,
    last_seen: datetime | None = None,
    reported: Mapping[str, object] | None = None,
) -> Host:
    """A host as enrollment records it (a certificate serial and expiry)."""
    return Host(
        host_id, region, ring, HostStatus.ACTIVE, now, labels=dict(labels or {}),
        last_seen=last_seen, facts=dict(reported or {}), certificate_serial=host_id,
        certificate_expires_at=now + timedelta(days=90),
    )  # fmt: skip


async def enroll(db: StoreThread, hosts: Sequence[Host], now: datetime) -> None:
    """Enroll ``hosts`` in the store with one token, as the Enroll RPC would."""
    token, _ = new_token("x", 0, max(1, len(hosts)), timedelta(days=30), {}, now)

    def store_them(store: Store) -> None:
        store.create_token(token)
        for host in hosts:
            store.enroll_host(host, token.token_id, now)

    await db.call(store_them)


async def check_in(
    db: StoreThread,
    engine: CampaignEngine,
    facts: HostFacts,
    reported: JSON,
    at: datetime,
    highest_sequence: int,
) -> types_pb2.WorkOrder | None:
    """A check-in as the servicer handles it: persisted through the batch
    path, then `order_for`; the work order it brings, if any."""
    checkin = CheckIn(facts.host_id, at, reported, {}, "", None)
    await db.call(lambda s: s.record_checkins([checkin]))
    envelope = await engine.order_for(dataclasses.replace(facts, last_seen=at), highest_sequence)
    return None if envelope is None else types_pb2.WorkOrder.FromString(envelope.payload)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Fleet:
    """A store with hosts, an engine over it, and the clock both read."""

    store: Store
    db: StoreThread
    loop: asyncio.AbstractEventLoop
    clock: Clock = field(default_factory=Clock)
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    engine: CampaignEngine | None = None
    sequences: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def restart(self) -> CampaignEngine:
        """A new engine over the same store, as a controller restart makes."""
        if self.engine is not None:
            self.run(self.engine.close())
        self.engine = CampaignEngine(self.db, self.key, clock=self.clock)
        self.run(self.engine.start())
        return self.engine

    @property
    def live(self) -> CampaignEngine:
        assert self.engine is not None
        return self.engine

    def enroll(self, *cells: tuple[int, str]) -> list[str]:
        hosts = [
            host_row(f"h-{len(self.hosts) + n:016x}", region, ring, self.clock())
            for n, (ring, region) in enumerate(cells)
        ]
        self.run(enroll(self.db, hosts, self.clock()))
        for host in hosts:
            self.hosts[host.host_id] = host
            self.sequences[host.host_id] = 0
            self.live.joined(host)
        return [h.host_id for h in hosts]

    def check_in(self, host_id: str) -> types_pb2.WorkOrder | None:
        """The host checks in now; the order it is given, if any."""
        reported = {"os_id": "debian"}
        facts = host_facts(dataclasses.replace(self.hosts[host_id], facts=reported))
        order = self.run(check_in(
            self.db, self.live, facts, reported, self.clock(), self.sequences[host_id]
        ))  # fmt: skip
        if order is not None:
            self.sequences[host_id] = order.sequence
        return order

    def report(self, host_id: str, order_id: str, step: str, final: bool = False) -> None:
        result = (order_id, step, step if final else "", "", self.clock())
        self.run(self.live.on_results(host_id, [result]))

    def tick(self) -> None:
        self.run(self.live.tick())

    def show(self, campaign_id: str) -> dict[str, object]:
        record, cells = self.run(self.live.view(campaign_id))
        totals: dict[str, int] = {}
        for cell in cells:
            for name, value in cell.counts.items():
                totals[name] = totals.get(name, 0) + value
        return {"state": record.state, "halt_kind": record.halt_kind, **totals}


@contextmanager
def engine_fleet(tmp_path: Path, url: str = "") -> Iterator[Fleet]:
    """A fleet over SQLite in ``tmp_path``, or over the PostgreSQL at ``url``."""
    store = Store.connect(url) if url else Store.open(tmp_path / "controller.db")
    db = StoreThread(store)
    loop = asyncio.new_event_loop()
    fleet = Fleet(store, db, loop)
    fleet.restart()
    try:
        yield fleet
    finally:
        fleet.run(fleet.live.close())
        db.close()
        store.close()
        loop.close()
