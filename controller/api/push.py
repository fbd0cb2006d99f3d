"""Push for urgent work: the connected agents' Watch streams, and nudges.

A nudge asks a host to check in now; it carries a reason word and how
widely to spread the check-ins, nothing a host must trust (orders travel
only in check-in answers, signed). Each host has at most one stream here: a
newer one replaces the older, which ends. A stream costs one small object
and one pending future while idle (measured in benchmarks/push.py).

Replicas sharing a database each nudge their own streams: the one where an
admin approves nudges at once, the others when their campaign tick re-reads
the campaigns (`CampaignEngine` notices what is new and calls `nudge`).

Many hosts nudged at once are paced (`Pacer`): nudged in turn, a window of
them at a time, a new one as a nudged host's check-in is served, so that
they come in as fast as the controller serves them and no faster (a host
shed for load costs the controller nearly what one served does, and comes
back later). The window follows the controller's load rather than an
assumed rate: gRPC holds calls the event loop has not taken up yet where
the controller's own counts cannot see them, but a check-in not served is
a host still in the window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from controller.api.limits import DEFAULT_CAPACITY, ORDER_UNITS, Admission

log = logging.getLogger(__name__)

# Nudged hosts are asked to spread their check-ins over the time the
# controller needs to serve them and those nudged before them, at the rate
# it was measured to serve (`Pacer.spread_ms`), so that they come in as it
# can take them: a few hosts check in at once, a full window over at most
# this.
MAX_SPREAD_MS = 1000
# The pacer. Nudged hosts whose check-in has not been served yet are "in
# the window"; every PACE_STEP seconds, and whenever one is served, the
# window is topped up from the hosts waiting. A host not served within
# PACE_FORGET seconds of its nudge (it did not come: the agent's own limit
# on nudged check-ins, a stream that broke) leaves the window. Every
# PACE_ADJUST seconds the window shrinks by PACE_DOWN if the controller
# was loaded meanwhile (it shed a call, or had PACE_TARGET of its room for
# calls in use on average) and grows by PACE_UP if it was full and the
# controller was not. It starts as a second of nudges at the rate
# `Capacity` measured (in light calls) over NUDGED_UNITS: a nudged
# check-in carries a newly signed and recorded order (ORDER_UNITS more
# than a light call, and counted so when it is served). The hosts of a
# full window are asked to spread their check-ins over MAX_SPREAD_MS, so it
# holds about that much of the controller's work.
NUDGED_UNITS = 1.0 + ORDER_UNITS
PACE_STEP = 0.1
PACE_ADJUST = 0.5
PACE_FORGET = 5.0
PACE_UP = 1.25
PACE_DOWN = 0.7
PACE_TARGET = 0.5
MIN_WINDOW = 16
MAX_WINDOW = 100_000


@dataclass(frozen=True)
class Nudge:
    reason: str
    spread_ms: int


class _Stream:
    """One host's stream: the nudge waiting to be sent, and the future the
    stream sleeps on while there is none."""

    __slots__ = ("closed", "pending", "waiter")

    def __init__(self) -> None:
        self.pending: Nudge | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Pacer:
    """How many more hosts to nudge now: a window of hosts nudged whose
    check-in has not been served yet (`sent`, `served`), sized to the
    controller's load (`step`). Call on the event loop."""

    def __init__(self, admission: Admission, clock: Callable[[], float] = time.monotonic) -> None:
        self._admission = admission
        self._clock = clock
        self._in: dict[str, float] = {}  # host id: when it was nudged
        self._order: deque[tuple[float, str]] = deque()  # the same, oldest first
        self.window = self._start_window()
        self._window_start: float | None = None
        self._shed = self._steps = self._load = self._full = 0

    def _start_window(self) -> float:
        measured = min(self._admission.capacity.per_second, DEFAULT_CAPACITY)
        return max(float(MIN_WINDOW), measured / NUDGED_UNITS * MAX_SPREAD_MS / 1000)

    def spread_ms(self, hosts: int) -> int:
        """Over how long ``hosts`` about to be nudged should spread their
        check-ins: the time the controller needs to serve them and the
        hosts in the window before them, at the rate it was measured to
        serve (nudged check-ins a second), at most MAX_SPREAD_MS. A host
        that came sooner would only wait its turn, in a longer queue."""
        per_second = max(self._admission.capacity.per_second, 1.0) / NUDGED_UNITS
        return min(MAX_SPREAD_MS, round((len(self._in) + hosts) / per_second * 1000))

    def __len__(self) -> int:
        """Hosts in the window."""
        return len(self._in)

    def idle(self) -> bool:
        """Whether no nudged host is awaited (those that did not come
        within PACE_FORGET are forgotten)."""
        self._forget(self._clock())
        return not self._in

    def reset(self) -> None:
        """Nudging starts afresh (nothing waited for a while)."""
        self.window = self._start_window()
        self._window_start = None

    def sent(self, host_id: str) -> None:
        now = self._clock()
        self._in[host_id] = now
        self._order.append((now, host_id))

    def served(self, host_id: str) -> bool:
        """A check-in of ``host_id`` was served; whether it was in the window."""
        return self._in.pop(host_id, None) is not None

    def room(self) -> int:
        """How many more hosts may be nudged now."""
        return max(0, int(self.window) - len(self._in))

    def step(self) -> int:
        """Forget hosts that did not come, adjust the window to the load;
        how many more hosts may be nudged now."""
        now = self._clock()
        self._forget(now)
        if self._window_start is None:
            self._begin(now)
        else:
            self._watch(now, self._window_start)
        return self.room()

    def _forget(self, now: float) -> None:
        while self._order and now - self._order[0][0] >= PACE_FORGET:
            at, host_id = self._order.popleft()
            if self._in.get(host_id) == at:
                del self._in[host_id]

    def _begin(self, now: float) -> None:
        self._window_start, self._shed = now, self._admission.shed
        self._steps = self._load = self._full = 0

    def _watch(self, now: float, since: float) -> None:
        self._steps += 1
        self._load += self._admission.in_flight
        self._full += len(self._in) >= int(self.window)
        if now - since < PACE_ADJUST - PACE_STEP / 2:
            return
        shed = self._admission.shed > self._shed
        loaded = self._load / self._steps >= self._admission.max_in_flight * PACE_TARGET
        if shed or loaded:
            self.window = max(float(MIN_WINDOW), self.window * PACE_DOWN)
        elif self._full * 2 >= self._steps:
            self.window = min(float(MAX_WINDOW), self.window * PACE_UP)
        self._begin(now)


