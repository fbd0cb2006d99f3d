"""What the controller knows about a running campaign, as plain counts.

The scheduler decides from these counts alone, so the controller (from its
store) and the simulator (from its virtual fleet) must count the same way:

    eligible       hosts the campaign targets (`scheduler.is_targeted`) in this
                   ring and region, whatever their progress
    in_flight      assigned and without a final result yet: from assignment
                   until the final report, reboot and verification included
    succeeded      final result SUCCEEDED
    failed         final result FAILED (nothing changed, e.g. precheck refused)
    reverted       final result REVERTED (verification failed, reverted cleanly)
    revert_failed  final result REVERT_FAILED
    timed_out      in flight with no report for rollout.report_timeout; final
                   for the budget (a late report does not give it back)
    unreachable    not assigned yet and not seen for rollout.silent_after
                   (a subset of the unassigned hosts)
    silent         assigned by this campaign and since not seen for
                   rollout.silent_after (overlaps in_flight and the results)

So ``eligible = in_flight + finished + unassigned`` where ``finished`` is the
sum of the five results.

Beside the counts, ``analysis`` holds the latest reading of each of the
campaign's live-metric analyses (`spec.Analysis`), by name: the controller
asks Prometheus (`controller.rollout.analysis`), the simulator reads the
scenario's series.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum


class CampaignState(StrEnum):
    """Stored in the campaigns table; values never change once released."""

    DRAFT = "draft"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"  # by a person
    HALTED = "halted"  # by a breached failure budget or silent-host threshold
    COMPLETED = "completed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class CellTally:
    """Counts for one (ring, region) cell, or a sum of cells. Raises
    ValueError when a count is negative."""

    eligible: int = 0
    in_flight: int = 0
    succeeded: int = 0
    failed: int = 0
    reverted: int = 0
    revert_failed: int = 0
    timed_out: int = 0
    unreachable: int = 0
    silent: int = 0

    def __post_init__(self) -> None:
        if min(astuple_fast(self)) < 0:
            for f in fields(self):
                if getattr(self, f.name) < 0:
                    raise ValueError(f"tally {f.name} is negative: {getattr(self, f.name)}")

    @property
    def failures(self) -> int:
        """What the failure budget counts."""
        return self.failed + self.reverted + self.revert_failed + self.timed_out

    @property
    def finished(self) -> int:
        return self.succeeded + self.failures

    @property
    def started(self) -> bool:
        """Some host of the cell has been assigned by this campaign."""
        return self.in_flight + self.finished > 0

    @property
    def outstanding(self) -> int:
        """Hosts still to be assigned, the unreachable ones excused."""
        return max(0, self.eligible - self.in_flight - self.finished - self.unreachable)

    @property
    def done(self) -> bool:
        """Nothing in flight and nothing left that could be assigned."""
        return self.in_flight == 0 and self.outstanding == 0

    def __add__(self, other: CellTally) -> CellTally:
        return CellTally(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(CellTally))
        )


@dataclass(frozen=True)
class Reading:
    """The latest answer to one analysis: ``value`` None when there was no
    usable answer (Prometheus unreachable, an error, no series), ``detail``
    then says why."""

    value: float | None
    at: datetime
    detail: str = ""


@dataclass(frozen=True)
class Tallies:
    """The campaign's state and counts, as the scheduler reads them.

    ``ring_finished_at``: when each ring was last observed `done` (the
    controller stamps it when a ring becomes done, and drops it when the
    ring stops being done); bake time runs from it.
    ``accepted_failures`` / ``accepted_silent``: per ring, the counts a
    person accepted when resuming a halted campaign; the failure budget and
    the silent threshold apply to what comes on top of them.
    """

    state: CampaignState
    cells: Mapping[tuple[int, str], CellTally] = field(default_factory=dict)
    ring_finished_at: Mapping[int, datetime] = field(default_factory=dict)
    accepted_failures: Mapping[int, int] = field(default_factory=dict)
    accepted_silent: Mapping[int, int] = field(default_factory=dict)
    analysis: Mapping[str, Reading] = field(default_factory=dict)

    def cell(self, ring: int, region: str) -> CellTally:
        return self.cells.get((ring, region), _EMPTY)

    def ring(self, ring: int) -> CellTally:
        """The sum over every region of ``ring``."""
        return self._rings.get(ring, _EMPTY)

    def regions(self, ring: int) -> dict[str, CellTally]:
        """The cells of ``ring`` by region."""
        return self._regions.get(ring, {})

    @functools.cached_property
    def derived(self) -> dict[object, object]:
        """Answers derived from this snapshot (it never changes), kept by the
        pure functions that compute them (`gates.evaluate_halt`): thousands
        of decisions read one snapshot."""
        return {}

    # Cached: the simulator asks thousands of hosts against one snapshot.
    @functools.cached_property
    def _rings(self) -> dict[int, CellTally]:
        sums: dict[int, CellTally] = {}
        for (ring, _), tally in self.cells.items():
            sums[ring] = sums.get(ring, _EMPTY) + tally
        return sums

    @functools.cached_property
    def _regions(self) -> dict[int, dict[str, CellTally]]:
        out: dict[int, dict[str, CellTally]] = {}
        for (ring, region), tally in self.cells.items():
            out.setdefault(ring, {})[region] = tally
        return out


def astuple_fast(tally: CellTally) -> tuple[int, ...]:
    """The counts in field order (dataclasses.astuple deep-copies: slow)."""
    return (
        tally.eligible, tally.in_flight, tally.succeeded, tally.failed, tally.reverted,
        tally.revert_failed, tally.timed_out, tally.unreachable, tally.silent,
    )  # fmt: skip


_EMPTY = CellTally()
