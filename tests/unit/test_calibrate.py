"""simulator.calibrate and the store's fleet history: a rehearsal's failure
model from what the fleet has done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.audit import AuditEntry
from controller.campaigns.tallies import CampaignState
from controller.fleet.tokens import new_token
from controller.model import (
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    CellHistory,
    Host,
    HostStatus,
    ProgressReport,
)
from controller.store import Store
from controller.store.campaigns import step_durations
from simulator.calibrate import MIN_ORDERS, calibrate

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _cell(ring, region, orders, failed=0, reverted=0, revert_failed=0, timed_out=0, **steps):
    succeeded = orders - failed - reverted - revert_failed - timed_out
    return CellHistory(ring, region, orders, orders, succeeded, failed, reverted, revert_failed,
                       timed_out, **steps)  # fmt: skip


def test_no_history_means_nothing_fails_and_says_so():
    calibrated = calibrate([])
    assert calibrated.model.base.apply == calibrated.model.base.regress == 0
    assert "no finished patch orders" in calibrated.lines[0]
    assert "--failure-model" in calibrated.lines[0]


def test_rates_come_from_the_fleet_and_from_cells_with_enough_orders():
    cells = [
        _cell(0, "eu", 40, failed=4, reverted=6, revert_failed=3, timed_out=9),
        _cell(1, "eu", 160, failed=0, reverted=0),
        _cell(2, "ap", MIN_ORDERS - 1, failed=MIN_ORDERS - 1),  # too few: fleet-wide odds
    ]
    calibrated = calibrate(cells)
    base = calibrated.model.base
    total, failed = 40 + 160 + MIN_ORDERS - 1, 4 + MIN_ORDERS - 1
    assert base.apply == pytest.approx(failed / total)
    assert base.regress == pytest.approx(9 / (total - failed))
    assert base.revert == pytest.approx(3 / 9)
    assert base.dark == pytest.approx(9 / (total - failed))
    ring0 = calibrated.model.odds_for("h-1", 0, "eu", "debian", frozenset())
    assert ring0.apply == pytest.approx(4 / 40)
    assert ring0.regress == pytest.approx(9 / 36)
    assert ring0.revert == pytest.approx(3 / 9)
    assert ring0.dark == pytest.approx(9 / 36)
    ring1 = calibrated.model.odds_for("h-2", 1, "eu", "debian", frozenset())
    assert (ring1.apply, ring1.regress, ring1.dark) == (0, 0, 0)
    assert calibrated.model.odds_for("h-3", 2, "ap", "debian", frozenset()) == base
    text = "\n".join(calibrated.lines)
    assert f"{total} finished patch order(s) on {total} host(s)" in text
    assert "ring 0 eu: 40 order(s) on 40 host(s): failed 10.0%, reverted 25.0%" in text
    assert f"fleet-wide odds used: ring 2 ap ({MIN_ORDERS - 1})" in text


def test_step_durations_are_the_middle_of_what_hosts_reported():
    apply = tuple(float(s) for s in range(10, 110))  # 10 s .. 109 s
    cells = [_cell(0, "eu", 100, apply_seconds=apply, verify_seconds=(30.0,) * 3)]
    calibrated = calibrate(cells)
    durations = calibrated.model.durations
    assert timedelta(seconds=19) <= durations.apply.low <= timedelta(seconds=21)
    assert timedelta(seconds=99) <= durations.apply.high <= timedelta(seconds=101)
    assert durations.verify == type(durations)().verify  # 3 samples: the default
    assert "verify 10s-1m (default: 3 recorded)" in calibrated.lines[-1]
    assert "apply" in calibrated.lines[-1]
    assert "(100 recorded)" in calibrated.lines[-1]


def test_step_durations_read_from_reports():
    orders = [
        [("RECEIVED", 0), ("PRECHECK", 1), ("SNAPSHOT", 2), ("APPLY", 3), ("REBOOT", 50),
         ("REBOOTED", 110), ("VERIFY", 111), ("SUCCEEDED", 131)],
        [("APPLY", 0), ("VERIFY", 30), ("REVERT", 90), ("REVERTED", 120)],
        [("PRECHECK", 0), ("FAILED", 5)],
    ]  # fmt: skip
    got = step_durations(orders)
    assert got == {"apply": (47.0, 30.0), "verify": (20.0, 90.0), "reboot": (60.0,)}


def test_the_store_gives_each_cells_history():
    store = Store.memory()
    token, _ = new_token("eu", 0, 10, timedelta(hours=1), {}, NOW)
    store.create_token(token)
    for n in range(3):
        store.enroll_host(
            Host(f"h-{n:016x}", "eu", 0, HostStatus.ACTIVE, NOW, certificate_serial=str(n),
                 certificate_expires_at=NOW + timedelta(days=90)),
            token.token_id, NOW,
        )  # fmt: skip
    record = CampaignRecord("c-1", "c", "", CampaignState.RUNNING, NOW, "admin:a", NOW)
    store.create_campaign(record, AuditEntry(NOW, "admin:a", "campaign.create", "c-1", "ok"))
    ends = [("SUCCEEDED", 40), ("REVERTED", 100), (None, 0)]  # the last still in flight
    for n, (final, took) in enumerate(ends):
        host_id, order_id = f"h-{n:016x}", f"o-{n}"
        order = Assignment(order_id, "c-1", host_id, AssignmentKind.PATCH, 0, "eu", 1, b"",
                           AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
        store.assign(order, AuditEntry(NOW, "controller", "order.assign", order_id, "assigned"))
        steps = [("APPLY", 0), ("VERIFY", 10)] + ([(final, 10 + took)] if final else [])
        reports = [
            ProgressReport(f"{order_id}-{step}", host_id, order_id, step, step == final,
                           final if step == final else "", "", NOW + timedelta(seconds=at), b"")
            for step, at in steps
        ]  # fmt: skip
        store.record_reports(reports, NOW)
        results = [(order_id, step, step if step == final else "", "",
                    NOW + timedelta(seconds=at)) for step, at in steps]  # fmt: skip
        store.apply_results(host_id, results)
    # A later campaign reverts the first host: two orders, still one host.
    later = CampaignRecord("c-2", "c", "", CampaignState.RUNNING, NOW, "admin:a", NOW)
    store.create_campaign(later, AuditEntry(NOW, "admin:a", "campaign.create", "c-2", "ok"))
    first = f"h-{0:016x}"
    again = Assignment("o-again", "c-2", first, AssignmentKind.PATCH, 0, "eu", 2, b"",
                       AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
    store.assign(again, AuditEntry(NOW, "controller", "order.assign", "o-again", "assigned"))
    store.apply_results(first, [("o-again", "REVERTED", "REVERTED", "", NOW)])
    (cell,) = store.fleet_history()
    assert (cell.ring, cell.region, cell.hosts, cell.orders) == (0, "eu", 2, 3)
    assert (cell.succeeded, cell.reverted, cell.failed, cell.timed_out) == (1, 2, 0, 0)
    assert sorted(cell.apply_seconds) == [10.0, 10.0]
    assert sorted(cell.verify_seconds) == [40.0, 100.0]
    store.close()