class Watchers:
    """The open Watch streams, by host id. Call on the event loop."""

    def __init__(self, admission: Admission | None = None) -> None:
        self._streams: dict[str, _Stream] = {}
        self._admission = admission or Admission()
        self.pacer = Pacer(self._admission)
        # Hosts waiting for their nudge, in turn, and the reason of each.
        self._waiting: deque[str] = deque()
        self._reasons: dict[str, str] = {}
        self._pacing: asyncio.Task[None] | None = None
        self.nudged = 0  # nudges handed to streams, for tests and metrics

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, host_id: str) -> bool:
        return host_id in self._streams

    def open(self, host_id: str) -> _Stream:
        """Register a stream for ``host_id`` (ending its older one, if any);
        `follow` it, then `release` it."""
        stream = _Stream()
        older = self._streams.get(host_id)
        if older is not None:
            older.closed = True
            older.wake()
        self._streams[host_id] = stream
        return stream

    async def follow(self, stream: _Stream) -> AsyncIterator[Nudge]:
        """The stream's nudges as they come, until it is closed (the host
        revoked, or watching again on another stream)."""
        while True:
            if stream.pending is None and not stream.closed:
                stream.waiter = asyncio.get_running_loop().create_future()
                await stream.waiter
                stream.waiter = None
            if stream.closed:
                return
            nudge, stream.pending = stream.pending, None
            if nudge is not None:
                yield nudge

    def release(self, host_id: str, stream: _Stream) -> None:
        """Forget ``stream`` (its call ended), unless a newer one replaced it."""
        stream.closed = True
        if self._streams.get(host_id) is stream:
            del self._streams[host_id]

    def nudge(self, host_ids: Iterable[str] | None, reason: str, quiet: bool = False) -> int:
        """Ask these hosts (None: every connected one) to check in now; how
        many were connected here. They are nudged in turn, paced to what the
        controller serves (`Pacer`): a step's worth at once, the rest by a
        task on the event loop. A host waiting already takes the newer reason.
        ``quiet``: logged at debug level (one host's stream as it opens)."""
        hosts = (
            list(self._streams)
            if host_ids is None
            else [h for h in dict.fromkeys(host_ids) if h in self._streams]
        )
        if not hosts:
            return 0
        if not self._reasons and self.pacer.idle():  # a new push, not more of one going on
            self.pacer.reset()
        for host_id in hosts:
            if host_id not in self._reasons:
                self._waiting.append(host_id)
            self._reasons[host_id] = reason
        self._send(self.pacer.step())
        if self._reasons and (self._pacing is None or self._pacing.done()):
            self._pacing = asyncio.get_running_loop().create_task(self._pace(), name="nudges")
        log.log(logging.DEBUG if quiet else logging.INFO,
                "nudging %d connected host(s) to check in (%s), %d waiting, %d at a time "
                "to start", len(hosts), reason, len(self._reasons), self.pacer.window)  # fmt: skip
        return len(hosts)

    def served(self, host_id: str) -> None:
        """A check-in of ``host_id`` was served: the next waiting host, if
        this one was nudged, may be."""
        if self.pacer.served(host_id) and self._reasons:
            self._send(self.pacer.room())

    @property
    def waiting(self) -> int:
        """Hosts nudged but not sent their nudge yet."""
        return len(self._reasons)

    async def _pace(self) -> None:
        while self._reasons:
            await asyncio.sleep(PACE_STEP)
            self._send(self.pacer.step())
        log.info("nudges sent; the window ended at %d", self.pacer.window)

    def _send(self, count: int) -> None:
        """Nudge the next ``count`` waiting hosts still connected, asking
        them to spread their check-ins over the time it takes to serve them
        (and those nudged before them)."""
        batch: list[tuple[str, str, _Stream]] = []
        while len(batch) < count and self._waiting:
            host_id = self._waiting.popleft()
            reason = self._reasons.pop(host_id, None)
            stream = self._streams.get(host_id)
            if reason is not None and stream is not None:  # else gone meanwhile
                batch.append((host_id, reason, stream))
        spread_ms = self.pacer.spread_ms(len(batch))
        for host_id, reason, stream in batch:
            stream.pending = Nudge(reason, spread_ms)
            stream.wake()
            self.pacer.sent(host_id)
        self.nudged += len(batch)

    def close(self, host_id: str) -> None:
        """End ``host_id``'s stream (it was revoked)."""
        stream = self._streams.pop(host_id, None)
        if stream is not None:
            stream.closed = True
            stream.wake()

    def close_all(self) -> None:
        """End every stream (the controller shuts down)."""
        self._waiting.clear()
        self._reasons.clear()
        if self._pacing is not None:
            self._pacing.cancel()
        for host_id in list(self._streams):
            self.close(host_id)
