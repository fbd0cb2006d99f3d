"""Log lines a whole fleet would repeat at once.

While the database is down, every call of every host is refused, and
each refusal would be a line: 100,000 hosts make the log useless and
fill the disk. Such lines are said at once, then at most once per
interval for the same key, with how many were not said in between.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

INTERVAL_SECONDS = 30.0
# Keys held at most (one per method, per writer, per message: a few);
# past it, the oldest are forgotten.
MAX_KEYS = 256


class Throttle:
    """Per key: whether a line may be said now (none of the key was said
    less than ``seconds`` ago), counting those held back meanwhile."""

    def __init__(
        self, seconds: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._said: dict[str, tuple[float, int]] = {}  # key -> (when said, held since)

    def passes(self, key: str) -> str | None:
        """None: held back (and counted); else what to add to the line: how
        many were held back since the last one ("" for none)."""
        now = self._clock()
        said = self._said.get(key)
        if said is not None and now - said[0] < self._seconds:
            self._said[key] = (said[0], said[1] + 1)
            return None
        held = (
            f" ({said[1]} more like it in the last {now - said[0]:.0f}s)"
            if said and said[1]
            else ""
        )
        self._said.pop(key, None)
        if len(self._said) >= MAX_KEYS:
            del self._said[next(iter(self._said))]
        self._said[key] = (now, 0)
        return held


class Quiet(Throttle):
    """``say(key, message, *args)``: logged unless a line of ``key`` was
    logged less than ``seconds`` ago (then counted, and the count added to
    the next line of ``key`` that is logged)."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        seconds: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(seconds, clock)
        self._logger = logger
        self._level = level

    def say(self, key: str, message: str, *args: object) -> None:
        held = self.passes(key)
        if held is not None:
            self._logger.log(self._level, message + held, *args)


# An object's address in its repr (psycopg's "<psycopg.Connection [BAD] at
# 0x7f...>"): a message that differs by it only is the same message.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


class OncePer(logging.Filter):
    """A logging filter for another library's logger: a record passes
    unless the same message (object addresses aside) passed less than
    ``seconds`` ago."""

    def __init__(self, seconds: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self._throttle = Throttle(seconds)

    def filter(self, record: logging.LogRecord) -> bool:
        return self._throttle.passes(_ADDRESS.sub("", record.getMessage())) is not None
