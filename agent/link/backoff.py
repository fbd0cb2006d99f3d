"""Retry delays: exponential backoff with full jitter (AWS Architecture
Blog, "Exponential Backoff And Jitter"), so a fleet that lost its
controller does not stampede it when it comes back; capped at the
check-in interval, so it comes back within one interval; and as long as an
overloaded controller asks, when it does."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, rng: random.Random, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt - 1, 30)))


def overload_delay(retry_after: float | None, rng: random.Random) -> float | None:
    """How long to stay away from a controller that asked for
    ``retry_after`` seconds: between once and twice that (never less), so
    the hosts it turned away do not return together. None without a hint."""
    return None if retry_after is None else retry_after * rng.uniform(1.0, 2.0)


def retry_delay(
    failures: int,
    rng: random.Random,
    *,
    max_delay: float,
    interval: float | None,
    retry_after: float | None = None,
) -> float:
    """Seconds before the next check-in after ``failures`` failed ones in a
    row: what an overloaded controller asked for (``retry_after``), when it
    did; otherwise full-jitter backoff capped at ``max_delay`` and at the
    check-in ``interval`` the controller last announced (None: not known)."""
    asked = overload_delay(retry_after, rng)
    if asked is not None:
        return asked
    cap = max_delay if interval is None else min(max_delay, max(interval, 1.0))
    return backoff_delay(failures, rng, cap=cap)
