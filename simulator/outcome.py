"""What a rehearsal found, as plain data: per ring and region counts, times
to coverage, halts, the SLIs (auto-patching guide M1, M3, M4, M6, M7, M8),
coverage over time, and notes worth a person's attention.

`Recorder` collects during the run; `build_outcome` turns a finished
`Simulation` into an `Outcome`. No wall-clock time goes into an Outcome:
two runs with the same inputs and seed give equal ones.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.orders.states import State
from controller.campaigns import Assign, CampaignState, HaltReason, decide
from controller.campaigns.counts import Cell
from controller.model import PATCHED, AssignmentStatus

from .hosts import SimHost

if TYPE_CHECKING:
    from .engine import Simulation

MAX_POINTS = 400  # per coverage curve: plenty for a chart, small in JSON


class Recorder:
    """Mutable notes the engine takes as it goes."""

    def __init__(self, targeted: int) -> None:
        self.targeted = targeted
        self.assigned = 0
        self.finished = 0
        self.gone_dark = 0
        self.window_aborts = 0
        self.anomalies = 0
        self.halts: list[tuple[int, HaltReason]] = []
        self.resumes: list[int] = []
        self.completed_at: int | None = None
        self.controller: list[tuple[int, bool]] = []
        self.outages: list[tuple[int, int]] = []
        self.success_times: dict[Cell, list[int]] = {}
        self.silent_now = 0
        self.silent_most = 0

    def covered(self, cell: Cell, t: int) -> None:
        self.success_times.setdefault(cell, []).append(t)

    def silence(self, delta: int, t: int) -> None:
        self.silent_now += delta
        self.silent_most = max(self.silent_most, self.silent_now)


@dataclass(frozen=True)
class Row:
    """Counts of one ring and region (region "" for a whole ring, ring -1 for all)."""

    ring: int
    region: str
    hosts: int  # targeted (eligible)
    succeeded: int  # pending_reboot included, as the controller counts it
    failed: int
    reverted: int
    revert_failed: int
    timed_out: int
    pending_reboot: int
    in_flight: int
    unpatched: int  # never assigned
    unreachable: int  # not assigned and not seen for silent_after, at the end
    t50: timedelta | None  # after the start, when half the hosts were patched
    t95: timedelta | None
    t100: timedelta | None


@dataclass(frozen=True)
class HaltRecord:
    after: timedelta
    kind: str
    ring: int
    count: int
    limit: int
    message: str


@dataclass(frozen=True)
class Slis:
    patch_success_rate: float | None  # M1: succeeded / finished
    canary_failure_rate: float | None  # M3: failures / finished in the first ring
    rollback_rate: float | None  # M4: reverted + revert failed / finished
    verify_p50: timedelta | None  # M6: assignment to verified success
    verify_p95: timedelta | None
    coverage: float  # M7: succeeded / targeted, at the end
    hosts_reporting: float  # M8: targeted hosts not silent, at the end
    hosts_reporting_min: float  # M8: the lowest it went


@dataclass(frozen=True)
class Curve:
    ring: int
    hosts: int
    points: tuple[tuple[float, int], ...]  # (hours after the start, hosts patched)


@dataclass(frozen=True)
class Outcome:
    scenario: str
    campaign: str
    campaign_source: str
    seed: int
    start: datetime
    duration: timedelta
    horizon: timedelta
    simulated: timedelta  # how far virtual time went
    fleet_hosts: int
    targeted: int
    state: str  # the campaign's state at the end
    completed_after: timedelta | None
    finished_in_time: bool  # completed within the duration
    rows: tuple[Row, ...]
    rings: tuple[Row, ...]
    total: Row
    halts: tuple[HaltRecord, ...]
    resumes: tuple[timedelta, ...]
    slis: Slis
    rings_finished: tuple[int, ...]
    rings_untouched: tuple[int, ...]
    waiting: tuple[
        tuple[str, int], ...
    ]  # never assigned: unreachable, or decide's answer at the end
    curves: tuple[Curve, ...]
    windows: tuple[str, ...]  # the campaign's maintenance windows, as written
    notes: tuple[str, ...] = field(default=())
    events: int = 0
    decisions: int = 0


def _at(times: list[int], hosts: int, share: float) -> timedelta | None:
    need = max(1, math.ceil(share * hosts - 1e-9))
    if hosts == 0 or len(times) < need:
        return None
    return timedelta(microseconds=times[need - 1])


def _row(ring: int, region: str, members: list[SimHost], times: list[int]) -> Row:
    status = Counter(h.ctl for h in members)
    succeeded = sum(status[s] for s in PATCHED)
    times = sorted(times)
    n = len(members)
    return Row(
        ring=ring,
        region=region,
        hosts=n,
        succeeded=succeeded,
        failed=status[AssignmentStatus.FAILED],
        reverted=status[AssignmentStatus.REVERTED],
        revert_failed=status[AssignmentStatus.REVERT_FAILED],
        timed_out=status[AssignmentStatus.TIMED_OUT],
        pending_reboot=status[AssignmentStatus.PENDING_REBOOT],
        in_flight=status[AssignmentStatus.IN_FLIGHT],
        unpatched=status[None],
        unreachable=sum(1 for h in members if h.ctl is None and h.silent),
        t50=_at(times, n, 0.5),
        t95=_at(times, n, 0.95),
        t100=_at(times, n, 1.0),
    )


def _waiting(sim: Simulation) -> Counter[str]:
    """Why the hosts never assigned are not patched: unreachable, or what the
    scheduler answers them at the end (asked once per room: its hosts get
    the same answer)."""
    tallies = sim.counts.snapshot()
    now = sim.to_datetime(sim.now)
    answers: dict[int, str] = {}
    out: Counter[str] = Counter()
    for host in sim.hosts:
        if host.ctl is not None:
            continue
        if host.silent:
            out["unreachable"] += 1
            continue
        key = id(host.room)
        if key not in answers:
            decision = decide(sim.spec, host.facts, tallies, now)
            answers[key] = "ready" if isinstance(decision, Assign) else decision.reason.value
        out[answers[key]] += 1
    return out


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percentile(values: list[int], share: float) -> timedelta | None:
    if not values:
        return None
    values = sorted(values)
    return timedelta(microseconds=values[min(len(values) - 1, int(share * len(values)))])


def _curve(ring: int, hosts: int, times: list[int]) -> Curve:
    times = sorted(times)
    step = max(1, math.ceil(len(times) / MAX_POINTS))
    points = [(t / 3.6e9, i + 1) for i, t in enumerate(times) if (i + 1) % step == 0]
    if times and (not points or points[-1][1] != len(times)):
        points.append((times[-1] / 3.6e9, len(times)))
    return Curve(ring, hosts, ((0.0, 0), *points))


def build_outcome(sim: Simulation) -> Outcome:
    """Everything the report shows, from a finished run."""
    rec = sim.rec
    spec = sim.spec
    hosts = sim.hosts
    by_cell: dict[Cell, list[SimHost]] = {}
    for host in hosts:
        by_cell.setdefault(host.cell, []).append(host)
    order = [stage.ring for stage in spec.rollout.rings]
    rows = tuple(
        _row(ring, region, by_cell[(ring, region)], rec.success_times.get((ring, region), []))
        for ring in order
        for region in sorted(r for (g, r) in by_cell if g == ring)
    )
    ring_rows = []
    curves = []
    for ring in order:
        members = [h for h in hosts if h.ring == ring]
        times = [t for (g, _), ts in rec.success_times.items() if g == ring for t in ts]
        ring_rows.append(_row(ring, "", members, times))
        curves.append(_curve(ring, len(members), times))
    all_times = [t for ts in rec.success_times.values() for t in ts]
    total = _row(-1, "", list(hosts), all_times)
    first = ring_rows[0] if ring_rows else total
    finished = total.succeeded + total.failed + total.reverted + total.revert_failed
    finished += total.timed_out
    first_finished = first.succeeded + first.failed + first.reverted + first.revert_failed
    first_finished += first.timed_out
    verify_times = [
        h.final_at - h.assigned_at
        for h in hosts
        if h.ctl is AssignmentStatus.SUCCEEDED and h.agent_final is State.SUCCEEDED
    ]
    targeted = len(hosts)
    slis = Slis(
        patch_success_rate=_ratio(total.succeeded, finished),
        canary_failure_rate=_ratio(first_finished - first.succeeded, first_finished),
        rollback_rate=_ratio(total.reverted + total.revert_failed, finished),
        verify_p50=_percentile(verify_times, 0.5),
        verify_p95=_percentile(verify_times, 0.95),
        coverage=(total.succeeded / targeted) if targeted else 1.0,
        hosts_reporting=1 - rec.silent_now / targeted if targeted else 1.0,
        hosts_reporting_min=1 - rec.silent_most / targeted if targeted else 1.0,
    )
    tallies = sim.counts.snapshot()
    finished_rings = tuple(r for r in order if tallies.ring(r).done and tallies.ring(r).finished)
    untouched = tuple(r for r in order if not tallies.ring(r).started)
    waiting = _waiting(sim)
    completed = rec.completed_at
    duration_us = sim.settings.duration // timedelta(microseconds=1)
    windows = spec.windows
    return Outcome(
        scenario=sim.settings.name,
        campaign=spec.name,
        campaign_source=spec.source,
        seed=sim.settings.seed,
        start=sim.settings.start,
        duration=sim.settings.duration,
        horizon=sim.settings.horizon,
        simulated=timedelta(microseconds=sim.now),
        fleet_hosts=sim.fleet_size,
        targeted=targeted,
        state=sim.counts.state.value,
        completed_after=None if completed is None else timedelta(microseconds=completed),
        finished_in_time=completed is not None and completed <= duration_us,
        rows=rows,
        rings=tuple(ring_rows),
        total=total,
        halts=tuple(
            HaltRecord(timedelta(microseconds=t), h.kind.value, h.ring, h.count, h.limit, h.message)
            for t, h in rec.halts
        ),
        resumes=tuple(timedelta(microseconds=t) for t in rec.resumes),
        slis=slis,
        rings_finished=finished_rings,
        rings_untouched=untouched,
        waiting=tuple(sorted(waiting.items(), key=lambda kv: (-kv[1], kv[0]))),
        curves=tuple(curves),
        windows=tuple(f"{w.text} ({windows.timezone})" for w in windows.weekly)
        if windows is not None
        else (),
        notes=tuple(_notes(sim, total)),
        events=sim.events,
        decisions=sim.decisions,
    )


def _span(delta: timedelta) -> str:
    from .report import span

    return span(delta)


def _ring_order(sim: Simulation) -> list[str]:
    """Regions where a later ring began before an earlier ring had finished
    there: rings gate the whole fleet, not each region."""
    order = [stage.ring for stage in sim.spec.rollout.rings]
    first_assigned: dict[tuple[int, str], int] = {}
    last_final: dict[tuple[int, str], int] = {}
    for h in sim.hosts:
        if h.ctl is None:
            continue
        cell = h.cell
        first_assigned[cell] = min(first_assigned.get(cell, _LATE), h.assigned_at)
        if h.ctl is not AssignmentStatus.IN_FLIGHT:
            last_final[cell] = max(last_final.get(cell, -1), h.finished_at)
    notes = []
    for region in sorted({cell[1] for cell in first_assigned}):
        for i, early in enumerate(order):
            for late in order[i + 1 :]:
                began = first_assigned.get((late, region))
                done = last_final.get((early, region))
                if began is not None and done is not None and began < done:
                    notes.append(
                        f"{region}: ring {late} began there (+{_span(_us(began))}) before ring "
                        f"{early} had finished there (+{_span(_us(done))}): ring gates hold "
                        "for the whole fleet, not per region"
                    )
                    break
            else:
                continue
            break
    return notes


_LATE = 2**62


def _us(t: int) -> timedelta:
    return timedelta(microseconds=t)


def _notes(sim: Simulation, total: Row) -> list[str]:
    """Findings a person should read even when nothing halted."""
    notes = []
    rec = sim.rec
    silent_after = sim.spec.rollout.silent_after
    slow = sum(
        1 for h in sim.hosts
        if h.agent_final is not None
        and timedelta(microseconds=h.final_at - h.assigned_at) > silent_after
    )  # fmt: skip
    if slow:
        notes.append(
            f"{slow} order(s) took longer than rollout.silent_after ({_span(silent_after)}); "
            "the agent does not check in while it works, so those hosts counted as silent "
            "meanwhile"
        )
    if rec.window_aborts:
        notes.append(
            f"{rec.window_aborts} host(s) were assigned so close to their window's end that the "
            "agent gave up before applying (the window closed during precheck and snapshot); "
            "each counts as FAILED against the failure budget"
        )
    if total.pending_reboot:
        notes.append(
            f"{total.pending_reboot} host(s) are patched but still owe a reboot the agent could "
            "not make (reboot = never, or the window closed first); the controller counts them "
            "as succeeded"
        )
    notes.extend(_ring_order(sim))
    late = sum(1 for h in sim.hosts if h.late)
    if late:
        notes.append(
            f"{late} host(s) reported their result after the controller had timed them out; "
            "the failure budget kept counting them"
        )
    if rec.gone_dark:
        notes.append(f"{rec.gone_dark} host(s) went dark after applying the patch")
    offline = sum(1 for h in sim.hosts if h.ctl is None and h.silent)
    if offline and sim.counts.state is CampaignState.RUNNING:
        notes.append(
            f"{offline} targeted host(s) are unreachable: the campaign stays running until "
            "they come back (they are patched then) or its deadline passes"
        )
    for t, down in rec.controller:
        if not down:
            notes.append(
                f"the controller came back at +{_span(timedelta(microseconds=t))}: silence "
                f"({_span(silent_after)}) and report time-outs counted from then"
            )
    if rec.anomalies:
        notes.append(f"the scheduler gave {rec.anomalies} wait(s) ending in the past")
    if total.unpatched and sim.counts.state is CampaignState.HALTED:
        notes.append(
            f"halted with {total.unpatched} host(s) never assigned: nothing more happens until "
            "a person resumes the campaign"
        )
    return notes
