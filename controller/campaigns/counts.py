"""A campaign's counts, kept up to date change by change and handed to the
scheduler as `Tallies`.

Neither the controller nor the simulator can recount 100,000 hosts per
decision: both add and remove as hosts move (`live.LiveCount` for the
controller, the simulator's engine for itself) and build a snapshot only
when something changed. What each count means is `tallies`; the full
recount (`controller.tally.count`) is the consistency check both are
tested against.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime

from controller.campaigns.tallies import CampaignState, CellTally, Reading, Tallies
from controller.model import AssignmentStatus

Cell = tuple[int, str]
FIELDS = tuple(f.name for f in fields(CellTally))
INDEX = {name: i for i, name in enumerate(FIELDS)}
ELIGIBLE, IN_FLIGHT, UNREACHABLE, SILENT = (
    INDEX["eligible"], INDEX["in_flight"], INDEX["unreachable"], INDEX["silent"],
)  # fmt: skip

# Which count an assignment of each status is in.
COUNTED: dict[AssignmentStatus, int] = {
    AssignmentStatus.IN_FLIGHT: INDEX["in_flight"],
    AssignmentStatus.SUCCEEDED: INDEX["succeeded"],
    AssignmentStatus.PENDING_REBOOT: INDEX["succeeded"],
    AssignmentStatus.PENDING_RESTART: INDEX["succeeded"],
    AssignmentStatus.FAILED: INDEX["failed"],
    AssignmentStatus.REVERTED: INDEX["reverted"],
    AssignmentStatus.REVERT_FAILED: INDEX["revert_failed"],
    AssignmentStatus.TIMED_OUT: INDEX["timed_out"],
}


class Counts:
    """Per (ring, region) counts, the campaign state, and what a person accepted."""

    def __init__(self, cells: Iterable[Cell] = ()) -> None:
        self._cells: dict[Cell, list[int]] = {cell: [0] * len(FIELDS) for cell in cells}
        self._cache: dict[Cell, CellTally] = {}
        self._ring_cells: dict[int, list[Cell]] = {}
        for cell in sorted(self._cells):
            self._ring_cells.setdefault(cell[0], []).append(cell)
        self._ring_sums: dict[int, CellTally] = {}
        self._dirty: set[Cell] = set(self._cells)
        self._finished_at: dict[int, datetime] = {}
        self.state = CampaignState.RUNNING
        self.accepted_failures: dict[int, int] = {}
        self.accepted_silent: dict[int, int] = {}
        self.analysis: dict[str, Reading] = {}
        self.version = 0
        self._snapshot: Tallies | None = None

    def add(self, cell: Cell, index: int, delta: int) -> None:
        counts = self._cells.get(cell)
        if counts is None:
            counts = self._new_cell(cell)
        counts[index] += delta
        self._dirty.add(cell)
        self._changed()

    def _new_cell(self, cell: Cell) -> list[int]:
        """A cell first seen after the start (a host of a new region, say)."""
        counts = self._cells[cell] = [0] * len(FIELDS)
        ring = self._ring_cells.setdefault(cell[0], [])
        ring.append(cell)
        ring.sort()
        return counts

    def move(self, cell: Cell, old: int, new: int) -> None:
        """One host leaves count ``old`` for count ``new``."""
        counts = self._cells[cell]
        counts[old] -= 1
        counts[new] += 1
        self._dirty.add(cell)
        self._changed()

    def finished(self, ring: int, at: datetime) -> None:
        """An assignment of ``ring`` got its final status at ``at``."""
        last = self._finished_at.get(ring)
        if last is None or at > last:
            self._finished_at[ring] = at
            self._changed()

    def read(self, name: str, reading: Reading) -> None:
        """The latest reading of analysis ``name`` (every reading is news:
        its time moves the bake on, as `gates` reads it)."""
        self.analysis[name] = reading
        self._changed()

    def forget_readings(self) -> None:
        """Readings from before a resume say nothing of now: guarded rings
        wait for the next ones."""
        self.analysis.clear()
        self._changed()

    def set_state(self, state: CampaignState) -> None:
        self.state = state
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._snapshot = None

    def value(self, cell: Cell, index: int) -> int:
        return self._cells[cell][index]

    def snapshot(self) -> Tallies:
        """The counts as the controller's `Tallies`, as `controller.tally.count`
        builds them: ring_finished_at only for rings that are done."""
        if self._snapshot is not None:
            return self._snapshot
        rings = set()
        for cell in self._dirty:
            self._cache[cell] = CellTally(*self._cells[cell])
            rings.add(cell[0])
        self._dirty.clear()
        for ring in rings:
            members = [self._cells[cell] for cell in self._ring_cells[ring]]
            self._ring_sums[ring] = CellTally(
                *(sum(column) for column in zip(*members, strict=True))
            )
        finished_at = {
            ring: at
            for ring, at in self._finished_at.items()
            if self._ring_sums.get(ring, _EMPTY).done
        }
        tallies = Tallies(
            self.state,
            # A cell every host has left counts nothing, as in a recount.
            {cell: tally for cell, tally in self._cache.items() if tally.eligible},
            finished_at,
            dict(self.accepted_failures),
            dict(self.accepted_silent),
            dict(self.analysis),
        )
        if _RING_SUMS_CACHED:
            # Tallies sums its cells per ring on first use, once per snapshot;
            # the sums kept here are the same numbers, already added up.
            tallies.__dict__["_rings"] = dict(self._ring_sums)
        self._snapshot = tallies
        return tallies


# Whether Tallies keeps its per-ring sums in a cached_property we may fill in.
_RING_SUMS_CACHED = isinstance(Tallies.__dict__.get("_rings"), functools.cached_property)
_EMPTY = CellTally()
