"""Ring gates, region order and halts: what the counts of a campaign allow.

Pure functions of (campaign, tallies[, now]). `scheduler.decide` asks them
for one host; the controller asks `evaluate_halt` after every result and
`ring_done` to stamp when a ring finished. Semantics are documented in
`scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import cast

from controller.campaigns.spec import Analysis, CampaignSpec, RegionOrder, RingStage
from controller.campaigns.tallies import CellTally, Tallies


class HaltKind(StrEnum):
    """Stored with a halted campaign; values never change once released."""

    FAILURE_BUDGET = "failure_budget"
    SILENT_HOSTS = "silent_hosts"
    ANALYSIS = "analysis"  # a live metric of [[rollout.analysis]] breached its threshold


@dataclass(frozen=True)
class HaltReason:
    """Why the campaign must halt: ``count`` went over ``limit`` in ``ring``."""

    kind: HaltKind
    ring: int
    count: int
    limit: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class GateStatus:
    """Whether a ring is open; when not, why, and when it may open if the
    only thing missing is bake time (``until``)."""

    met: bool
    detail: str = ""
    until: datetime | None = None


OPEN = GateStatus(met=True)


def evaluate_halt(campaign: CampaignSpec, tallies: Tallies) -> HaltReason | None:
    """The first ring (in rollout order) whose failures or silent hosts
    exceed their limit, or None. Exceed means strictly more than the limit:
    a budget of 2 tolerates 2 failures and halts on the third."""
    key = ("halt", id(campaign))
    kept = tallies.derived.get(key)
    if isinstance(kept, tuple) and kept[0] is campaign:
        return cast(HaltReason | None, kept[1])
    answer = _first_halt(campaign, tallies) or _breached(campaign, tallies)
    tallies.derived[key] = (campaign, answer)  # holds campaign: its id stays its own
    return answer


def _first_halt(campaign: CampaignSpec, tallies: Tallies) -> HaltReason | None:
    for stage in campaign.rollout.rings:
        ring = tallies.ring(stage.ring)
        failures = ring.failures - tallies.accepted_failures.get(stage.ring, 0)
        budget = stage.gate.failure_budget
        limit = budget.floor_of(ring.eligible)
        if failures > limit:
            accepted = tallies.accepted_failures.get(stage.ring, 0)
            return HaltReason(
                HaltKind.FAILURE_BUDGET,
                stage.ring,
                failures,
                limit,
                f"ring {stage.ring}: {failures} failed host(s) exceed the failure budget of "
                f"{limit} ({budget} of {ring.eligible} eligible){_breakdown(ring, accepted)}",
            )
        silent = ring.silent - tallies.accepted_silent.get(stage.ring, 0)
        threshold = campaign.rollout.silent_threshold
        limit = threshold.floor_of(ring.eligible)
        if silent > limit:
            return HaltReason(
                HaltKind.SILENT_HOSTS,
                stage.ring,
                silent,
                limit,
                f"ring {stage.ring}: {silent} patched host(s) stopped reporting, more than "
                f"{limit} ({threshold} of {ring.eligible} eligible): the rollout cannot see "
                "its hosts",
            )
    return None


def _guarding(campaign: CampaignSpec, tallies: Tallies, analysis: Analysis) -> int | None:
    """The first ring ``analysis`` still guards: not started yet, or started
    and not past its gate (running, or baking) when it was last read. None
    once every ring it guards is past."""
    now = max(r.at for r in tallies.analysis.values())
    for stage in campaign.rollout.rings:
        if stage.ring in analysis.rings and not (
            tallies.ring(stage.ring).started and gate_status(campaign, tallies, stage, now).met
        ):
            return stage.ring
    return None


def _breached(campaign: CampaignSpec, tallies: Tallies) -> HaltReason | None:
    """The first analysis whose latest reading breaks its threshold while it
    still guards a ring."""
    for analysis in campaign.rollout.analysis:
        reading = tallies.analysis.get(analysis.name)
        if reading is None or reading.value is None or analysis.holds(reading.value):
            continue
        ring = _guarding(campaign, tallies, analysis)
        if ring is None:
            continue
        return HaltReason(
            HaltKind.ANALYSIS, ring, 0, 0,
            f"analysis {analysis.name}: {analysis.query} = {reading.value:g}, beyond its "
            f"{analysis.threshold} (guarding ring {ring})",
        )  # fmt: skip
    return None


def analysis_holds(campaign: CampaignSpec, tallies: Tallies, ring: int) -> GateStatus:
    """Whether every analysis guarding ``ring`` read a value within its
    threshold. No reading, or one with no value, holds the ring back."""
    for analysis in campaign.rollout.analysis:
        if ring not in analysis.rings:
            continue
        reading = tallies.analysis.get(analysis.name)
        if reading is None:
            return GateStatus(False, f"analysis {analysis.name}: not asked yet")
        if reading.value is None:
            return GateStatus(False, f"analysis {analysis.name}: no answer ({reading.detail})")
        if not analysis.holds(reading.value):
            return GateStatus(
                False, f"analysis {analysis.name}: {reading.value:g}, beyond its "
                f"{analysis.threshold}",
            )  # fmt: skip
    return OPEN


def _breakdown(ring: CellTally, accepted: int) -> str:
    parts = [
        f"{count} {name}"
        for name, count in (
            ("failed", ring.failed),
            ("reverted", ring.reverted),
            ("revert failed", ring.revert_failed),
            ("timed out", ring.timed_out),
        )
        if count
    ]
    extra = f", {accepted} accepted earlier" if accepted else ""
    return f": {', '.join(parts)}{extra}" if parts else extra


def ring_done(tallies: Tallies, ring: int) -> bool:
    """Nothing of ``ring`` in flight and nothing left to assign (unreachable
    hosts excused): the controller stamps ``ring_finished_at`` then."""
    return tallies.ring(ring).done


def gate_status(
    campaign: CampaignSpec, tallies: Tallies, stage: RingStage, now: datetime
) -> GateStatus:
    """Whether ``stage`` has met its gate at ``now``, so the next ring may open.

    A ring with no eligible host meets it at once. Otherwise: nothing in
    flight, nothing left to assign, at least one host finished, succeeded /
    finished >= min_success, failures within the budget, and ``bake`` passed
    since ``ring_finished_at``.
    """
    r = stage.ring
    ring = tallies.ring(r)
    if ring.eligible == 0:
        return OPEN
    unmet = _unfinished(r, ring) or _quality(stage, ring, tallies.accepted_failures.get(r, 0))
    if unmet:
        return GateStatus(False, unmet)
    if stage.gate.bake:
        finished_at = tallies.ring_finished_at.get(r)
        if finished_at is None:
            return GateStatus(False, f"ring {r}: finished, but its finish time is not recorded")
        bake_end = finished_at + stage.gate.bake
        if now < bake_end:
            return GateStatus(
                False, f"ring {r}: baking until {bake_end:%Y-%m-%d %H:%M} UTC", bake_end
            )
    return OPEN


def _unfinished(r: int, ring: CellTally) -> str:
    if ring.in_flight:
        return f"ring {r}: {ring.in_flight} host(s) still in flight"
    if ring.outstanding:
        return f"ring {r}: {ring.outstanding} of {ring.eligible} not patched yet"
    if not ring.finished:
        return f"ring {r}: no host has finished ({ring.unreachable} unreachable)"
    return ""


def _quality(stage: RingStage, ring: CellTally, accepted: int) -> str:
    ratio = Fraction(ring.succeeded, ring.finished)
    if ratio < stage.gate.min_success:
        return (
            f"ring {stage.ring}: {ring.succeeded} of {ring.finished} succeeded "
            f"({float(ratio):.1%}), below the gate's {float(stage.gate.min_success):.1%}"
        )
    if ring.failures - accepted > stage.gate.failure_budget.floor_of(ring.eligible):
        return f"ring {stage.ring}: over its failure budget"
    return ""


def ring_open(campaign: CampaignSpec, tallies: Tallies, ring: int, now: datetime) -> GateStatus:
    """Whether hosts of ``ring`` may be assigned.

    The first ring is open. A later one opens when every ring before it has
    met its gate; once it has started (any host assigned) it stays open, so
    a host joining an earlier ring later does not stop it.
    """
    stages = campaign.rollout.rings
    position = campaign.rollout.positions[ring]
    if tallies.ring(ring).started:
        return OPEN
    first = position
    while first > 0 and not tallies.ring(stages[first].ring).started:
        first -= 1
    # Rings from the last started one up to ours must each have met their
    # gate, and the analyses guarding ours must hold.
    held = analysis_holds(campaign, tallies, ring)
    if not held.met:
        return GateStatus(False, f"ring {ring} waits: {held.detail}")
    for stage in stages[first:position]:
        status = gate_status(campaign, tallies, stage, now)
        if not status.met:
            return GateStatus(
                False,
                f"ring {ring} waits for ring {stage.ring}'s gate: {status.detail}",
                status.until,
            )
    return OPEN


def region_waits_for(
    campaign: CampaignSpec, tallies: Tallies, ring: int, region: str
) -> str | None:
    """With region_order = sequential, the region of ``ring`` that must finish
    before ``region`` may start (None: ``region``'s turn, or parallel).

    Order: regions already started first (so a region's turn, once begun,
    is not taken away when host counts change), then by eligible hosts,
    fewest first, then by name.
    """
    if campaign.rollout.region_order is RegionOrder.PARALLEL:
        return None
    cells = dict(tallies.regions(ring))
    cells.setdefault(region, CellTally())

    def key(name: str) -> tuple[bool, int, str]:
        return (not cells[name].started, cells[name].eligible, name)

    for name in sorted(cells, key=key):
        if name == region:
            return None
        if not cells[name].done:
            return name
    return None  # pragma: no cover - region is always among the cells
