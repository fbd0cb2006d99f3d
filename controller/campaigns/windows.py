"""Maintenance windows: weekly local times, evaluated at an instant.

A window is written ``DAYS HH:MM-HH:MM``: ``Sat,Sun 02:00-05:00``,
``Mon-Fri 22:00-04:00``, ``Fri-Mon 00:00-24:00``. Days are ``Mon``..``Sun``
(or full names), single or as ranges (a range may wrap: ``Fri-Mon``). The
day named is the day the window *starts*: when the end is not later than the
start the window crosses midnight into the next day, so ``Mon-Fri
22:00-04:00`` runs from Monday 22:00 to Tuesday 04:00, and so on until
Saturday 04:00. ``24:00`` is allowed as an end.

Semantics, exactly (this is what `evaluate_windows` computes):

* Local times are wall-clock times in the window's time zone (an IANA zone
  through ``zoneinfo``, or the host's own zone for ``host-local``).
* An occurrence opens the first time the local clock reaches its start and
  closes the first time the clock then reaches its end. On a spring-forward
  day a time inside the skipped hour is reached at the instant of the jump,
  so ``02:00-05:00`` in Europe/Berlin lasts 2 hours that night and a window
  wholly inside the skipped hour (``02:00-03:00``) does not open at all. On
  a fall-back day the clock first reaches a repeated time in the first
  pass, so a window spanning the repeated hour lasts an hour longer
  (``02:00-03:00`` in Berlin lasts 2 hours) and one ending inside it ends
  in the first pass (the conservative choice: never later than the wall
  clock said).
* Occurrences that overlap or touch are merged into one span (``Mon
  22:00-24:00`` with ``Tue 00:00-04:00`` is one window closing Tue 04:00).
* Blackout dates are local calendar days in the window's zone: every
  instant of such a day is closed, so a window crossing into a blackout day
  closes at that local midnight.
* The cutoff is subtracted from the end of each merged, clipped span: a
  patch never *starts* within ``cutoff`` of the close. A span not longer
  than the cutoff is unusable and skipped.
* A span still open 14 days ahead reports no closing time (``None``); the
  next opening is searched up to 400 days ahead, then reported as unknown.

No I/O besides the time zone database that ``zoneinfo`` reads (and caches).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 1440  # minutes
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPEC = re.compile(r"^\s*(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")
_OPEN_HORIZONS_DAYS = (14, 60, 400)


@dataclass(frozen=True)
class WeeklyWindow:
    """One weekly window: the days it starts on and its local start and end.

    ``start`` is minutes after local midnight (0-1439); ``end`` is minutes
    after the start day's midnight (start+1 .. start+1440), so a window
    crossing midnight has ``end > 1440``.
    """

    days: frozenset[int]  # 0 = Monday, as date.weekday()
    start: int
    end: int
    text: str

    @property
    def length(self) -> timedelta:
        """The nominal length, as the wall clock measures it (DST aside)."""
        return timedelta(minutes=self.end - self.start)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class WindowOpen:
    """A usable window is open now.

    ``closes_at``: when the usable part ends (the window's end minus the
    cutoff), UTC; ``ends_at``: the window's own end. Both are None when the
    window stays open beyond the 14-day horizon.
    """

    closes_at: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True)
class WindowClosed:
    """No usable window is open now.

    ``opens_at``: the next opening, UTC, or None when none was found up to
    ``searched_until`` (ask again then).
    """

    opens_at: datetime | None
    searched_until: datetime


WindowState = WindowOpen | WindowClosed


def parse_weekly(text: str) -> WeeklyWindow:
    """Parse ``Sat,Sun 02:00-05:00``; raises ValueError saying what is wrong."""
    match = _SPEC.fullmatch(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a window (write DAYS HH:MM-HH:MM, e.g. 'Sat,Sun 02:00-05:00' "
            "or 'Mon-Fri 22:00-04:00')"
        )
    days = _parse_days(match["days"], text)
    start = _parse_minutes(match["start"], text)
    end = _parse_minutes(match["end"], text)
    if start == DAY:
        raise ValueError(f"{text!r}: a window cannot start at 24:00 (write 00:00 of the next day)")
    if end == start:
        raise ValueError(f"{text!r}: start and end are equal, so the window is empty")
    if end < start:
        end += DAY  # crosses midnight: ends on the day after the day named
    return WeeklyWindow(days=days, start=start, end=end, text=text.strip())


def _parse_days(spelled: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in spelled.split(","):
        first, sep, last = item.partition("-")
        a = _day(first, text)
        b = _day(last, text) if sep else a
        # A range may wrap around the week: Fri-Mon is Fri, Sat, Sun, Mon.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str, text: str) -> int:
    key = name.strip().lower()
    for names in (_DAY_NAMES, _FULL_NAMES):
        if key in names:
            return names.index(key)
    raise ValueError(f"{text!r}: {name!r} is not a day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def _parse_minutes(spelled: str, text: str) -> int:
    hours, minutes = (int(part) for part in spelled.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r}: {spelled!r} is not a time of day (00:00-24:00)")
    return hours * 60 + minutes


@functools.lru_cache(maxsize=1024)
def load_zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when there is no such zone.

    Cached because hosts report zones at every check-in and a failed lookup
    would otherwise search the zone database each time.
    """
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        return None


