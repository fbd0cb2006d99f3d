"""An outcome as a readable table (`print_text`) or as JSON (`to_json`).

JSON durations are seconds after the start (numbers, or null when it never
happened); instants are ISO 8601 in UTC.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

from fleetpatch import render
from fleetpatch.durations import format_duration

from .outcome import Outcome, Row

COLUMNS = (
    "RING", "REGION", "HOSTS", "OK", "FAILED", "REVERTED", "REVERT-FAILED", "TIMED-OUT",
    "PENDING-REBOOT", "IN-FLIGHT", "UNPATCHED", "50%", "95%", "100%",
)  # fmt: skip


def span(delta: timedelta | None) -> str:
    """``1d5h45m`` (minutes once it is over an hour), ``-`` for never."""
    if delta is None:
        return "-"
    if delta >= timedelta(hours=1):
        delta = timedelta(minutes=round(delta / timedelta(minutes=1)))
    return format_duration(delta) if delta > timedelta(0) else "0s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _cells(row: Row) -> list[object]:
    return [
        "all" if row.ring < 0 else row.ring, row.region or "(all)", row.hosts, row.succeeded,
        row.failed, row.reverted, row.revert_failed, row.timed_out, row.pending_reboot,
        row.in_flight, row.unpatched, _t(row.t50), _t(row.t95), _t(row.t100),
    ]  # fmt: skip


def _t(delta: timedelta | None) -> str:
    return "-" if delta is None else f"+{span(delta)}"


def headline(outcome: Outcome) -> str:
    """One line: how it ended."""
    o = outcome
    if o.completed_after is not None:
        within = ("" if o.finished_in_time else "NOT ") + f"within {span(o.duration)}"
        return f"COMPLETED after {span(o.completed_after)} ({within})"
    if o.state == "halted":
        halt = o.halts[-1]
        return f"HALTED at +{span(halt.after)}: {halt.message}"
    left = o.total.hosts - o.total.succeeded
    return (
        f"{o.state.upper()}: not finished after {span(o.simulated)} "
        f"(the campaign has {span(o.duration)}); {left:,} of {o.total.hosts:,} hosts not patched"
    )


def print_text(outcome: Outcome, misses: Sequence[str] | None, summary: str, out: TextIO) -> None:
    """The report for a person; ``misses`` None: no expectations to check."""
    for part in (_head(outcome), _table(outcome), _halts(outcome), _slis(outcome),
                 _tail(outcome), _expected(misses, summary)):  # fmt: skip
        out.write(part)


def _head(o: Outcome) -> str:
    lines = [
        f"rehearsal {o.scenario}: campaign {o.campaign} ({o.campaign_source})",
        f"fleet {o.fleet_hosts:,} hosts, {o.targeted:,} targeted; seed {o.seed}; "
        f"start {o.start:%Y-%m-%d %H:%M} UTC; duration {span(o.duration)}, "
        f"simulated {span(o.simulated)}",
    ]
    if o.windows:
        lines.append(f"windows: {', '.join(o.windows)}")
    lines += ["", f"outcome: {headline(o)}"]
    if o.completed_after is not None and not o.finished_in_time:
        late = o.completed_after - o.duration
        when = o.start + o.completed_after
        lines.append(
            f"  it will not finish in time: it would complete {span(late)} after its "
            f"{span(o.duration)}, at {when:%Y-%m-%d %H:%M} UTC"
        )
    return "\n".join(lines) + "\n\n"


def _table(o: Outcome) -> str:
    rows = []
    for ring_row in o.rings:
        rows += [_cells(r) for r in o.rows if r.ring == ring_row.ring]
        rows.append(_cells(ring_row))
    rows.append(_cells(o.total))
    buffer = io.StringIO()
    render.table(COLUMNS, rows, buffer)
    return buffer.getvalue()


def _halts(o: Outcome) -> str:
    if not o.halts:
        return ""
    lines = [f"  +{span(h.after)}  ring {h.ring}  {h.kind}: {h.message}" for h in o.halts]
    lines += [f"  +{span(t)}  resumed by a person (what halted it is accepted)" for t in o.resumes]
    return "\nhalts\n" + "\n".join(lines) + "\n"


def _slis(o: Outcome) -> str:
    s = o.slis
    reporting = f"{percent(s.hosts_reporting)} at the end, lowest {percent(s.hosts_reporting_min)}"
    lines = [
        ("patch success rate (M1)", percent(s.patch_success_rate)),
        ("canary failure rate (M3)", percent(s.canary_failure_rate)),
        ("rollback rate (M4)", percent(s.rollback_rate)),
        ("time to verification (M6)", f"p50 {span(s.verify_p50)}, p95 {span(s.verify_p95)}"),
        ("coverage (M7)", percent(s.coverage)),
        ("hosts reporting (M8)", reporting),
    ]
    return "\nSLIs\n" + "".join(f"  {name:<28}{value}\n" for name, value in lines)


def _tail(o: Outcome) -> str:
    out = ""
    if o.waiting:
        shown = ", ".join(f"{reason} {n:,}" for reason, n in o.waiting)
        out += f"\nnot patched, and why (the scheduler's answer at the end): {shown}\n"
    if o.notes:
        out += "\nnotes\n" + "".join(f"  - {note}\n" for note in o.notes)
    return out


def _expected(misses: Sequence[str] | None, summary: str) -> str:
    if misses is None:
        return ""
    verdict = "".join(f"  NOT MET  {miss}\n" for miss in misses) or "  met\n"
    return f"\nexpected: {summary or '(no summary)'}\n{verdict}"


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "ring": row.ring if row.ring >= 0 else None,
        "region": row.region or None,
        "hosts": row.hosts,
        "succeeded": row.succeeded,
        "failed": row.failed,
        "reverted": row.reverted,
        "revert_failed": row.revert_failed,
        "timed_out": row.timed_out,
        "pending_reboot": row.pending_reboot,
        "in_flight": row.in_flight,
        "unpatched": row.unpatched,
        "unreachable": row.unreachable,
        "coverage_seconds": {
            "p50": _seconds(row.t50), "p95": _seconds(row.t95), "p100": _seconds(row.t100),
        },
    }  # fmt: skip


def to_json(outcome: Outcome, misses: Sequence[str] | None, summary: str) -> dict[str, Any]:
    o = outcome
    s = o.slis
    return {
        "scenario": o.scenario,
        "campaign": {"name": o.campaign, "source": o.campaign_source, "windows": list(o.windows)},
        "seed": o.seed,
        "start": o.start.isoformat(),
        "duration_seconds": _seconds(o.duration),
        "horizon_seconds": _seconds(o.horizon),
        "simulated_seconds": _seconds(o.simulated),
        "fleet": {"hosts": o.fleet_hosts, "targeted": o.targeted},
        "outcome": {
            "state": o.state,
            "summary": headline(o),
            "completed_seconds": _seconds(o.completed_after),
            "finished_in_time": o.finished_in_time,
            "rings_finished": list(o.rings_finished),
            "rings_untouched": list(o.rings_untouched),
        },
        "cells": [_row_json(r) for r in o.rows],
        "rings": [_row_json(r) for r in o.rings],
        "total": _row_json(o.total),
        "halts": [
            {
                "seconds": _seconds(h.after),
                "kind": h.kind,
                "ring": h.ring,
                "count": h.count,
                "limit": h.limit,
                "message": h.message,
            }
            for h in o.halts
        ],
        "resumes_seconds": [_seconds(t) for t in o.resumes],
        "slis": {
            "patch_success_rate": s.patch_success_rate,
            "canary_failure_rate": s.canary_failure_rate,
            "rollback_rate": s.rollback_rate,
            "time_to_verification_seconds": {
                "p50": _seconds(s.verify_p50),
                "p95": _seconds(s.verify_p95),
            },
            "coverage": s.coverage,
            "hosts_reporting": s.hosts_reporting,
            "hosts_reporting_min": s.hosts_reporting_min,
        },
        "waiting": dict(o.waiting),
        "coverage_over_time": [
            {"ring": c.ring, "hosts": c.hosts, "points": [[h, n] for h, n in c.points]}
            for c in o.curves
        ],
        "notes": list(o.notes),
        "expected": None if misses is None else {"summary": summary, "misses": list(misses)},
        "stats": {"events": o.events, "decisions": o.decisions},
    }
