"""A scenario's expected outcome (``[expect]``), and the check of an outcome
against it. Every key is optional; `fleetpatch-sim run --check` exits 1
when one is not met, and the tests run every shipped scenario that way.

    summary           what should happen, in words (shown in the report)
    state             the campaign's state at the end: completed, halted, running
    halt_kind         the first halt's kind: failure_budget, silent_hosts
    halt_ring         the ring whose limit the first halt breached
    halts             how many halts there were
    rings_finished    rings with every host finished (unreachable ones excused)
    rings_untouched   rings where no host was ever assigned
    finished_in_time  whether the campaign completed within [scenario] duration
    completed_after   it completed, later than this offset ("+30h")
    completed_before  it completed, earlier than this offset
    at_least, at_most tables of name = number: counts over the whole fleet
                      (succeeded, failed, reverted, revert_failed, timed_out,
                      pending_reboot, in_flight, unpatched, unreachable) or
                      SLIs as fractions (coverage, patch_success_rate,
                      canary_failure_rate, rollback_rate, hosts_reporting,
                      hosts_reporting_min)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fleetpatch.durations import format_duration
from fleetpatch.tomltable import Table

from controller.campaigns import CampaignState, HaltKind

from .outcome import Outcome

COUNTS = (
    "succeeded", "failed", "reverted", "revert_failed", "timed_out", "pending_reboot",
    "in_flight", "unpatched", "unreachable",
)  # fmt: skip
SLIS = (
    "coverage", "patch_success_rate", "canary_failure_rate", "rollback_rate",
    "hosts_reporting", "hosts_reporting_min",
)  # fmt: skip


@dataclass(frozen=True)
class Expectations:
    summary: str = ""
    state: CampaignState | None = None
    halt_kind: HaltKind | None = None
    halt_ring: int | None = None
    halts: int | None = None
    rings_finished: tuple[int, ...] | None = None
    rings_untouched: tuple[int, ...] | None = None
    finished_in_time: bool | None = None
    completed_after: timedelta | None = None
    completed_before: timedelta | None = None
    at_least: tuple[tuple[str, float], ...] = ()
    at_most: tuple[tuple[str, float], ...] = ()

    @property
    def empty(self) -> bool:
        return self == Expectations(summary=self.summary)


def parse_expect(t: Table) -> Expectations:
    """Read ``[expect]``; raises CampaignError naming the field."""
    state = t.maybe("state", str)
    allowed = (CampaignState.COMPLETED, CampaignState.HALTED, CampaignState.RUNNING)
    if state is not None and state not in allowed:
        raise t.error("state", f"{state!r} is not one of 'completed', 'halted', 'running'")
    expect = Expectations(
        summary=t.get("summary", str, ""),
        state=CampaignState(state) if state is not None else None,
        halt_kind=t.choice("halt_kind", HaltKind, HaltKind.FAILURE_BUDGET)
        if t.has("halt_kind") else None,
        halt_ring=t.maybe("halt_ring", int),
        halts=t.maybe("halts", int),
        rings_finished=_rings(t, "rings_finished"),
        rings_untouched=_rings(t, "rings_untouched"),
        finished_in_time=t.maybe("finished_in_time", bool),
        completed_after=_offset(t, "completed_after"),
        completed_before=_offset(t, "completed_before"),
        at_least=_bounds(t.table("at_least")),
        at_most=_bounds(t.table("at_most")),
    )  # fmt: skip
    t.finish()
    return expect


def _rings(t: Table, key: str) -> tuple[int, ...] | None:
    if not t.has(key):
        return None
    return tuple(sorted(v for _, v in t.items(key, int)))


def _offset(t: Table, key: str) -> timedelta | None:
    spelled = t.maybe(key, str)
    if spelled is None:
        return None
    if not spelled.startswith("+"):
        raise t.error(key, f"{spelled!r} must be an offset from the start, such as '+30h'")
    from fleetpatch.durations import parse_duration

    try:
        return parse_duration(spelled[1:])
    except ValueError as exc:
        raise t.error(key, str(exc)) from None


def _bounds(t: Table) -> tuple[tuple[str, float], ...]:
    out = []
    for key in t.keys():  # noqa: SIM118 - a Table, not a dict
        if key not in COUNTS + SLIS:
            raise t.error(key, f"unknown measure; known: {', '.join(COUNTS + SLIS)}")
        out.append((key, float(t.require(key, float))))
    t.finish()
    return tuple(out)


def measure(outcome: Outcome, name: str) -> float:
    """A count over the whole fleet, or an SLI (0 when undefined)."""
    if name in COUNTS:
        return float(getattr(outcome.total, name))
    value = getattr(outcome.slis, name)
    return 0.0 if value is None else float(value)


def check(expect: Expectations, outcome: Outcome) -> list[str]:
    """What ``outcome`` does not meet, one line each (empty: all met)."""
    misses = []

    def differs(what: str, want: object, got: object) -> None:
        if want is not None and want != got:
            misses.append(f"{what}: expected {want}, got {got}")

    differs("state", expect.state and expect.state.value, outcome.state)
    first = outcome.halts[0] if outcome.halts else None
    differs("halt_kind", expect.halt_kind and expect.halt_kind.value, first and first.kind)
    differs("halt_ring", expect.halt_ring, first and first.ring)
    differs("halts", expect.halts, len(outcome.halts))
    differs("rings_finished", expect.rings_finished, tuple(sorted(outcome.rings_finished)))
    differs("rings_untouched", expect.rings_untouched, tuple(sorted(outcome.rings_untouched)))
    differs("finished_in_time", expect.finished_in_time, outcome.finished_in_time)
    done = outcome.completed_after
    shown = "never" if done is None else f"+{format_duration(done)}"
    if expect.completed_after is not None and (done is None or done <= expect.completed_after):
        misses.append(
            f"completed_after: expected after +{format_duration(expect.completed_after)}, "
            f"completed {shown}"
        )
    if expect.completed_before is not None and (done is None or done >= expect.completed_before):
        misses.append(
            f"completed_before: expected before +{format_duration(expect.completed_before)}, "
            f"completed {shown}"
        )
    for name, low in expect.at_least:
        if measure(outcome, name) < low:
            misses.append(f"{name}: expected at least {low:g}, got {measure(outcome, name):g}")
    for name, high in expect.at_most:
        if measure(outcome, name) > high:
            misses.append(f"{name}: expected at most {high:g}, got {measure(outcome, name):g}")
    return misses
