"""The controller's registry of Watch streams (controller.api.push)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.api.limits import Admission, Capacity
from controller.api.push import (
    MAX_SPREAD_MS,
    MAX_WINDOW,
    MIN_WINDOW,
    NUDGED_UNITS,
    PACE_ADJUST,
    PACE_DOWN,
    PACE_FORGET,
    PACE_STEP,
    PACE_UP,
    Nudge,
    Pacer,
    Watchers,
)
from controller.errors import Overloaded


def _open(watchers: Watchers, host_id: str) -> object:
    """A stream registered at once (as the servicer does before its headers)."""
    return watchers.follow(watchers.open(host_id))


async def _next(stream: object, timeout: float = 1.0) -> Nudge | None:
    """The next nudge of an async iterator, None when it ended."""
    with contextlib.suppress(StopAsyncIteration):
        return await asyncio.wait_for(anext(stream), timeout)  # type: ignore[call-overload]
    return None


async def _reason(stream: object, timeout: float = 1.0) -> str | None:
    """The reason of the next nudge, None when the stream ended."""
    nudge = await _next(stream, timeout)
    return None if nudge is None else nudge.reason


def test_a_nudge_reaches_only_the_hosts_named():
    async def scenario() -> None:
        watchers = Watchers()
        a, b = _open(watchers, "h-a"), _open(watchers, "h-b")
        waiting_a = asyncio.ensure_future(_reason(a))
        waiting_b = asyncio.ensure_future(_next(b, timeout=0.2))
        await asyncio.sleep(0)  # both registered
        assert len(watchers) == 2
        assert watchers.nudge(["h-a", "h-unknown"], "campaign") == 1
        assert await waiting_a == "campaign"
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
        assert await _reason(stream) == "revert"

    asyncio.run(scenario())


def test_a_large_nudge_is_paced_a_window_at_a_time():
    """300 hosts nudged, with a measured capacity of 120 nudged check-ins a
    second: a second's worth (120) at once, then a new one as each nudged
    host's check-in is served; each once, each asked to spread its check-in
    over the second the controller needs for the window."""

    async def scenario() -> None:
        admission = Admission(capacity=Capacity(per_second=120 * NUDGED_UNITS))
        watchers = Watchers(admission)
        streams = {f"h-{i}": _open(watchers, f"h-{i}") for i in range(300)}
        await asyncio.sleep(0)
        assert watchers.nudge(None, "campaign") == 300
        assert watchers.pacer.window == 120
        assert watchers.nudged == 120
        assert watchers.waiting == 180
        got = []
        for host_id, stream in streams.items():  # each checks in when nudged
            got.append(await _next(stream, timeout=5))
            watchers.served(host_id)
            assert len(watchers.pacer) <= 120
        assert got == [Nudge("campaign", MAX_SPREAD_MS)] * 300
        assert watchers.nudged == 300
        assert watchers.waiting == 0
        assert len(watchers.pacer) == 0

    asyncio.run(scenario())


def test_hosts_waiting_for_their_nudge_keep_their_turn_and_take_the_newer_reason():
    async def scenario() -> None:
        watchers = Watchers(Admission(capacity=Capacity(per_second=20 * NUDGED_UNITS)))
        streams = {f"h-{i}": _open(watchers, f"h-{i}") for i in range(30)}  # a window of 20
        await asyncio.sleep(0)
        watchers.nudge(None, "campaign")
        assert watchers.nudged == 20
        watchers.close("h-27")  # gone before its turn: skipped
        watchers.nudge(["h-29", "h-28", "h-2"], "revert")  # h-28, h-29 waiting: the newer reason
        campaign, revert = "campaign", "revert"
        got = {}
        for host_id, stream in streams.items():
            if host_id != "h-27":
                got[host_id] = await _reason(stream, timeout=5)
                watchers.served(host_id)
        assert got == {
            **{f"h-{i}": campaign for i in range(27)}, "h-28": revert, "h-29": revert,
        }  # fmt: skip
        assert await _reason(streams["h-2"], timeout=5) == revert  # nudged already: again
        assert watchers.nudged == 30
        assert watchers.waiting == 0

    asyncio.run(scenario())


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _steps(pacer: Pacer, clock: _Clock, seconds: float, fill: bool = False) -> None:
    """Step the pacer for ``seconds``; ``fill``: nudging all it allows each step."""
    for _ in range(round(seconds / PACE_STEP)):
        clock.now += PACE_STEP
        pacer.step()
        if fill:
            _fill(pacer, f"at-{clock.now}")


def _fill(pacer: Pacer, prefix: str = "n") -> None:
    for n in range(pacer.room()):
        pacer.sent(f"{prefix}-{n}")


def test_the_window_follows_the_controller_s_load():
    """The window starts as a second's worth of nudged check-ins at the
    measured capacity; it shrinks when the controller was loaded (half its
    room for calls in use on average, or a call shed), grows when it was
    full and the controller was not, and holds when it was not full.
    Hosts leave it when served, or when they did not come."""
    clock = _Clock()
    admission = Admission(max_in_flight=100, capacity=Capacity(per_second=400 * NUDGED_UNITS))
    pacer = Pacer(admission, clock)
    assert pacer.window == 400
    assert pacer.step() == 400
    pacer.sent("h-a")
    pacer.sent("h-b")
    assert pacer.room() == 398
    assert pacer.served("h-a")
    assert not pacer.served("h-a")  # once
    assert not pacer.served("h-z")  # never nudged
    assert pacer.room() == 399
    _fill(pacer)
    _steps(pacer, clock, PACE_ADJUST)  # full, unloaded: grows
    assert pacer.window == pytest.approx(400 * PACE_UP)
    assert pacer.room() == 100
    _steps(pacer, clock, PACE_ADJUST)  # not full: holds
    assert pacer.window == pytest.approx(400 * PACE_UP)
    with contextlib.ExitStack() as calls:
        for n in range(60):  # loaded
            calls.enter_context(admission.admit(f"h-{n}", "CheckIn"))
        _steps(pacer, clock, PACE_ADJUST)
        assert pacer.window == pytest.approx(400 * PACE_UP * PACE_DOWN)
        assert pacer.room() == 0
    with contextlib.ExitStack() as calls:  # one call shed
        for n in range(100):
            calls.enter_context(admission.admit(f"h-{n}", "CheckIn"))
        with contextlib.suppress(Overloaded), admission.admit("h-over", "CheckIn"):
            pass
    _steps(pacer, clock, PACE_ADJUST)
    assert pacer.window == pytest.approx(400 * PACE_UP * PACE_DOWN**2)
    _steps(pacer, clock, PACE_FORGET)  # nobody came: forgotten
    assert len(pacer) == 0
    _steps(pacer, clock, 100 * PACE_ADJUST, fill=True)
    assert pacer.window == MAX_WINDOW
    with contextlib.ExitStack() as calls:
        for n in range(60):
            calls.enter_context(admission.admit(f"h-{n}", "CheckIn"))
        for _ in range(100):
            _steps(pacer, clock, PACE_ADJUST)
    assert pacer.window == MIN_WINDOW
    pacer.reset()
    assert pacer.window == 400


def test_nudged_hosts_spread_their_check_ins_over_the_time_to_serve_them():
    """At 400 nudged check-ins a second measured: 100 hosts over a quarter
    of a second, one host at once, a window or more over MAX_SPREAD_MS;
    hosts nudged while others are awaited over the time to serve them all
    (they would only wait their turn, in a longer queue)."""
    pacer = Pacer(Admission(capacity=Capacity(per_second=400 * NUDGED_UNITS)))
    assert pacer.spread_ms(100) == 250
    assert pacer.spread_ms(1) <= 3
    assert pacer.spread_ms(400) == MAX_SPREAD_MS
    assert pacer.spread_ms(40_000) == MAX_SPREAD_MS
    for n in range(100):
        pacer.sent(f"h-{n}")
    assert pacer.spread_ms(20) == 300
    for n in range(100):
        pacer.served(f"h-{n}")
    assert pacer.spread_ms(20) == 50
    slow = Pacer(Admission(capacity=Capacity(per_second=20 * NUDGED_UNITS)))
    assert slow.spread_ms(10) == 500


def test_a_small_push_is_asked_to_come_in_the_time_it_takes_not_a_window_s():
    """30 hosts at 120 nudged check-ins a second: a quarter of a second."""

    async def scenario() -> None:
        watchers = Watchers(Admission(capacity=Capacity(per_second=120 * NUDGED_UNITS)))
        streams = [_open(watchers, f"h-{i}") for i in range(30)]
        await asyncio.sleep(0)
        assert watchers.nudge(None, "campaign") == 30
        assert [await _next(s) for s in streams] == [Nudge("campaign", 250)] * 30
        watchers.close_all()

    asyncio.run(scenario())


def test_a_nudge_while_nudged_hosts_are_awaited_keeps_the_window():
    """Streams opening one by one after a restart are each nudged (a key
    revoked): the window they share is the one the load has set, not
    started afresh at every nudge; once none is awaited, it is."""

    async def scenario() -> None:
        clock = _Clock()
        admission = Admission(max_in_flight=100, capacity=Capacity(per_second=400 * NUDGED_UNITS))
        watchers = Watchers(admission)
        watchers.pacer = Pacer(admission, clock)
        streams = [_open(watchers, f"h-{n}") for n in range(3)]
        watchers.nudge(["h-0"], "key-revoked")
        watchers.pacer.window = MIN_WINDOW  # as if the load had shrunk it
        watchers.nudge(["h-1"], "key-revoked")  # h-0 not served yet
        assert watchers.pacer.window == MIN_WINDOW
        watchers.served("h-0")
        watchers.served("h-1")
        watchers.nudge(["h-2"], "key-revoked")  # none awaited: a new push
        assert watchers.pacer.window == 400
        watchers.pacer.window = MIN_WINDOW
        clock.now += PACE_FORGET  # h-2 never came: forgotten
        watchers.nudge(["h-0"], "revert")
        assert watchers.pacer.window == 400
        assert [await _reason(s) for s in streams] == [
            "revert",  # the newer, unread yet
            "key-revoked",
            "key-revoked",
        ]
        watchers.close_all()

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
        new_waiting = asyncio.ensure_future(_reason(new))
        await asyncio.sleep(0)
        assert await old_waiting is None  # the older one ended
        assert len(watchers) == 1  # its end did not forget the newer one
        watchers.nudge(["h-a"], "revert")
        assert await new_waiting == "revert"

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
    greeting = key_revoked_greeting(
        [started - timedelta(minutes=2)], interval, started, lambda: now[0]
    )
    assert greeting() == "key-revoked"
    now[0] = started + interval + timedelta(seconds=1)
    assert greeting() is None  # every host has checked in since
    # A revocation older than an interval before the start: hosts knew already.
    old = key_revoked_greeting([started - timedelta(hours=1)], interval, started, lambda: started)
    assert old() is None
    assert key_revoked_greeting([], interval, started, lambda: started)() is None
