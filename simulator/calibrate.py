"""A rehearsal's failure model, calibrated from what the fleet has done.

`campaign rehearse` on a real controller asks it for its history (every
finished patch order, per ring and region: how it ended, how long its steps
took) and turns that into the odds and step durations of a `FailureModel`:

    apply    the share of orders that failed before changing anything
    regress  of the orders that applied, the share that reverted (or failed to)
    revert   of those, the share whose revert failed
    dark     of the orders that applied, the share that timed out (the host
             stopped reporting)
    durations  apply, verify and reboot: the 10th to the 90th percentile of
             what the hosts reported

A ring x region with at least MIN_ORDERS finished orders gets its own odds;
the others use the fleet-wide ones. What was used, and from how many
orders and hosts, is said in `Calibration.lines`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import timedelta

from controller.model import CellHistory

from .failures import FailureModel, Odds, Rule, Selector, Span, StepDurations

MIN_ORDERS = 20  # per ring x region, for odds of its own
MIN_SAMPLES = 5  # per step, for durations of its own


@dataclass(frozen=True)
class Calibration:
    model: FailureModel
    lines: tuple[str, ...]  # which figures were used, from how many orders and hosts


def calibrate(cells: Sequence[CellHistory]) -> Calibration:
    """The failure model the fleet's history gives (nothing fails without one)."""
    total = _sum(cells)
    if total.orders == 0:
        return Calibration(FailureModel(), (
            "no finished patch orders in the fleet's history: the rehearsal assumes nothing "
            "fails (give --failure-model FILE to say otherwise)",
        ))  # fmt: skip
    base = _odds(total)
    lines = [
        f"failure model calibrated from the fleet's history: {total.orders:,} finished patch "
        f"order(s) on {total.hosts:,} host(s)",
        f"  fleet-wide: {_describe(total)}",
    ]
    rules, thin = [], []
    for cell in sorted(cells, key=lambda c: (c.ring, c.region)):
        name = f"ring {cell.ring} {cell.region}"
        if cell.orders < MIN_ORDERS:
            thin.append(f"{name} ({cell.orders})")
            continue
        odds = _odds(cell)
        overrides = tuple(
            (f.name, getattr(odds, f.name)) for f in fields(Odds)
            if getattr(odds, f.name) != getattr(base, f.name)
        )  # fmt: skip
        if overrides:
            rules.append(Rule(Selector(rings=frozenset({cell.ring}),
                                       regions=frozenset({cell.region})), overrides))  # fmt: skip
        lines.append(f"  {name}: {cell.orders} order(s) on {cell.hosts} host(s): "
                     f"{_describe(cell)}")  # fmt: skip
    if thin:
        lines.append(f"  fewer than {MIN_ORDERS} orders, fleet-wide odds used: {', '.join(thin)}")
    durations, said = _durations(total)
    lines.append(f"  step durations: {said}")
    return Calibration(FailureModel(base=base, rules=tuple(rules), durations=durations),
                       tuple(lines))  # fmt: skip


def _sum(cells: Sequence[CellHistory]) -> CellHistory:
    def add(name: str) -> int:
        return sum(getattr(c, name) for c in cells)

    def join(name: str) -> tuple[float, ...]:
        return tuple(x for c in cells for x in getattr(c, name))

    return CellHistory(
        -1, "", add("hosts"), add("orders"), add("succeeded"), add("failed"), add("reverted"),
        add("revert_failed"), add("timed_out"), join("apply_seconds"), join("verify_seconds"),
        join("reboot_seconds"),
    )  # fmt: skip


def _odds(cell: CellHistory) -> Odds:
    applied = cell.orders - cell.failed
    backed_out = cell.reverted + cell.revert_failed
    return Odds(
        apply=_share(cell.failed, cell.orders),
        regress=_share(backed_out, applied),
        revert=_share(cell.revert_failed, backed_out),
        dark=_share(cell.timed_out, applied),
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _describe(cell: CellHistory) -> str:
    odds = _odds(cell)
    return (
        f"failed {odds.apply:.1%}, reverted {odds.regress:.1%} "
        f"(revert failed {odds.revert:.1%} of those), timed out {odds.dark:.1%}"
    )


def _durations(total: CellHistory) -> tuple[StepDurations, str]:
    durations, said = StepDurations(), []
    for step in ("apply", "verify", "reboot"):
        samples = sorted(getattr(total, f"{step}_seconds"))
        if len(samples) < MIN_SAMPLES:
            said.append(f"{step} {getattr(durations, step)} (default: {len(samples)} recorded)")
            continue
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        span = Span(timedelta(seconds=deciles[0]), timedelta(seconds=deciles[-1]))
        durations = replace(durations, **{step: span})
        said.append(f"{step} {span} ({len(samples)} recorded)")
    return durations, ", ".join(said)
