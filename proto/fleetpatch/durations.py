"""Durations as people write them in config files and on command lines.

``30s``, ``5m``, ``2h``, ``7d``, ``1h30m`` and plain seconds (``90``).
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]+)([smhdw])")
_SECONDS = re.compile(r"[0-9]+")
MAX_SECONDS = 100 * 365 * 86400  # anything longer is a typo


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``90``, ``30m`` or ``1h30m``.

    Raises ValueError with a message fit to show a person.
    """
    spelled = text.strip().lower()
    if _SECONDS.fullmatch(spelled):
        seconds = int(spelled)
    else:
        parts = _PART.findall(spelled)
        if not spelled or "".join(n + u for n, u in parts) != spelled:
            raise ValueError(f"{text!r} is not a duration (use e.g. 90, 30s, 5m, 2h, 7d, 1h30m)")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is too long (more than 100 years)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Spell a duration the way parse_duration reads it, largest units first."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
