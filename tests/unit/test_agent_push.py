"""The agent's side of push (agent.link.watch): nudged check-ins are rate
limited and spread, whatever the controller asks."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

from fleetpatch.v1 import agent_pb2

from agent.errors import ControllerUnavailable
from agent.link.watch import MAX_SPREAD_SECONDS, NudgeLimit, Watcher, nudge_delay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_then_one_per_interval():
    clock = Clock()
    limit = NudgeLimit(burst=3, every=60.0, clock=clock)
    assert [limit.allow() for _ in range(5)] == [True, True, True, False, False]
    assert limit.dropped == 2
    clock.now += 30
    assert not limit.allow()
    clock.now += 30
    assert limit.allow()
    assert not limit.allow()


def test_a_hostile_controller_cannot_make_the_host_spin():
    clock = Clock()
    limit = NudgeLimit(burst=3, every=60.0, clock=clock)
    allowed = 0
    for _ in range(3600 * 10):  # ten nudges a second for an hour
        clock.now += 0.1
        allowed += limit.allow()
    assert allowed <= 3 + 60  # the burst, then one a minute


def test_the_tokens_never_exceed_the_burst_after_a_long_quiet():
    clock = Clock()
    limit = NudgeLimit(burst=2, every=10.0, clock=clock)
    clock.now += 10_000
    assert [limit.allow() for _ in range(3)] == [True, True, False]


def test_the_delay_is_within_the_spread_asked_and_clamped():
    rng = random.Random(7)
    for _ in range(200):
        assert 0 <= nudge_delay(agent_pb2.Nudge(spread_ms=3000), rng) <= 3.0
        assert 0 <= nudge_delay(agent_pb2.Nudge(spread_ms=0), rng) <= 1.0
        assert nudge_delay(agent_pb2.Nudge(spread_ms=4_000_000_000), rng) <= MAX_SPREAD_SECONDS


class FakeClient:
    """Streams handed out one after the other; then the controller is gone."""

    def __init__(self, streams: list[list[agent_pb2.Nudge | None]], stop: threading.Event) -> None:
        self._streams = streams
        self._stop = stop
        self.opened = 0

    def watch(self) -> tuple[Iterator[agent_pb2.Nudge | None], Callable[[], None]]:
        self.opened += 1
        if not self._streams:
            self._stop.set()
            raise ControllerUnavailable("gone")
        return iter(self._streams.pop(0)), lambda: None


def test_the_watcher_wakes_the_loop_within_the_limit_and_reconnects():
    stop, wake = threading.Event(), threading.Event()
    nudge = agent_pb2.Nudge(reason="campaign", spread_ms=1)
    client = FakeClient([[None, nudge, nudge], [None, nudge]], stop)
    clock = Clock()
    watcher = Watcher(
        client, wake, stop, NudgeLimit(burst=1, every=3600, clock=clock),  # type: ignore[arg-type]
        rng=random.Random(1), clock=clock,
    )  # fmt: skip
    # Zero delays: the clamped spread is at least a second, so patch the rng.
    watcher._rng = random.Random(1)
    watcher._rng.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
    watcher.run()
    assert client.opened == 3  # two streams, then the failed reconnect
    assert watcher.opened == 2
    assert watcher.nudges == 3
    assert watcher.limit.dropped == 2  # one allowed in the hour
    assert wake.is_set()
