"""Pure decisions of the check-in path."""

from __future__ import annotations

import random
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration


class Pace:
    """When a host should check in next: ``interval`` spread uniformly by
    +/- ``jitter`` (a fraction), never under a second, so that a fleet that
    started together, after a controller restart say, drifts apart instead
    of arriving at once.

    Made at every check-in as the Duration its answer carries, so made
    directly: a timedelta converted by protobuf took six times as long."""

    def __init__(self, interval: timedelta, jitter: float, rng: random.Random) -> None:
        self._interval = interval.total_seconds()
        self._spread = self._interval * jitter
        self._rng = rng

    def next(self) -> Duration:
        seconds = max(1.0, self._interval + self._rng.uniform(-self._spread, self._spread))
        whole = int(seconds)
        return Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
