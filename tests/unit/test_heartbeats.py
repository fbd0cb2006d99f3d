"""controller.store.heartbeats: check-ins that bring nothing new, answered
from memory only while what is held is current, and written behind."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fleetpatch.v1 import types_pb2
from google.protobuf.message import Message

from controller.api import convert
from controller.errors import StoreUnavailable
from controller.fleet.relabel import Relabel
from controller.fleet.tokens import new_token
from controller.model import CheckIn, CheckInOutcome, Host, HostStatus
from controller.store import Store
from controller.store.heartbeats import Heartbeats
from controller.store.thread import StoreThread

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INVENTORY, UPDATES = "sha256:inv", "sha256:upd"
T = TypeVar("T")


class FailingStoreThread(StoreThread):
    """The real store thread, whose store can be made unreachable."""

    down = False

    async def call(self, fn: Callable[[Store], T]) -> T:
        if self.down:
            raise StoreUnavailable("the database is unreachable", retry_after=1.0)
        return await super().call(fn)


@dataclass
class World:
    path: Path
    db: FailingStoreThread
    hosts: list[str]

    async def check_in(self, host_id: str, at: datetime = NOW) -> CheckInOutcome:
        """A check-in written through the store, as the servicer does it,
        carrying an inventory and a scan: the controller holds their hashes."""
        checkin = CheckIn(
            host_id, at, {"uptime": 1}, {"ok": True}, INVENTORY, [("bash", "5.2", "amd64")],
            UPDATES, [], at,
        )  # fmt: skip
        [outcome] = await self.db.call(lambda s: s.record_checkins([checkin]))
        return outcome

    def other_writer(self) -> Store:
        """The same database opened again: another replica, or any SQL."""
        return Store.open(self.path)

    def stored(self, host_id: str) -> Host:
        store = self.other_writer()
        try:
            return store.get_host(host_id)
        finally:
            store.close()


def _world(tmp_path: Path, thread: type[FailingStoreThread] = FailingStoreThread) -> World:
    path = tmp_path / "controller.db"
    store = Store.open(path)
    token, _ = new_token("eu", 0, 10, timedelta(days=1), {}, NOW)
    store.create_token(token)
    hosts = [f"h-{n:016x}" for n in range(3)]
    for host_id in hosts:
        host = Host(
            host_id, "eu", 0, HostStatus.ACTIVE, NOW, {"role": "web"},
            certificate_serial=host_id, certificate_expires_at=NOW + timedelta(days=90),
        )  # fmt: skip
        store.enroll_host(host, token.token_id, NOW)
    return World(path, thread(store), hosts)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = _world(tmp_path)
    yield made
    made.db.close()


async def _held(world: World) -> tuple[Heartbeats, str]:
    """Heartbeats holding the first host, written through once, and read."""
    beats = Heartbeats(world.db)
    host = world.hosts[0]
    beats.learn(host, await world.check_in(host))
    await beats.sync()
    return beats, host


def run(coro: Callable[[], object]) -> object:
    return asyncio.run(asyncio.wait_for(coro(), 60))  # type: ignore[arg-type]


def test_only_a_check_in_with_the_held_hashes_is_answered_from_memory(world: World) -> None:
    async def main() -> None:
        beats = Heartbeats(world.db)
        host = world.hosts[0]
        outcome = await world.check_in(host)
        beats.learn(host, outcome)
        assert beats.answer(host, INVENTORY, UPDATES) is None  # no generation read yet
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) == outcome
        assert beats.answer(host, "sha256:changed", UPDATES) is None
        assert beats.answer(host, INVENTORY, "sha256:rescanned") is None
        assert beats.answer(world.hosts[1], INVENTORY, UPDATES) is None  # never written through

    run(main)


def test_a_change_by_another_writer_is_seen_at_the_next_read(world: World) -> None:
    async def main() -> None:
        beats = Heartbeats(world.db)
        host, other = world.hosts[0], world.hosts[1]
        for h in (host, other):
            beats.learn(h, await world.check_in(h))
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) is not None
        replica = world.other_writer()
        replica.relabel_host(host, Relabel({}, ring=2), "admin:a", NOW)
        replica.close()
        await beats.sync()
        # Every host goes through the store again (one counter for all).
        assert beats.answer(host, INVENTORY, UPDATES) is None
        assert beats.answer(other, INVENTORY, UPDATES) is None
        outcome = await world.check_in(host)
        assert outcome.ring == 2
        beats.learn(host, outcome)
        assert beats.answer(host, INVENTORY, UPDATES) == outcome

    run(main)


def test_what_was_read_before_a_change_is_never_held_as_current(world: World) -> None:
    """A check-in read its row, then a change landed and was seen, then the
    check-in's answer came back: what it read is stale and stays unused."""

    async def main() -> None:
        beats = Heartbeats(world.db)
        host = world.hosts[0]
        stale = await world.check_in(host)
        replica = world.other_writer()
        replica.revoke_host(host, NOW)
        replica.close()
        await beats.sync()
        beats.learn(host, stale)
        assert beats.answer(host, INVENTORY, UPDATES) is None

    run(main)


