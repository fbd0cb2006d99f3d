"""The agent's side of push (agent.link.watch): nudged check-ins are rate
limited and spread, whatever the controller asks."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from fleetpatch.identity import Identity, Role
from fleetpatch.v1 import agent_pb2

from agent.errors import ControllerUnavailable
from agent.link.client import ControllerClient
from agent.link.watch import MAX_SPREAD_SECONDS, NudgeLimit, Watcher, nudge_delay
from controller.fleet.pki import CertificateAuthority, key_to_pem, new_key


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
    delays = [nudge_delay(agent_pb2.Nudge(spread_ms=3000), rng) for _ in range(200)]
    assert all(0 <= d <= 3.0 for d in delays)
    assert max(delays) > 2.0  # spread over what was asked, not bunched
    assert all(0 <= nudge_delay(agent_pb2.Nudge(spread_ms=20), rng) <= 0.02 for _ in range(200))
    assert nudge_delay(agent_pb2.Nudge(spread_ms=0), rng) == 0.0  # at once, as asked
    for _ in range(200):
        assert nudge_delay(agent_pb2.Nudge(spread_ms=4_000_000_000), rng) <= MAX_SPREAD_SECONDS


def _waiting(clock: Clock, stop: threading.Event) -> Callable[[float], bool]:
    """The watcher's sleep, on the test's clock: returns at once."""

    def wait(seconds: float) -> bool:
        clock.now += seconds
        return stop.is_set()

    return wait


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
        rng=random.Random(1), clock=clock, wait=_waiting(clock, stop),
    )  # fmt: skip
    # Zero delays: the clamped spread is at least a second, so patch the rng.
    watcher._rng = random.Random(1)
    watcher._rng.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
    watcher.run()
    assert client.opened == 3  # two streams, then the failed reconnect
    assert watcher.opened == 2
    assert watcher.nudges == 3
    # One allowed in the hour: the first stream's second nudge is dropped, and
    # nothing more read until the hour is over; then the next is allowed.
    assert watcher.limit.dropped == 1
    assert clock.now - 1000.0 >= 3600
    assert wake.is_set()


def test_a_flood_of_nudges_is_read_a_minute_apart_and_logged_so(caplog):
    """A controller sending nudges as fast as it can, with a spread of 0 and
    a reason that would start log lines of its own: past the burst, the
    watcher reads one a minute (the stream's flow control holds the rest
    back), so the host checks in once a minute and logs a line a minute."""
    stop = threading.Event()
    clock = Clock()
    forged = "campaign\n2026-01-01 00:00:00,000 CRITICAL agent: forged"
    flood = [None] + [agent_pb2.Nudge(reason=forged, spread_ms=0)] * 1000
    wakes = 0

    class Counting(threading.Event):
        def set(self) -> None:
            nonlocal wakes
            wakes += 1

    client = FakeClient([flood], stop)
    watcher = Watcher(client, Counting(), stop, NudgeLimit(burst=3, every=60.0, clock=clock),  # type: ignore[arg-type]
                      rng=random.Random(1), clock=clock, wait=_waiting(clock, stop))  # fmt: skip
    started = clock.now
    with caplog.at_level("INFO", logger="agent.link.watch"):
        watcher.run()
    minutes = (clock.now - started) / 60
    assert watcher.nudges == 1000
    assert wakes <= 3 + minutes + 1  # the burst, then one a minute
    assert wakes >= 400  # the nudges read were honoured, a minute apart
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == watcher.limit.dropped <= minutes + 1
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert "campaign?2026-01-01" in warnings[0].getMessage()


def test_the_watcher_outlives_a_stream_that_fails_unexpectedly(caplog):
    """A surprise (not an agent error) opening the stream: a warning, and
    the watcher opens it again; push is not lost until a restart."""
    stop, wake = threading.Event(), threading.Event()
    clock = Clock()

    class Surprising(FakeClient):
        def watch(self) -> tuple[Iterator[agent_pb2.Nudge | None], Callable[[], None]]:
            if self.opened == 0:
                self.opened += 1
                raise RuntimeError("something nobody expected")
            return super().watch()

    nudge = agent_pb2.Nudge(reason="campaign", spread_ms=1)
    client = Surprising([[None, nudge]], stop)
    watcher = Watcher(client, wake, stop, NudgeLimit(clock=clock), rng=random.Random(1),  # type: ignore[arg-type]
                      clock=clock, wait=_waiting(clock, stop))  # fmt: skip
    with caplog.at_level("WARNING", logger="agent.link.watch"):
        watcher.run()
    assert watcher.opened == 1
    assert wake.is_set()
    assert "something nobody expected" in caplog.text


def test_watching_on_a_channel_closed_meanwhile_is_an_agent_error(tmp_path):
    """The loop's thread closes the channel to move to another replica (or
    to a renewed certificate) while the watch thread opens its stream: an
    AgentError the watcher backs off from, not a ValueError that ends it."""
    ca = CertificateAuthority.create()
    key = new_key()
    cert = ca.issue_client(Identity(Role.HOST, "h-0123456789abcdef"), key.public_key())
    client = ControllerClient(
        "127.0.0.1:1", ca.cert_pem, key_to_pem(key), cert.public_bytes(serialization.Encoding.PEM)
    )
    client.close()
    with pytest.raises(ControllerUnavailable, match=r"cannot watch on 127\.0\.0\.1:1"):
        client.watch()
