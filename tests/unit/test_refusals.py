"""A host's refusals are written as a count per window, not a record each."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from controller.audit import AuditEntry
from controller.refusals import RefusalCounter

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)


def _refusals_in(entries: list[AuditEntry]) -> int:
    """How many refusals the records stand for: 1 for a plain one, N + 0
    for "N more refusal(s)" (the one that opened the window is its own)."""
    total = 0
    for entry in entries:
        assert entry.action == "order.refused"
        counted = re.match(r"(\d+) more refusal\(s\) since ", entry.detail)
        total += int(counted.group(1)) if counted else 1
    return total


def test_a_flood_from_one_host_is_two_records_per_window_and_the_counts_add_up():
    counter = RefusalCounter(WINDOW)
    written: list[AuditEntry] = []
    # 5,000 refusals in 4 s, then the same again 20 minutes on.
    for start in (T0, T0 + timedelta(minutes=20)):
        for i in range(5000):
            now = start + timedelta(milliseconds=i * 0.8)
            written += counter.refused("h-1", f"o-{i}", f"bad signature {i}", now)
    written += counter.drain(T0 + timedelta(minutes=21))
    assert len(written) == 4  # first, count, first, count
    assert _refusals_in(written) == 10_000
    assert written[0].detail == "bad signature 0"
    assert written[1].detail.startswith("4999 more refusal(s) since 2026-11-27T12:00:00Z; ")
    assert written[1].detail.endswith("last: bad signature 4999")
    assert written[1].target == "o-4999"
    assert written[1].at == T0 + timedelta(minutes=20)  # written when the window was seen over
    assert counter.pending == 0


def test_the_first_refusal_after_the_window_writes_the_count_and_is_recorded_itself():
    counter = RefusalCounter(WINDOW)
    assert len(counter.refused("h-1", "o-1", "a", T0)) == 1
    assert counter.refused("h-1", "o-2", "b", T0 + timedelta(minutes=1)) == []
    assert counter.refused("h-1", "o-3", "c", T0 + timedelta(minutes=9)) == []
    assert counter.pending == 2
    count, own = counter.refused("h-1", "o-4", "d", T0 + WINDOW)
    assert count.detail == "2 more refusal(s) since 2026-11-27T12:01:00Z; last: c"
    assert (own.target, own.detail, own.at) == ("o-4", "d", T0 + WINDOW)
    assert counter.pending == 0


def test_two_hosts_are_counted_independently():
    counter = RefusalCounter(WINDOW)
    written: list[AuditEntry] = []
    for i in range(100):
        now = T0 + timedelta(seconds=i)
        written += counter.refused("h-1", "o", "one", now)
        if i % 2:
            written += counter.refused("h-2", "o", "two", now)
    assert [e.actor for e in written] == ["host:h-1", "host:h-2"]
    written += counter.drain(T0 + timedelta(minutes=2))
    by_host = {a: [e for e in written if e.actor == a] for a in ("host:h-1", "host:h-2")}
    assert _refusals_in(by_host["host:h-1"]) == 100
    assert _refusals_in(by_host["host:h-2"]) == 50


def test_due_writes_only_ended_windows_and_forgets_those_hosts():
    counter = RefusalCounter(WINDOW)
    counter.refused("early", "o", "x", T0)
    counter.refused("early", "o", "x", T0 + timedelta(seconds=1))
    counter.refused("late", "o", "y", T0 + timedelta(minutes=5))
    counter.refused("late", "o", "y", T0 + timedelta(minutes=6))
    (count,) = counter.due(T0 + WINDOW)
    assert (count.actor, count.detail.split(" since")[0]) == ("host:early", "1 more refusal(s)")
    assert counter.due(T0 + WINDOW) == []
    # "early" was forgotten: its next refusal is recorded at once.
    (again,) = counter.refused("early", "o-9", "z", T0 + WINDOW + timedelta(seconds=1))
    assert again.detail == "z"
    (late,) = counter.drain(T0 + WINDOW)
    assert late.actor == "host:late"


def test_a_window_with_a_single_refusal_writes_nothing_more():
    counter = RefusalCounter(WINDOW)
    counter.refused("h-1", "o", "x", T0)
    assert counter.due(T0 + WINDOW) == []
    assert counter.drain(T0 + WINDOW) == []


def test_an_unreadable_order_id_is_recorded_as_a_dash():
    (entry,) = RefusalCounter(WINDOW).refused("h-1", "", "x", T0)
    assert entry.target == "-"


def test_the_window_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        RefusalCounter(timedelta(0))
