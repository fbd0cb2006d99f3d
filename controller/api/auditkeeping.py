"""The audit trail's upkeep on the event loop: refusal counts written to
the store as their windows end, and at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from controller.audit import AuditEntry
from controller.datadir import Settings
from controller.refusals import RefusalCounter
from controller.store.thread import StoreThread

log = logging.getLogger(__name__)

# How often ended refusal windows are written when their hosts went quiet.
FLUSH_SECONDS = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class RefusalLog:
    """A RefusalCounter whose entries go to the audit table. Call it from
    the event loop only (the counter is not locked)."""

    def __init__(
        self, db: StoreThread, counter: RefusalCounter, clock: Callable[[], datetime] = _now
    ) -> None:
        self._db = db
        self._counter = counter
        self._clock = clock

    async def refused(self, host_id: str, refusals: Sequence[tuple[str, str]]) -> None:
        """Refusals (order id, detail) a host reported just now."""
        now, entries = self._clock(), []
        for order_id, detail in refusals:
            entries += self._counter.refused(host_id, order_id, detail, now)
        await self._write(entries)

    async def flush_due(self) -> None:
        await self._write(self._counter.due(self._clock()))

    async def drain(self) -> None:
        """Write every count still held; at shutdown, once no call can add one."""
        entries = self._counter.drain(self._clock())
        await self._write(entries)
        if entries:
            log.info("wrote %d pending refusal count(s) to the audit trail", len(entries))

    async def _write(self, entries: list[AuditEntry]) -> None:
        if entries:
            await self._db.call(lambda s: s.append_audits(entries))


class AuditKeeper:
    """The periodic task: every FLUSH_SECONDS, write the refusal counts
    whose window ended. ``close`` stops it and writes what is left."""

    def __init__(self, refusals: RefusalLog) -> None:
        self.refusals = refusals
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls, db: StoreThread, settings: Settings, clock: Callable[[], datetime] = _now
    ) -> AuditKeeper:
        keeper = cls(RefusalLog(db, RefusalCounter(settings.refusal_window), clock))
        keeper._task = asyncio.create_task(keeper._run(), name="audit-keeper")
        return keeper

    async def close(self) -> None:
        """Stop; write every refusal count still held. Call once nothing
        can report a refusal any more (after the server stopped)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.refusals.drain()

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FLUSH_SECONDS)
            if self._stop.is_set():
                return
            try:
                await self.refusals.flush_due()
            except Exception:  # a failed write is logged; the loop goes on
                log.exception("writing refusal counts to the audit trail failed")