def test_check_ins_answered_are_written_behind_newest_facts_counted_all(world: World) -> None:
    async def main() -> None:
        beats, host = await _held(world)
        for minute in (5, 10):
            beats.accept(host, NOW + timedelta(minutes=minute), {"uptime": minute}, {"ok": False})
        assert world.stored(host).checkins == 1  # nothing written yet
        await beats.flush()
        stored = world.stored(host)
        assert (stored.checkins, stored.last_seen, stored.facts, stored.health) == (
            3, NOW + timedelta(minutes=10), {"uptime": 10}, {"ok": False},
        )  # fmt: skip
        assert (beats.answered, beats.written) == (2, 1)

    run(main)


def test_facts_are_made_json_as_they_are_written_on_the_store_thread_newest_only(
    world: World,
) -> None:
    """The check-in path only keeps the agent's messages; the store thread
    converts them as it writes, and not those a newer check-in replaced."""
    made: list[str] = []  # the thread each conversion ran on

    def as_json(said: Message) -> dict[str, Any]:
        made.append(threading.current_thread().name)
        return convert.to_json(said)

    async def main() -> None:
        beats = Heartbeats(world.db, as_json=as_json)
        host = world.hosts[0]
        beats.learn(host, await world.check_in(host))
        await beats.sync()
        for minute in (1, 2):
            facts = types_pb2.HostFacts(hostname="web-1", uptime_seconds=60 * minute)
            beats.accept(host, NOW + timedelta(minutes=minute), facts,
                         types_pb2.HealthSummary(healthy=minute == 2))  # fmt: skip
        assert made == []
        await beats.flush()
        stored = world.stored(host)
        assert (stored.facts["hostname"], stored.facts["uptime_seconds"]) == ("web-1", 120)
        assert stored.health["healthy"] is True
        assert stored.checkins == 3
        assert len(made) == 2  # the newer check-in's facts and health
        assert threading.current_thread().name not in made

    run(main)


def test_facts_that_cannot_be_made_json_hold_up_no_other_host(world: World) -> None:
    """Whatever the check-in path let through that fails as the batch is
    made JSON costs that host its facts and health, never the batch."""

    async def main() -> None:
        beats = Heartbeats(world.db, as_json=convert.to_json)
        good, bad = world.hosts[:2]
        for host in (good, bad):
            beats.learn(host, await world.check_in(host))
        await beats.sync()
        unconvertible = types_pb2.HealthSummary()
        unconvertible.observed_at.nanos = -5  # no JSON form
        at = NOW + timedelta(minutes=5)
        beats.accept(good, at, types_pb2.HostFacts(hostname="good"), types_pb2.HealthSummary())
        beats.accept(bad, at, types_pb2.HostFacts(hostname="bad"), unconvertible)
        await beats.flush()
        assert beats.written == 2
        assert world.stored(good).facts["hostname"] == "good"
        stored = world.stored(bad)
        assert (stored.facts, stored.last_seen, stored.checkins) == ({"uptime": 1}, at, 2)

    run(main)


def test_a_check_in_written_through_meanwhile_keeps_its_newer_facts(world: World) -> None:
    async def main() -> None:
        beats, host = await _held(world)
        beats.accept(host, NOW + timedelta(minutes=5), {"uptime": 5}, {"ok": True})
        beats.superseded(host)  # the next one carries an inventory, say
        beats.learn(host, await world.check_in(host, NOW + timedelta(minutes=6)))
        await beats.flush()
        stored = world.stored(host)
        assert stored.facts == {"uptime": 1}  # the newer check-in's
        assert stored.last_seen == NOW + timedelta(minutes=6)
        assert stored.checkins == 3

    run(main)


def test_while_the_store_fails_nothing_is_answered_from_memory_or_lost(world: World) -> None:
    async def main() -> None:
        beats, host = await _held(world)
        beats.accept(host, NOW + timedelta(minutes=5), {"uptime": 5}, {"ok": True})
        world.db.down = True
        await beats.flush()
        assert beats.answer(host, INVENTORY, UPDATES) is None  # through the store: UNAVAILABLE
        world.db.down = False
        await beats.flush()
        stored = world.stored(host)
        assert (stored.checkins, stored.facts) == (2, {"uptime": 5})
        assert beats.answer(host, INVENTORY, UPDATES) is not None

    run(main)


