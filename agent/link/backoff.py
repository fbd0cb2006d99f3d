"""Retry delays: exponential backoff with full jitter (AWS Architecture
Blog, "Exponential Backoff And Jitter"), so a fleet that lost its
controller does not stampede it when it comes back."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, rng: random.Random, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt - 1, 30)))
