"""Virtual time: integer microseconds since the run's start, and the
instants the controller's schedule makes of them (ticks, check-ins, its own
down and slow spells from the failure model)."""

from __future__ import annotations

from datetime import datetime, timedelta

from .failures import ControllerMode, FailureModel

_MICRO = timedelta(microseconds=1)


def micros(delta: timedelta) -> int:
    return delta // _MICRO


class Timeline:
    def __init__(
        self, start: datetime, interval: timedelta, tick: timedelta, failures: FailureModel
    ) -> None:
        self.start = start
        self.interval = micros(interval)
        self.tick = micros(tick)
        self.down = self._spells(failures, ControllerMode.DOWN)
        self._slow = self._spells(failures, ControllerMode.SLOW)
        self._at, self._datetime = 0, start

    def _spells(self, failures: FailureModel, mode: ControllerMode) -> list[tuple[int, int, int]]:
        return sorted(
            (self.at(t.start.resolve(self.start)), self.at(t.end.resolve(self.start)),
             micros(t.delay))
            for t in failures.controller if t.mode is mode
        )  # fmt: skip

    def at(self, when: datetime) -> int:
        """An instant as µs since the start."""
        return micros(when - self.start)

    def to_datetime(self, t: int) -> datetime:
        """µs since the start as an instant (the last one is kept: events of
        one instant ask for it many times)."""
        if t != self._at:
            self._at = t
            self._datetime = self.start + timedelta(microseconds=t)
        return self._datetime

    def tick_after(self, t: int) -> int:
        """The first controller tick strictly after ``t``."""
        return (t // self.tick + 1) * self.tick

    def tick_at_or_after(self, t: int) -> int:
        return -(-t // self.tick) * self.tick

    def check_in_at_or_after(self, anchor: int, t: int) -> int:
        """The first check-in at or after ``t`` of a host checking in at
        ``anchor`` + k * interval."""
        return t + (anchor - t) % self.interval

    def check_in_after(self, anchor: int, t: int) -> int:
        """Its first check-in strictly after ``t``."""
        return t + 1 + (anchor - t - 1) % self.interval

    def latency(self, t: int) -> int:
        """How late a message sent at ``t`` lands (a slow controller)."""
        for begin, end, delay in self._slow:
            if begin <= t < end:
                return delay
        return 0

    def up_again(self, t: int) -> int:
        """When a controller down at ``t`` is back (``t`` when it is up)."""
        for begin, end, _ in self.down:
            if begin <= t < end:
                return end
        return t