def test_a_store_that_reads_but_refuses_writes_is_not_trusted_until_a_write_succeeds(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby, or a primary just demoted: the generation is read as
    ever, but what is answered from memory could not be written. Nothing
    is answered from memory again until a write behind succeeds."""

    async def main() -> None:
        beats, host = await _held(world)
        store = world.db._store
        writes = store.record_heartbeats

        def refused(batch: object) -> int:
            raise StoreUnavailable("a standby, it refuses writes", retry_after=1.0)

        beats.accept(host, NOW + timedelta(minutes=5), {"uptime": 5}, {"ok": True})
        monkeypatch.setattr(store, "record_heartbeats", refused)
        await beats.flush()
        await beats.sync()  # reads succeed
        assert beats.answer(host, INVENTORY, UPDATES) is None  # through the store: UNAVAILABLE
        monkeypatch.setattr(store, "record_heartbeats", writes)
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) is None  # not until a write succeeds
        await beats.flush()
        assert world.stored(host).checkins == 2
        assert beats.answer(host, INVENTORY, UPDATES) is not None

    run(main)


def test_a_store_that_hangs_is_trusted_no_longer_than_fresh_for(world: World) -> None:
    """No read fails, none succeeds either (a stopped server, a partition):
    what is held goes unused once the last good read is that old."""

    async def main() -> None:
        beats = Heartbeats(world.db, poll=0.01, fresh_for=0.2)
        host = world.hosts[0]
        beats.learn(host, await world.check_in(host))
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) is not None
        await asyncio.sleep(0.3)  # no read since
        assert beats.answer(host, INVENTORY, UPDATES) is None
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) is not None

    run(main)


def test_the_writer_writes_within_its_interval_and_close_writes_the_rest(world: World) -> None:
    async def main() -> None:
        beats = Heartbeats(world.db, interval=0.05, poll=0.02)
        host, other = world.hosts[0], world.hosts[1]
        for h in (host, other):
            beats.learn(h, await world.check_in(h))
        beats.start()
        deadline = time.monotonic() + 30
        while beats.answer(host, INVENTORY, UPDATES) is None:  # its first read
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        beats.accept(host, NOW + timedelta(minutes=5), {"uptime": 5}, {"ok": True})
        while world.stored(host).checkins != 2:
            assert time.monotonic() < deadline, "not written within 30 s"
            await asyncio.sleep(0.02)
        beats.accept(other, NOW + timedelta(minutes=5), {"uptime": 7}, {"ok": True})
        await beats.close()
        assert world.stored(other).facts == {"uptime": 7}
        assert beats.answer(host, INVENTORY, UPDATES) is None  # closed: nothing answered

    run(main)


def test_at_most_max_hosts_are_held_the_one_learnt_longest_ago_makes_room(world: World) -> None:
    async def main() -> None:
        beats = Heartbeats(world.db, max_hosts=2)
        first, second, third = world.hosts
        for h in (first, second, first, third):  # first learnt again after second
            beats.learn(h, await world.check_in(h))
        await beats.sync()
        answered = [beats.answer(h, INVENTORY, UPDATES) is not None for h in world.hosts]
        assert answered == [True, False, True]

    run(main)


def test_a_host_revoked_here_is_held_no_more(world: World) -> None:
    async def main() -> None:
        beats, host = await _held(world)
        beats.forget(host)
        assert beats.answer(host, INVENTORY, UPDATES) is None

    run(main)


def test_a_generation_counted_again_from_zero_trusts_nothing_held_before(world: World) -> None:
    """The generations table emptied by hand: once a read sees the count
    go back, nothing held before is used again, even at a number the count
    reaches again. (A controller restarted holds nothing: a database
    restored from a backup is met by one.)"""

    async def main() -> None:
        replica = world.other_writer()
        replica.relabel_host(world.hosts[0], Relabel({}, ring=1), "admin:a", NOW)  # generation 1
        beats, host = await _held(world)
        assert beats.answer(host, INVENTORY, UPDATES) is not None
        with replica._transaction() as conn:
            conn.execute("DELETE FROM generations")
        await beats.sync()  # 0
        replica.relabel_host(host, Relabel({}, ring=2), "admin:a", NOW)  # 1 again
        replica.close()
        await beats.sync()
        assert beats.answer(host, INVENTORY, UPDATES) is None

    run(main)


class _FailingWrites(FailingStoreThread):
    """Writes behind that fail once, after a while (a connection found dead)."""

    fail_write = False

    async def call(self, fn: Callable[[Store], T]) -> T:
        if self.fail_write and "record_heartbeats" in fn.__code__.co_names:
            self.fail_write = False
            await asyncio.sleep(0.1)
            raise StoreUnavailable("lost the connection", retry_after=1.0)
        return await super().call(fn)


@pytest.mark.parametrize("asked_meanwhile", [False, True], ids=["alone", "flush-asked-meanwhile"])
def test_a_failed_write_never_puts_back_facts_a_newer_check_in_wrote(
    tmp_path: Path, asked_meanwhile: bool
) -> None:
    """A check-in goes through the store while a write behind is in
    progress, and that write fails: its stale facts are not put back. With
    another flush asked meanwhile (an admin reading hosts), that one waits
    its turn, so the first still knows which of its hosts were superseded."""

    async def main() -> None:
        world = _world(tmp_path, _FailingWrites)
        beats, host = await _held(world)
        other = world.hosts[1]
        beats.learn(other, await world.check_in(other))
        beats.accept(host, NOW + timedelta(minutes=1), {"uptime": 60}, {"ok": True})
        world.db.fail_write = True  # type: ignore[attr-defined]
        flushing = asyncio.ensure_future(beats.flush())
        await asyncio.sleep(0.02)  # the write is in progress
        admin = None
        if asked_meanwhile:
            beats.accept(other, NOW + timedelta(minutes=1), {"uptime": 61}, {"ok": True})
            admin = asyncio.ensure_future(beats.flush())
            await asyncio.sleep(0.02)
        beats.superseded(host)  # a check-in of the host goes through the store meanwhile
        beats.learn(host, await world.check_in(host, NOW + timedelta(minutes=2)))
        await flushing  # failed: kept for the next try
        if admin is not None:
            await admin
            assert world.stored(other).facts == {"uptime": 61}
        await beats.flush()
        stored = world.stored(host)
        assert stored.facts == {"uptime": 1}  # the newer check-in's
        assert (stored.last_seen, stored.checkins) == (NOW + timedelta(minutes=2), 3)
        world.db.close()

    run(main)


def test_a_flush_whose_caller_is_cancelled_still_writes(world: World) -> None:
    """An admin call flushes, and its client gives up while the write
    waits behind other store calls: the check-ins it took are written all
    the same, not lost with the cancelled call."""

    async def main() -> None:
        beats, host = await _held(world)
        beats.accept(host, NOW + timedelta(minutes=1), {"uptime": 60}, {"ok": True})
        busy = asyncio.ensure_future(world.db.call(lambda s: time.sleep(0.2)))
        await asyncio.sleep(0.02)  # the store thread is busy
        admin = asyncio.ensure_future(beats.flush())
        await asyncio.sleep(0.02)  # the write waits behind it
        admin.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admin
        await busy
        await beats.flush()  # in turn: after the cancelled caller's write
        stored = world.stored(host)
        assert (stored.facts, stored.checkins) == ({"uptime": 60}, 2)

    run(main)


def test_close_lets_a_write_in_progress_end_and_writes_the_rest(tmp_path: Path) -> None:
    async def main() -> None:
        world = _world(tmp_path, _FailingWrites)
        beats = Heartbeats(world.db, interval=0.01, poll=0.01)
        host = world.hosts[0]
        beats.learn(host, await world.check_in(host))
        beats.start()
        await beats.sync()
        beats.accept(host, NOW + timedelta(minutes=1), {"uptime": 60}, {"ok": True})
        world.db.fail_write = True  # type: ignore[attr-defined]
        while beats._writing == {}:  # the writer took it
            await asyncio.sleep(0.001)
        await beats.close()  # that write fails, the one at close succeeds
        assert world.stored(host).checkins == 2
        world.db.close()

    run(main)


def test_a_held_host_costs_less_than_half_a_kilobyte(tmp_path: Path) -> None:
    """What the [checkin] held_hosts docs promise, with hashes and labels
    as a store read gives them (new strings and a new dict per host)."""
    db = StoreThread(Store.open(tmp_path / "c.db"))
    beats = Heartbeats(db)
    count = 20_000
    labels = json.dumps({"role": "web", "site": "fra1"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(count):
            outcome = CheckInOutcome(
                True, False, f"sha256:{n:064x}", "eu-central", 1, json.loads(labels), False,
                f"sha256:{n + 1:064x}", 7,
            )  # fmt: skip
            beats.learn(f"h-{n:016x}", outcome)
        per_host = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
        db.close()
    assert 100 < per_host < 500, per_host
    print(f"{per_host:.0f} bytes per held host")


def test_the_generation_table_emptied_by_hand_counts_again_from_zero(world: World) -> None:
    conn = sqlite3.connect(world.path)
    conn.execute("DELETE FROM generations")
    conn.commit()
    conn.close()
    store = world.other_writer()
    try:
        assert store.hosts_generation() == 0
        store.relabel_host(world.hosts[0], Relabel({}, ring=4), "admin:a", NOW)
        assert store.hosts_generation() == 1
    finally:
        store.close()
