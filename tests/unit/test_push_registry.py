"""The controller's registry of Watch streams (controller.api.push)."""

from __future__ import annotations

import asyncio
import contextlib

from controller.api.limits import Capacity
from controller.api.push import MIN_SPREAD_MS, Nudge, Watchers


def _open(watchers: Watchers, host_id: str, first: Nudge | None = None) -> object:
    """A stream registered at once (as the servicer does before its headers)."""
    return watchers.follow(watchers.open(host_id, first))


async def _next(stream: object, timeout: float = 1.0) -> Nudge | None:
    """The next nudge of an async iterator, None when it ended."""
    with contextlib.suppress(StopAsyncIteration):
        return await asyncio.wait_for(anext(stream), timeout)  # type: ignore[call-overload]
    return None


def test_a_nudge_reaches_only_the_hosts_named():
    async def scenario() -> None:
        watchers = Watchers()
        a, b = _open(watchers, "h-a"), _open(watchers, "h-b")
        waiting_a = asyncio.ensure_future(_next(a))
        waiting_b = asyncio.ensure_future(_next(b, timeout=0.2))
        await asyncio.sleep(0)  # both registered
        assert len(watchers) == 2
        assert watchers.nudge(["h-a", "h-unknown"], "campaign") == 1
        assert await waiting_a == Nudge("campaign", MIN_SPREAD_MS)
        try:
            await waiting_b
            raise AssertionError("h-b was not nudged")
        except TimeoutError:
            pass

    asyncio.run(scenario())


def test_nudges_while_a_stream_is_busy_are_kept_and_coalesced():
    async def scenario() -> None:
        watchers = Watchers()
        stream = _open(watchers, "h-a")
        first = asyncio.ensure_future(_next(stream))
        await asyncio.sleep(0)
        watchers.nudge(None, "campaign")
        assert (await first) is not None
        # Not waiting now: two nudges meanwhile come as the last one.
        watchers.nudge(None, "campaign")
        watchers.nudge(None, "revert")
        assert await _next(stream) == Nudge("revert", MIN_SPREAD_MS)

    asyncio.run(scenario())


def test_a_large_nudge_is_spread_over_what_the_controller_serves():
    async def scenario() -> None:
        watchers = Watchers(Capacity(per_second=100.0))
        streams = [_open(watchers, f"h-{i}") for i in range(300)]
        waiting = [asyncio.ensure_future(_next(s)) for s in streams]
        await asyncio.sleep(0)
        assert watchers.nudge(None, "campaign") == 300
        got = await asyncio.gather(*waiting)
        assert {n.spread_ms for n in got if n is not None} == {3000}  # 300 hosts at 100/s

    asyncio.run(scenario())


def test_closing_a_host_ends_its_stream_and_forgets_it():
    async def scenario() -> None:
        watchers = Watchers()
        stream = _open(watchers, "h-a")
        waiting = asyncio.ensure_future(_next(stream))
        await asyncio.sleep(0)
        watchers.close("h-a")
        assert await waiting is None
        assert "h-a" not in watchers
        assert watchers.nudge(["h-a"], "campaign") == 0

    asyncio.run(scenario())


def test_a_second_stream_of_a_host_replaces_the_first():
    async def scenario() -> None:
        watchers = Watchers()
        old = _open(watchers, "h-a")
        old_waiting = asyncio.ensure_future(_next(old))
        await asyncio.sleep(0)
        new = _open(watchers, "h-a")
        new_waiting = asyncio.ensure_future(_next(new))
        await asyncio.sleep(0)
        assert await old_waiting is None  # the older one ended
        assert len(watchers) == 1  # its end did not forget the newer one
        watchers.nudge(["h-a"], "revert")
        assert await new_waiting == Nudge("revert", MIN_SPREAD_MS)

    asyncio.run(scenario())


def test_a_stream_opens_with_its_greeting():
    async def scenario() -> None:
        watchers = Watchers()
        stream = _open(watchers, "h-a", Nudge("key-revoked", 2000))
        assert await _next(stream) == Nudge("key-revoked", 2000)

    asyncio.run(scenario())


def test_close_all_ends_every_stream():
    async def scenario() -> None:
        watchers = Watchers()
        streams = [_open(watchers, f"h-{i}") for i in range(5)]
        waiting = [asyncio.ensure_future(_next(s)) for s in streams]
        await asyncio.sleep(0)
        watchers.close_all()
        assert await asyncio.gather(*waiting) == [None] * 5
        assert len(watchers) == 0

    asyncio.run(scenario())


def test_a_key_revoked_just_before_the_start_greets_streams_for_an_interval():
    from datetime import UTC, datetime, timedelta

    from controller.api.server import key_revoked_greeting

    started = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    interval = timedelta(minutes=5)
    now = [started]
    watchers = Watchers()
    greeting = key_revoked_greeting(
        [started - timedelta(minutes=2)], interval, watchers, started, lambda: now[0]
    )
    assert greeting() == Nudge("key-revoked", MIN_SPREAD_MS)
    now[0] = started + interval + timedelta(seconds=1)
    assert greeting() is None  # every host has checked in since
    # A revocation older than an interval before the start: hosts knew already.
    old = key_revoked_greeting(
        [started - timedelta(hours=1)], interval, watchers, started, lambda: started
    )
    assert old() is None
    assert key_revoked_greeting([], interval, watchers, started, lambda: started)() is None
