"""Pure decisions of the check-in path."""

from __future__ import annotations

import random
from datetime import timedelta


def next_checkin(interval: timedelta, jitter: float, rng: random.Random) -> timedelta:
    """When the host should check in next: ``interval`` spread uniformly by
    +/- ``jitter`` (a fraction), so that a fleet that started together, after
    a controller restart say, drifts apart instead of arriving at once."""
    spread = interval.total_seconds() * jitter
    return timedelta(seconds=max(1.0, interval.total_seconds() + rng.uniform(-spread, spread)))
