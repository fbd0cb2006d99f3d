"""Push for urgent work: the connected agents' Watch streams, and nudges.

A nudge asks a host to check in now; it carries a reason word and how
widely to spread the check-ins, nothing a host must trust (orders travel
only in check-in answers, signed). Each host has at most one stream here: a
newer one replaces the older, which ends. A stream costs one small object
and one pending future while idle (measured in benchmarks/push.py).

Replicas sharing a database each nudge their own streams: the one where an
admin approves nudges at once, the others when their campaign tick re-reads
the campaigns (`CampaignEngine` notices what is new and calls `nudge`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from controller.api.limits import Capacity

log = logging.getLogger(__name__)

# Hosts nudged at once are asked to spread their check-ins over the time
# the controller takes to serve them (its measured `Capacity`: 10,000 hosts
# at 2,000 check-ins/s within 5 s) rather than come in the same instant;
# never over less than this.
MIN_SPREAD_MS = 1000


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


class Watchers:
    """The open Watch streams, by host id. Call on the event loop."""

    def __init__(self, capacity: Capacity | None = None) -> None:
        self._streams: dict[str, _Stream] = {}
        self._capacity = capacity or Capacity()
        self.nudged = 0  # nudges handed to streams, for tests and metrics

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, host_id: str) -> bool:
        return host_id in self._streams

    def open(self, host_id: str, first: Nudge | None = None) -> _Stream:
        """Register a stream for ``host_id`` (ending its older one, if any),
        with ``first`` to send at once; `follow` it, then `release` it."""
        stream = _Stream()
        stream.pending = first
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

    async def watch(self, host_id: str, first: Nudge | None = None) -> AsyncIterator[Nudge]:
        """`open`, `follow` and `release` in one."""
        stream = self.open(host_id, first)
        try:
            async for nudge in self.follow(stream):
                yield nudge
        finally:
            self.release(host_id, stream)

    def nudge(self, host_ids: Iterable[str] | None, reason: str) -> int:
        """Ask these hosts (None: every connected one) to check in now; how
        many were connected here. The check-ins are spread over the time the
        controller takes to serve them (`Capacity`), never under a second."""
        streams = (
            list(self._streams.values())
            if host_ids is None
            else [s for s in map(self._streams.get, host_ids) if s is not None]
        )
        if not streams:
            return 0
        nudge = Nudge(reason, self.spread(len(streams)))
        for stream in streams:
            stream.pending = nudge
            stream.wake()
        self.nudged += len(streams)
        log.info("nudged %d connected host(s) to check in (%s, within %.1fs)",
                 len(streams), reason, nudge.spread_ms / 1000)  # fmt: skip
        return len(streams)

    def spread(self, hosts: int) -> int:
        """Milliseconds to spread the check-ins of ``hosts`` nudged hosts over."""
        return max(MIN_SPREAD_MS, int(1000 * hosts / self._capacity.per_second))

    def close(self, host_id: str) -> None:
        """End ``host_id``'s stream (it was revoked)."""
        stream = self._streams.pop(host_id, None)
        if stream is not None:
            stream.closed = True
            stream.wake()

    def close_all(self) -> None:
        """End every stream (the controller shuts down)."""
        for host_id in list(self._streams):
            self.close(host_id)
