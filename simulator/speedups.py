"""Exact memos of the scheduler's pure functions, installed for the length
of a simulation: the same answers, computed once.

`decide` takes about 0.3 ms, and a rehearsal of 100,000 hosts asks it
hundreds of thousands of times. Measured (cProfile, 2,000 hosts, the
openssl campaign): two thirds of that went to evaluating the maintenance
windows, and most of the rest to `Fraction` arithmetic in `Quota` and to
`evaluate_halt`, which every decision repeats on the same counts. Each memo
below returns exactly what the function would:

* `WindowMemo` for `evaluate_windows`: the answer is a step function of
  time and says how long it holds. ``WindowOpen(closes_at)``: every later
  instant before ``closes_at`` lies in the same span; ``WindowClosed
  (opens_at)``: no usable span starts or is open before ``opens_at``; both
  provided the local date in the zone does not change (the search starts
  from it, and ``searched_until`` derives from it). So an answer is reused
  for ``[now, min(its change, next local midnight))`` and never outside it.
* `Quota.ceil_of` / `floor_of`: pure methods of a frozen value.
* `evaluate_halt`: a pure function of (campaign, tallies); tallies
  snapshots are immutable and shared by every decision until a count
  changes, so the last answer is kept per snapshot object.

Property tests check each memo against the real function. They replace
names in ``controller.campaigns`` only inside `installed()`; nothing in
the controller changes. (The same caching inside the controller would make
its own check-in path faster: see the simulator's notes.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo

from controller.campaigns import CampaignSpec, HaltReason, Tallies, gates, scheduler
from controller.campaigns.quota import Quota
from controller.campaigns.windows import (
    WeeklyWindow,
    WindowOpen,
    WindowState,
    evaluate_windows,
    resolve_local,
)

_Key = tuple[int, tzinfo, int, timedelta]


class WindowMemo:
    """Call like `evaluate_windows`; remembers the last answer per policy and zone."""

    def __init__(self) -> None:
        self._last: dict[_Key, tuple[datetime, datetime, WindowState, object]] = {}
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


def _quota_memo(original: Callable[[Quota, int], int]) -> Callable[[Quota, int], int]:
    cache: dict[tuple[int, int], tuple[int, Quota]] = {}

    def method(self: Quota, total: int) -> int:
        key = (id(self), total)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = (original(self, total), self)  # keeps self alive: its id stays
        return hit[0]

    return method


class HaltMemo:
    """Call like `evaluate_halt`; remembers the answer for the last snapshot."""

    def __init__(self) -> None:
        self._campaign: CampaignSpec | None = None
        self._tallies: Tallies | None = None
        self._answer: HaltReason | None = None

    def __call__(self, campaign: CampaignSpec, tallies: Tallies) -> HaltReason | None:
        if campaign is not self._campaign or tallies is not self._tallies:
            self._answer = gates.evaluate_halt(campaign, tallies)
            self._campaign, self._tallies = campaign, tallies
        return self._answer


_REPLACED = (
    (scheduler, "evaluate_windows"),
    (scheduler, "evaluate_halt"),
    (Quota, "ceil_of"),
    (Quota, "floor_of"),
)


@contextlib.contextmanager
def installed(windows: WindowMemo, halts: HaltMemo) -> Iterator[None]:
    """Let the scheduler use the memos until the block ends (not thread-safe:
    one simulation per process at a time)."""
    saved = [getattr(owner, name) for owner, name in _REPLACED]
    memos = (windows, halts, _quota_memo(Quota.ceil_of), _quota_memo(Quota.floor_of))
    for (owner, name), memo in zip(_REPLACED, memos, strict=True):
        setattr(owner, name, memo)
    try:
        yield
    finally:
        for (owner, name), original in zip(_REPLACED, saved, strict=True):
            setattr(owner, name, original)