def evaluate_windows(
    weekly: Sequence[WeeklyWindow],
    tz: tzinfo,
    blackout: Collection[date],
    cutoff: timedelta,
    now: datetime,
) -> WindowState:
    """Whether a usable window is open at ``now``, and when it closes or opens.

    ``now`` must be timezone-aware (raises ValueError otherwise); returned
    instants are UTC. See the module docstring for the exact semantics.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    today = now.astimezone(tz).date()
    first = today - timedelta(days=2)  # an occurrence open now started at most 2 days ago
    searched_until = now
    for horizon in _OPEN_HORIZONS_DAYS:
        last = today + timedelta(days=horizon)
        # Spans reaching the edge may go on with occurrences not generated.
        edge = resolve_local(last + timedelta(days=1), 0, tz)
        searched_until = edge
        for start, end in _spans(weekly, tz, blackout, first, last):
            usable_end = end - cutoff
            if start <= now < usable_end:
                if end >= edge:  # still open at the first (14-day) horizon
                    return WindowOpen(closes_at=None, ends_at=None)
                return WindowOpen(closes_at=usable_end, ends_at=end)
            if start > now and usable_end > start:
                return WindowClosed(opens_at=start, searched_until=edge)
    return WindowClosed(opens_at=None, searched_until=searched_until)


def _spans(
    weekly: Sequence[WeeklyWindow],
    tz: tzinfo,
    blackout: Collection[date],
    first: date,
    last: date,
) -> list[tuple[datetime, datetime]]:
    """Merged occurrences starting on local days first..last, minus blackouts."""
    raw: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        weekday = day.weekday()
        for window in weekly:
            if weekday in window.days:
                start = resolve_local(day, window.start, tz)
                end = resolve_local(day, window.end, tz)
                if end > start:  # empty when wholly inside a skipped hour
                    raw.append((start, end))
        day += timedelta(days=1)
    spans = _merge(sorted(raw))
    low, high = first - timedelta(days=1), last + timedelta(days=2)
    cuts = sorted(
        (resolve_local(d, 0, tz), resolve_local(d, DAY, tz)) for d in blackout if low <= d <= high
    )
    return _subtract(spans, cuts) if cuts else spans


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(
    spans: list[tuple[datetime, datetime]], cuts: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        pieces = [(start, end)]
        for cut_start, cut_end in cuts:
            next_pieces: list[tuple[datetime, datetime]] = []
            for a, b in pieces:
                if cut_end <= a or cut_start >= b:
                    next_pieces.append((a, b))
                    continue
                if a < cut_start:
                    next_pieces.append((a, cut_start))
                if cut_end < b:
                    next_pieces.append((cut_end, b))
            pieces = next_pieces
        out.extend(pieces)
    return out


def resolve_local(day: date, minutes: int, tz: tzinfo) -> datetime:
    """The first instant (UTC) at which the local clock in ``tz`` reaches
    ``minutes`` after midnight of ``day`` (``minutes`` may pass 1440).

    Ambiguous times (fall-back) resolve to their first pass; times inside a
    skipped hour (spring-forward) resolve to the instant of the jump, which
    is when the clock first shows a time at or past them.
    """
    day = day + timedelta(days=minutes // DAY)
    minutes %= DAY
    wall = datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
    local = wall.replace(tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=1 maps with the offset after the jump, so it lands
    # before the jump; fold=0 lands after it. The jump lies in between.
    return _jump(local.replace(fold=1).astimezone(UTC), instant, tz)


def _jump(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant in (before, after] where the UTC offset of ``tz`` changes."""
    offset_after = after.astimezone(tz).utcoffset()
    second = timedelta(seconds=1)
    while after - before > second:
        middle = before + timedelta(seconds=(after - before) // second // 2)
        if middle.astimezone(tz).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


class WindowCache:
    """Call like `evaluate_windows`; the same answers, computed once per span.

    The answer is a step function of time and says how long it holds:
    ``WindowOpen(closes_at)``: every later instant before ``closes_at``
    lies in the same span; ``WindowClosed(opens_at)``: no usable span
    starts or is open before ``opens_at``; both provided the local date in
    the zone does not change (the search starts from it). So an answer is
    reused for ``[now, min(its change, next local midnight))`` and never
    outside it. Pass one to `scheduler.decide`: the controller and the
    simulator ask it for thousands of hosts at the same instants.
    """

    def __init__(self) -> None:
        self._last: dict[
            tuple[int, tzinfo, int, timedelta], tuple[datetime, datetime, WindowState, object]
        ] = {}
        self.calls = 0
        self.misses = 0

    def __call__(
        self,
        weekly: Sequence[WeeklyWindow],
        tz: tzinfo,
        blackout: Collection[date],
        cutoff: timedelta,
        now: datetime,
    ) -> WindowState:
        self.calls += 1
        key = (id(weekly), tz, id(blackout), cutoff)
        hit = self._last.get(key)
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[2]
        self.misses += 1
        answer = evaluate_windows(weekly, tz, blackout, cutoff, now)
        local_day = now.astimezone(tz).date()
        until = resolve_local(local_day + timedelta(days=1), 0, tz)
        change = answer.closes_at if isinstance(answer, WindowOpen) else answer.opens_at
        if change is not None:
            until = min(until, change)
        # The entry keeps weekly and blackout alive, so their ids stay theirs.
        self._last[key] = (now.astimezone(UTC), until, answer, (weekly, blackout))
        return answer
