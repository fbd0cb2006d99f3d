"""The store thread's timeout (PostgreSQL): a call not answered within it
is refused with StoreUnavailable, and what is said counts the time the
call waited, queued behind a slow one included."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import cast

import pytest

from controller.errors import StoreUnavailable
from controller.store import Store
from controller.store.thread import StoreThread


class _Nothing:
    """A store that is never called but closed (the calls below sleep)."""

    def close(self) -> None:
        pass


def _slow(seconds: float) -> Callable[[Store], float]:
    def call(store: Store) -> float:
        time.sleep(seconds)
        return seconds

    return call


@pytest.mark.timeout(60)
def test_a_call_queued_behind_a_slow_one_says_how_long_it_waited(caplog):
    """The first call takes 1.2 s, under the 2 s timeout; the second, queued
    behind it, has waited its whole 2 s when it times out, 0.8 s into its
    own run. It used to be said that the database had not answered "for
    1s" (the time since the running call began)."""
    thread = StoreThread(cast(Store, _Nothing()), timeout=2.0)

    async def calls() -> list[float | BaseException]:
        first = asyncio.ensure_future(thread.call(_slow(1.2)))
        await asyncio.sleep(0)  # the first is running before the second is queued
        second = asyncio.ensure_future(thread.call(_slow(2.0)))
        done = await asyncio.gather(first, second, return_exceptions=True)
        return [*done, await thread.call(_slow(0))]  # queued behind the second's run

    with caplog.at_level(logging.WARNING, logger="controller.store.thread"):
        first, second, third = asyncio.run(calls())
    thread.close()
    assert (first, third) == (1.2, 0)
    assert isinstance(second, StoreUnavailable)
    assert str(second) == "the database has not answered for 2s; try again shortly"
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("the database has not answered a call for 2s "), said
    again = re.fullmatch(r"the database answers again, after (\d+)s", said[1])
    assert again is not None, said
    assert int(again.group(1)) >= 2, said  # when the second's run ended
    assert len(said) == 2, said


@pytest.mark.timeout(60)
def test_a_hung_call_that_ends_in_failure_is_not_said_to_be_an_answer(caplog):
    """A call that outlives the timeout and then fails (the pool could not
    make a connection in time: the database is still down) ends the hang
    for the callers, but is not said to be the database answering again."""
    thread = StoreThread(cast(Store, _Nothing()), timeout=1.0)

    def unreachable(store: Store) -> None:
        time.sleep(1.5)
        raise StoreUnavailable("cannot reach PostgreSQL; try again shortly", 5.0)

    async def calls() -> float:
        with pytest.raises(StoreUnavailable, match="has not answered for 1s"):
            await thread.call(unreachable)
        await asyncio.sleep(1.0)  # it has failed meanwhile: calls are run again
        return await thread.call(_slow(0))

    with caplog.at_level(logging.WARNING, logger="controller.store.thread"):
        assert asyncio.run(calls()) == 0
    thread.close()
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("the database has not answered a call for 1s "), said
    assert re.fullmatch(
        r"the database call that hung failed after \ds \(cannot reach PostgreSQL; try again "
        r"shortly\); calls go to the database again",
        said[1],
    ), said
    assert len(said) == 2, said


@pytest.mark.timeout(60)
def test_a_call_still_hung_at_close_is_not_waited_on_past_the_timeout(caplog):
    thread = StoreThread(cast(Store, _Nothing()), timeout=0.5)

    async def hang() -> None:
        with pytest.raises(StoreUnavailable):
            await thread.call(_slow(30))  # a frozen database

    asyncio.run(hang())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="controller.store.thread"):
        thread.close()
    assert time.monotonic() - started < 5
    assert any("still hangs" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_a_process_whose_store_call_hangs_still_ends_once_closed():
    """The store's thread is a daemon: a stopped controller ends even while
    a call hangs on a frozen database (ThreadPoolExecutor's worker was
    joined at exit, so the process waited for the database)."""
    program = (
        "import asyncio, time\n"
        "from controller.store.thread import StoreThread\n"
        "class Nothing:\n"
        "    def close(self): pass\n"
        "thread = StoreThread(Nothing(), timeout=0.3)\n"
        "async def main():\n"
        "    try:\n"
        "        await thread.call(lambda store: time.sleep(3600))\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
        "asyncio.run(main())\n"
        "thread.close()\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "StoreUnavailable"
    assert time.monotonic() - started < 20
