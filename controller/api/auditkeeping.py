"""The audit trail's upkeep on the event loop: refusal counts written to
the store as their windows end, and signed checkpoints written to the
log (journald keeps it, outside the database) at start, every
``audit.checkpoint_interval`` and at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from controller.audit import AuditEntry
from controller.checkpoint import Checkpoint, Checkpoints
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


async def checkpoint(db: StoreThread, checkpoints: Checkpoints, now: datetime) -> Checkpoint:
    """A signed checkpoint of the trail as it ends now."""
    seq, digest = await db.call(lambda s: s.audit_head())
    return checkpoints.sign(seq, digest, now)


class AuditKeeper:
    """The periodic task: every FLUSH_SECONDS, write the refusal counts
    whose window ended; every checkpoint interval, log a checkpoint.
    ``close`` stops it, writes what is left and logs a last checkpoint."""

    def __init__(
        self,
        db: StoreThread,
        refusals: RefusalLog,
        checkpoints: Checkpoints,
        checkpoint_every: timedelta,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.refusals = refusals
        self.checkpoints = checkpoints
        self._db = db
        self._every = checkpoint_every
        self._clock = clock
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, db: StoreThread, settings: Settings, checkpoints: Checkpoints) -> AuditKeeper:
        """The keeper, not running yet (`begin`): the servicers need its
        refusal log before the listeners are bound."""
        refusals = RefusalLog(db, RefusalCounter(settings.refusal_window))
        return cls(db, refusals, checkpoints, settings.checkpoint_interval)

    def begin(self) -> None:
        """Start the periodic task. Only once the controller is sure to
        serve: a start-up that fails (a port in use) must leave one error
        line, not a checkpoint logged beside it."""
        self._task = asyncio.create_task(self._run(), name="audit-keeper")

    async def close(self) -> None:
        """Stop; write every refusal count still held; log a checkpoint.
        Call once nothing can report a refusal any more (after the server
        stopped)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.refusals.drain()
        await self._log_checkpoint()

    async def _log_checkpoint(self) -> None:
        signed = await checkpoint(self._db, self.checkpoints, self._clock())
        # One line, so that `journalctl ... | grep` and `sed` recover the file.
        log.info("audit checkpoint: %s", signed.to_json(indent=None))

    async def _run(self) -> None:
        next_checkpoint = self._clock()
        while not self._stop.is_set():
            try:
                if self._clock() >= next_checkpoint:
                    next_checkpoint = self._clock() + self._every
                    await self._log_checkpoint()
                await self.refusals.flush_due()
            except Exception:  # a failed write is logged; the loop goes on
                log.exception("audit upkeep failed")
            wait = min(FLUSH_SECONDS, max((next_checkpoint - self._clock()).total_seconds(), 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
