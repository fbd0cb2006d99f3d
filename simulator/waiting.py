"""Hosts waiting to be asked again, in rooms of hosts that `decide` cannot
tell apart, kept in the order they will next check in.

A room holds the targeted hosts of one (ring, region, time zone, OS,
labels): everything of `HostFacts` that `decide` reads. Two hosts of a room
differ only in their id (and ``last_seen``, which decide does not read), so
at the same instant and on the same counts the scheduler gives them the
same answer; a unit test fails should decide ever start reading the host id,
and then rooms must become per host.

On a real controller every waiting host asks again at each check-in. The
simulator lets the room's hosts sleep and sends one *probe*: the host that
checks in first after something changed. Its answer stands for the room:

    Assign            the next host of the room is probed (a *probe chain*), so
                      a freed concurrency slot goes to the host that would have
                      checked in first, and a window that opens fills in order
    Wait(until=T)     a lower bound for every host alike: the room sleeps until
                      T, then the first host to check in is probed
    Wait(None)        the room waits until the counts or the campaign's state
                      change (the engine then probes it again)
    Skip, unknown zone  for good

So a rehearsal asks the scheduler about as often as it assigns, not once
per host per check-in. Every check-in interval each room is probed anyway
(a sweep), as a safety net should a change not wake it.

Every host checks in every ``interval`` from its own phase; a key is
``phase << 24 | host index`` in a sorted list, so the next host after an
instant is a bisection away.
"""

from __future__ import annotations

import bisect

SHIFT = 24
MASK = (1 << SHIFT) - 1
MAX_HOSTS = MASK


class WaitingRoom:
    """The waiting hosts of one (ring, region)."""

    __slots__ = ("_keys", "asleep_until", "chain", "interval", "key", "probe", "stuck")

    def __init__(self, key: object, interval: int) -> None:
        self.key = key
        self.interval = interval
        self._keys: list[int] = []
        self.chain = False  # a probe is on its way
        self.probe = -1  # the host index of that probe
        self.asleep_until = -1  # the last answer was Wait(until): no host asks before then
        self.stuck = False  # the last answer holds for good (Skip, unknown zone)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, index: int, anchor: int) -> int:
        """Park host ``index`` whose check-ins fall on ``anchor`` + k * interval;
        returns its key (for `remove`)."""
        key = (anchor % self.interval) << SHIFT | index
        bisect.insort(self._keys, key)
        return key

    def remove(self, key: int) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def pop_next(self, now: int) -> int:
        """The host that checks in first strictly after ``now``; raises
        IndexError when the room is empty."""
        if not self._keys:
            raise IndexError("the waiting room is empty")
        target = ((now + 1) % self.interval) << SHIFT
        i = bisect.bisect_left(self._keys, target)
        if i == len(self._keys):
            i = 0
        return self._keys.pop(i) & MASK
