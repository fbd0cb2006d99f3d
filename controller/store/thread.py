"""The store runs on one dedicated thread; the event loop never blocks on
the database. Check-ins are group-committed: every check-in that arrives while a
batch is being written joins the next batch, so a busy controller makes a
few large transactions instead of thousands of small ones, and each agent
is answered only once its check-in is durable (but for the check-ins that
bring nothing new: controller/store/heartbeats.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Generic, ParamSpec, TypeVar

from controller.errors import StoreUnavailable
from controller.metrics.instruments import Metrics
from controller.model import CheckIn, CheckInOutcome
from controller.quietlog import Quiet
from controller.store import Store

log = logging.getLogger(__name__)
# The retry delay asked of callers while the database hangs.
RETRY_AFTER_SECONDS = 5.0
# While the database is down, every batch fails: one line per interval.
_quiet = Quiet(log)
_T = TypeVar("_T")
_P = ParamSpec("_P")
_In = TypeVar("_In")
_Out = TypeVar("_Out")


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS too (`top -H`, `ps -L`,
    /proc/PID/task/TID/comm; at most 15 characters), where it can be."""
    with contextlib.suppress(OSError):
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name[:15])


class StoreThread:
    """Runs the store's calls, one at a time, on a thread of its own.

    ``timeout`` (PostgreSQL): a database that hangs (a frozen server, a
    network cut off without a reset, a lock held) must not hold every
    caller for as long as it lasts. A call not done within ``timeout``
    raises StoreUnavailable to its caller (one still queued is not run);
    while the call the thread runs has taken longer than that, the next
    calls raise it at once, until the database answers (or the connection
    fails, tcp_user_timeout, and is replaced). None (SQLite): calls take
    as long as they take."""

    def __init__(self, store: Store, timeout: float | None = None) -> None:
        self._store = store
        self._timeout = timeout
        self._running_since: float | None = None  # when the call running now began
        self._stuck_since: float | None = None  # a call outlived the timeout (set: said so)
        self._executor = _DaemonThread("store")

    async def call(self, fn: Callable[[Store], _T]) -> _T:
        """Run ``fn(store)`` on the store thread."""
        loop = asyncio.get_running_loop()
        if self._timeout is None:
            return await loop.run_in_executor(self._executor, fn, self._store)
        running = self._running_since
        if running is not None and time.monotonic() - running >= self._timeout:
            raise self._hanging(time.monotonic() - running)
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._timed, fn), self._timeout
            )
        except TimeoutError:
            # This call waited the whole timeout, queued or running; the one
            # running now may have begun just before (the one ahead of it was
            # slow), but the database has not answered this one for as long.
            running = self._running_since
            waited = self._timeout
            if running is not None:
                waited = max(waited, time.monotonic() - running)
            raise self._hanging(waited) from None

    def _timed(self, fn: Callable[[Store], _T]) -> _T:
        self._running_since = time.monotonic()
        failed: Exception | None = None
        try:
            return fn(self._store)
        except Exception as exc:
            failed = exc
            raise
        finally:
            self._running_since = None
            stuck, self._stuck_since = self._stuck_since, None
            if stuck is not None:
                took = time.monotonic() - stuck
                if failed is None:
                    log.warning("the database answers again, after %.0fs", took)
                else:  # e.g. a connection the pool could not make in time: still down
                    log.warning("the database call that hung failed after %.0fs (%s); calls go "
                                "to the database again", took, failed)  # fmt: skip

    def _hanging(self, waited: float) -> StoreUnavailable:
        if self._stuck_since is None:
            self._stuck_since = time.monotonic() - waited
            log.warning("the database has not answered a call for %.0fs (a server frozen, a "
                        "network cut off, a lock held?); calls are answered UNAVAILABLE until "
                        "it does", waited)  # fmt: skip
        return StoreUnavailable(
            f"the database has not answered for {waited:.0f}s; try again shortly",
            RETRY_AFTER_SECONDS,
        )

    def close(self) -> None:
        """Close the store on its thread, once the call running there ends.
        With a timeout (PostgreSQL), a call that still hangs is waited on
        no longer than that: the process may end without it, and the
        server rolls back what it was doing, which nobody was told of."""
        closing = self._executor.submit(self._store.close)
        try:
            closing.result(timeout=self._timeout)
        except FutureTimeout:
            log.warning("a database call still hangs after %.0fs more; stopping without "
                        "waiting for it", self._timeout)  # fmt: skip
            self._executor.shutdown(wait=False)
            return
        self._executor.shutdown(wait=True)


class _DaemonThread(Executor):
    """One thread that runs what is submitted, in order, as a one-worker
    ThreadPoolExecutor does, but as a daemon thread: ThreadPoolExecutor's
    workers are joined when the interpreter exits, so a call hung on a
    frozen database would keep a stopped controller from ending."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return  # cancelled while queued (its caller gave up): not run
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._queue.put(run)
        return future

    def _work(self) -> None:
        name_os_thread(self._thread.name)
        while (job := self._queue.get()) is not None:
            job()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()


class GroupCommit(Generic[_In, _Out]):
    """Items submitted while a batch is being written join the next batch:
    one transaction (``write(store, items)``, answering each item in order)
    for however many arrive, each caller answered once its item is durable.
    A failed write fails every caller of its batch."""

    def __init__(
        self,
        db: StoreThread,
        write: Callable[[Store, list[_In]], Sequence[_Out]],
        name: str,
        max_batch: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._write_batch = write
        self._name = name
        self._metrics = metrics
        self._max_batch = max_batch
        self._pending: list[tuple[_In, asyncio.Future[_Out]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def enqueue(self, item: _In) -> asyncio.Future[_Out]:
        """Add ``item`` to the next batch; its answer, once written."""
        if not self.running:
            raise RuntimeError(f"the {self._name} is not running")
        future: asyncio.Future[_Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return future

    async def submit(self, item: _In) -> _Out:
        return await self.enqueue(item)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write(batch)

    async def _write(self, batch: list[tuple[_In, asyncio.Future[_Out]]]) -> None:
        items = [item for item, _ in batch]
        started = time.perf_counter()
        try:
            outcomes = await self._db.call(lambda s: self._write_batch(s, items))
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):  # answered UNAVAILABLE: they retry
                _quiet.say(self._name, "%s: writing %d failed: %s", self._name, len(batch), exc)
            else:
                log.exception("%s: writing %d failed", self._name, len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(batch))
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def close(self) -> None:
        """Write what is pending, then stop."""
        if self._task is None:
            return
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._write(batch)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class CheckInBatcher(GroupCommit[CheckIn, CheckInOutcome]):
    """Check-ins, group-committed (`Store.record_checkins`)."""

    def __init__(
        self, db: StoreThread, max_batch: int = 1000, metrics: Metrics | None = None
    ) -> None:
        super().__init__(
            db, lambda s, batch: s.record_checkins(batch), "check-in writer", max_batch, metrics
        )
