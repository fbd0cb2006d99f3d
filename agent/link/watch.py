"""Push: the agent's Watch stream, on which the controller nudges it to
check in now (urgent work). A nudge is only a wake-up call: the check-in it
brings on is the usual one, and orders come only in its answer, signed. So
a hostile or broken controller can at most bring check-ins forward, and
not often: nudged check-ins are rate-limited (`NudgeLimit`) and spread
(`nudge_delay`). The stream runs on a thread of its own beside the check-in
loop, reconnecting with backoff; it only sets an event the loop waits on,
so the crash-safe handling of orders (the loop's thread) is untouched."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetpatch.v1 import agent_pb2

from agent.errors import AgentError
from agent.link.backoff import backoff_delay
from agent.link.client import ControllerClient

log = logging.getLogger(__name__)

# How long a nudged check-in may be put off at most: the controller asks
# for a spread (the time it needs to serve the hosts it nudged together); a
# larger one is cut to this. A small one is taken as asked: how often a
# controller may bring check-ins forward is `NudgeLimit`'s to cap.
MAX_SPREAD_SECONDS = 60.0
# Reconnecting a stream that broke: full-jitter backoff up to this.
MAX_RECONNECT_SECONDS = 120.0
# A stream that stayed open this long was healthy: its end starts the
# backoff afresh.
HEALTHY_SECONDS = 60.0


@dataclass
class NudgeLimit:
    """A token bucket: at most ``burst`` nudged check-ins at once, then one
    per ``every`` seconds. Nudges beyond it are dropped (the regular
    check-in still comes), so a controller cannot make the host spin."""

    burst: int = 3
    every: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)
    dropped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.clock()

    def allow(self) -> bool:
        """Take a token for one nudged check-in; False when there is none."""
        self._refill()
        if self._tokens >= 1.0 - 1e-9:  # `due` seconds later, rounding aside
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        self.dropped += 1
        return False

    def due(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) * self.every)

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) / self.every)
        self._at = now


def _printable(reason: str) -> str:
    """A nudge's reason as logged: the controller's words, so no more than
    40 characters and nothing that could start a line of its own."""
    return "".join(c if c.isprintable() else "?" for c in reason[:40])


def nudge_delay(nudge: agent_pb2.Nudge, rng: random.Random) -> float:
    """Seconds to wait before a nudged check-in: uniform within the spread
    the controller asked for, at most MAX_SPREAD_SECONDS."""
    return rng.uniform(0.0, min(MAX_SPREAD_SECONDS, nudge.spread_ms / 1000))


class Watcher:
    """Keeps the Watch stream open and, on each nudge the limit allows,
    sets ``wake`` (after the jittered delay) for the check-in loop."""

    def __init__(
        self,
        client: ControllerClient,
        wake: threading.Event,
        stop: threading.Event,
        limit: NudgeLimit | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._client = client
        self._wake = wake
        self._stop = stop
        self._wait = wait or stop.wait  # sleeps; True once stop is set
        self.limit = limit or NudgeLimit()
        self._rng = rng or random.Random()
        self._clock = clock
        self._cancel: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.nudges = 0  # received, for tests
        self.opened = 0  # streams the controller opened, for tests
        self.connected = threading.Event()  # set while a stream is open

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Cancel the stream (from any thread); `run` returns once ``stop`` is set."""
        cancel = self._cancel
        if cancel is not None:
            cancel()

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            opened = self._clock()
            try:
                self._follow()
                why = "the controller ended the stream"
            except AgentError as exc:
                why = str(exc)
            except Exception as exc:  # push must outlive a surprise; polling goes on
                why = f"{type(exc).__name__}: {exc}"
                log.warning("watch: the stream failed unexpectedly (%s); reconnecting", why)
            if self._stop.is_set():
                return
            failures = 1 if self._clock() - opened >= HEALTHY_SECONDS else failures + 1
            delay = backoff_delay(failures, self._rng, cap=MAX_RECONNECT_SECONDS)
            log.debug("watch: %s; reconnecting in %.0fs", why, delay)
            if self._wait(delay):
                return

    def _follow(self) -> None:
        nudges, self._cancel = self._client.watch()
        try:
            for nudge in nudges:
                if nudge is None:
                    self.opened += 1
                    self.connected.set()
                    log.debug("watch: stream open; the controller may nudge us")
                    continue
                self.nudges += 1
                reason = _printable(nudge.reason)
                if not self.limit.allow():
                    # Nothing more is read until a token is due: gRPC's flow
                    # control then holds the controller back, and a flood
                    # costs a line a minute, not a line (and a turn) a nudge.
                    due = self.limit.due()
                    log.warning("nudged to check in (%s) too often; ignored (%d so far), the "
                                "next nudge read in %.0fs", reason, self.limit.dropped,
                                due)  # fmt: skip
                    if self._wait(due):
                        return
                    continue
                delay = nudge_delay(nudge, self._rng)
                log.info("nudged to check in (%s); checking in within %.1fs",
                         reason, delay)  # fmt: skip
                if self._wait(delay):
                    return
                self._wake.set()
        finally:
            self.connected.clear()
            self._cancel = None
