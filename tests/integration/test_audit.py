"""The audit trail against a real controller process: refusals counted
rather than flooding it, signed checkpoints that catch a cut-off tail or a
rewritten chain, an export that streams.

A real controller (real mutual TLS on loopback, a real SQLite file), the
real admin CLI, and hosts enrolled with the real agent CLI.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.link.client import ControllerClient
from agent.statedir import StateDir
from tests.support.controller import Controller


def _enroll(ctl: Controller, state: Path) -> str:
    result = ctl.enroll(state, ctl.token())
    assert result.returncode == 0, result.stderr
    return StateDir(state).host_id()


def _client(ctl: Controller, state: Path) -> ControllerClient:
    sd = StateDir(state)
    return ControllerClient(ctl.address, sd.read(sd.ca), sd.read(sd.key), sd.read(sd.cert))


def _refuse(client: ControllerClient, prefix: str, count: int) -> None:
    """``count`` refusals, each with its own idempotency key, 100 per call."""
    for start in range(0, count, 100):
        reports = [
            types_pb2.ProgressReport(
                idempotency_key=f"{prefix}-{i}", order_id=f"o-{i}", step="REFUSED", final=True,
                outcome="REFUSED", detail=f"signed by unknown key ({i})", sequence=i + 1,
            )
            for i in range(start, min(start + 100, count))
        ]  # fmt: skip
        client.report_progress(agent_pb2.ReportProgressRequest(reports=reports))


def _refusal_records(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT actor, detail FROM audit WHERE action = 'order.refused' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, list[str]] = {}
    for actor, detail in rows:
        out.setdefault(actor, []).append(detail)
    return out


def _represented(details: list[str]) -> int:
    total = 0
    for detail in details:
        counted = re.match(r"(\d+) more refusal\(s\) since ", detail)
        total += int(counted.group(1)) if counted else 1
    return total


def test_a_refusing_host_writes_a_count_not_a_record_each_and_shutdown_keeps_it(
    controller, tmp_path
):
    flooding = _enroll(controller, tmp_path / "a1")
    quiet = _enroll(controller, tmp_path / "a2")
    first, second = _client(controller, tmp_path / "a1"), _client(controller, tmp_path / "a2")
    _refuse(first, "k", 1000)
    _refuse(second, "q", 3)
    first.close()
    second.close()
    # Only the first refusal of each host is in the trail while it runs ...
    running = _refusal_records(controller.data_dir / "controller.db")
    assert {a: len(d) for a, d in running.items()} == {f"host:{flooding}": 1, f"host:{quiet}": 1}
    # ... and the counts are written when it stops (SIGTERM, as systemd does).
    assert controller.stop() == 0
    stopped = _refusal_records(controller.data_dir / "controller.db")
    assert len(stopped[f"host:{flooding}"]) == 2
    assert _represented(stopped[f"host:{flooding}"]) == 1000
    assert stopped[f"host:{flooding}"][1].startswith("999 more refusal(s) since ")
    assert stopped[f"host:{flooding}"][1].endswith("last: signed by unknown key (999)")
    assert _represented(stopped[f"host:{quiet}"]) == 3
    controller.start()
    assert controller.admin("audit", "verify").stdout.startswith("audit trail intact")
