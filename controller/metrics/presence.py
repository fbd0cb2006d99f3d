"""Which hosts the controller has, by ring, region and status, and how many
of the active ones reported lately: kept as hosts change, so that a scrape
reads counters rather than the fleet.

"Reporting" is the seed's M8: checked in within two check-in intervals.
Last check-ins are kept in buckets a quarter of an interval wide, so a host
counts as reporting for between two and two and a quarter intervals after
its last check-in: a scrape adds a handful of bucket counts whatever the
size of the fleet. It keeps nothing until `load` (the metrics listener
calls it), so a controller without metrics pays nothing for it. Not
thread-safe: the controller's event loop calls it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.model import Host, HostStatus

Cell = tuple[int, str, HostStatus]  # ring, region, status
_STALE = -(2**62)  # the bucket of every check-in older than the window


@dataclass
class _Entry:
    ring: int
    region: str
    status: HostStatus
    bucket: int | None  # its last check-in's bucket; None: never seen, or not active


@dataclass(frozen=True)
class PresenceFigures:
    hosts: dict[Cell, int]  # every host by ring, region and status
    active: int
    reporting: int  # active hosts seen within two check-in intervals


class Presence:
    def __init__(self, interval: timedelta) -> None:
        self._width = max(interval.total_seconds() / 4, 1e-3)
        self._window = 2 * interval.total_seconds()
        self._hosts: dict[str, _Entry] = {}
        self._cells: Counter[Cell] = Counter()
        self._buckets: Counter[int] = Counter()
        self._floor = _STALE  # buckets below it have been merged into _STALE
        self._loaded = False

    def load(self, hosts: Iterable[Host]) -> None:
        """The fleet as the store holds it at start (the one full read);
        from here on every change is kept."""
        self._loaded = True
        for host in hosts:
            self._add(host.host_id, host.ring, host.region, host.status)
            if host.status is HostStatus.ACTIVE and host.last_seen is not None:
                self._bucket(self._hosts[host.host_id], host.last_seen)

    def enrolled(self, host_id: str, ring: int, region: str) -> None:
        if not self._loaded:
            return
        self._add(host_id, ring, region, HostStatus.PENDING)

    def activated(self, host_id: str, ring: int, region: str) -> None:
        if not self._loaded:
            return
        if host_id not in self._hosts:
            self._add(host_id, ring, region, HostStatus.ACTIVE)
        else:
            self._set(host_id, HostStatus.ACTIVE)

    def revoked(self, host_id: str) -> None:
        if not self._loaded:
            return
        self._set(host_id, HostStatus.REVOKED)

    def moved(self, host_id: str, ring: int, region: str) -> None:
        """A host relabelled to another ring or region: counted there."""
        entry = self._hosts.get(host_id)
        if not self._loaded or entry is None:
            return
        self._cells[(entry.ring, entry.region, entry.status)] -= 1
        entry.ring, entry.region = ring, region
        self._cells[(ring, region, entry.status)] += 1

    def forgotten(self, host_id: str) -> None:
        """A pending host that never came back, deleted from the store."""
        entry = self._hosts.pop(host_id, None)
        if entry is not None:
            self._unbucket(entry)
            self._cells[(entry.ring, entry.region, entry.status)] -= 1

    def seen(self, host_id: str, ring: int, region: str, at: datetime) -> None:
        """An active host checked in at ``at``."""
        if not self._loaded:
            return
        entry = self._hosts.get(host_id)
        if entry is None:
            self._add(host_id, ring, region, HostStatus.ACTIVE)
            entry = self._hosts[host_id]
        elif entry.status is not HostStatus.ACTIVE:
            self._set(host_id, HostStatus.ACTIVE)
        self._unbucket(entry)
        self._bucket(entry, at)

    def figures(self, now: datetime) -> PresenceFigures:
        """The counts at ``now``; merges buckets that left the window."""
        threshold = math.floor((now.timestamp() - self._window) / self._width)
        if threshold > self._floor:
            for bucket in [b for b in self._buckets if _STALE < b < threshold]:
                self._buckets[_STALE] += self._buckets.pop(bucket)
            self._floor = threshold
        reporting = sum(n for b, n in self._buckets.items() if b >= threshold)
        active = sum(n for (_, _, s), n in self._cells.items() if s is HostStatus.ACTIVE)
        return PresenceFigures({cell: n for cell, n in self._cells.items() if n}, active, reporting)

    def _add(self, host_id: str, ring: int, region: str, status: HostStatus) -> None:
        if host_id in self._hosts:
            return
        self._hosts[host_id] = _Entry(ring, region, status, None)
        self._cells[(ring, region, status)] += 1

    def _set(self, host_id: str, status: HostStatus) -> None:
        entry = self._hosts.get(host_id)
        if entry is None or entry.status is status:
            return
        self._cells[(entry.ring, entry.region, entry.status)] -= 1
        entry.status = status
        self._cells[(entry.ring, entry.region, status)] += 1
        if status is not HostStatus.ACTIVE:
            self._unbucket(entry)

    def _bucket(self, entry: _Entry, at: datetime) -> None:
        bucket = math.floor(at.timestamp() / self._width)
        entry.bucket = bucket
        self._buckets[bucket if bucket >= self._floor else _STALE] += 1

    def _unbucket(self, entry: _Entry) -> None:
        if entry.bucket is None:
            return
        key = entry.bucket if entry.bucket >= self._floor else _STALE
        self._buckets[key] -= 1
        if not self._buckets[key]:
            del self._buckets[key]
        entry.bucket = None
