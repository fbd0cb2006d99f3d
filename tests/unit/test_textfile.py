"""agent.textfile: the node_exporter textfile, rendered from a real journal."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.orders.journal import Journal
from agent.textfile import Textfile, render

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _values(text: str) -> dict[str, tuple[dict[str, str], float]]:
    """Parse as Prometheus (node_exporter) would: a malformed file fails here."""
    return {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "journal.db")


def _order(journal: Journal, order_id: str, sequence: int, *states: str) -> None:
    journal.accept(order_id, sequence, "c-abc", b"envelope", lambda key: b"")
    for state in states:
        journal.enter(order_id, state, "", lambda key: b"")


def test_a_fresh_agent_says_it_never_checked_in(tmp_path):
    values = _values(render(_journal(tmp_path)))
    assert values["fleetpatch_agent_last_checkin_timestamp_seconds"][1] == 0
    assert values["fleetpatch_agent_last_checkin_success"][1] == 0
    assert values["fleetpatch_agent_pending_reboot"][1] == 0
    assert "fleetpatch_agent_order_state" not in values
    assert "fleetpatch_agent_last_verify_success" not in values


def test_check_ins_successful_then_failed(tmp_path):
    journal = _journal(tmp_path)
    journal.record_checkin("hash", NOW + timedelta(minutes=5), now=NOW)
    values = _values(render(journal))
    assert values["fleetpatch_agent_last_checkin_success"][1] == 1
    assert values["fleetpatch_agent_last_checkin_timestamp_seconds"][1] == NOW.timestamp()
    later = NOW + timedelta(minutes=5)
    journal.record_checkin_failure("controller unreachable", now=later)
    values = _values(render(journal))
    assert values["fleetpatch_agent_last_checkin_success"][1] == 0
    assert values["fleetpatch_agent_last_checkin_timestamp_seconds"][1] == later.timestamp()
    assert values["fleetpatch_agent_last_successful_checkin_timestamp_seconds"][1] == (
        NOW.timestamp()
    )


def test_the_current_order_and_step_and_the_last_verification(tmp_path):
    journal = _journal(tmp_path)
    _order(journal, "o-1", 1, "PRECHECK", "SNAPSHOT", "APPLY", "VERIFY", "REVERT", "REVERTED")
    _order(journal, "o-2", 2, "PRECHECK", "SNAPSHOT", "APPLY")
    values = _values(render(journal))
    assert values["fleetpatch_agent_order_state"] == ({"campaign": "c-abc", "state": "APPLY"}, 1)
    assert values["fleetpatch_agent_order_sequence"][1] == 2
    assert values["fleetpatch_agent_order_in_progress"][1] == 1
    # The newest order has not verified yet: the last verification is o-1's, failed.
    assert values["fleetpatch_agent_last_verify_success"][1] == 0
    assert values["fleetpatch_agent_last_verify_duration_seconds"][1] >= 0
    for state in ("VERIFY", "PENDING_REBOOT"):
        journal.enter("o-2", state, "", lambda key: b"")
    values = _values(render(journal))
    assert values["fleetpatch_agent_order_in_progress"][1] == 0
    assert values["fleetpatch_agent_pending_reboot"][1] == 1
    assert values["fleetpatch_agent_pending_restart"][1] == 0
    assert values["fleetpatch_agent_last_verify_success"][1] == 1
    _order(journal, "o-3", 3, "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY",
           "PENDING_RESTART")  # fmt: skip
    values = _values(render(journal))
    assert values["fleetpatch_agent_order_in_progress"][1] == 0
    assert values["fleetpatch_agent_pending_reboot"][1] == 0
    assert values["fleetpatch_agent_pending_restart"][1] == 1
    assert values["fleetpatch_agent_last_verify_success"][1] == 1


def test_the_file_is_replaced_whole_and_readable_by_node_exporter(tmp_path):
    journal = _journal(tmp_path)
    path = tmp_path / "textfile" / "fleetpatch.prom"
    path.parent.mkdir()
    Textfile(path, journal).write()
    assert path.stat().st_mode & 0o777 == 0o644
    assert "fleetpatch_agent_last_checkin_success 0" in path.read_text()
    journal.record_checkin("hash", NOW + timedelta(minutes=5), now=NOW)
    Textfile(path, journal).write()
    assert "fleetpatch_agent_last_checkin_success 1" in path.read_text()
    assert os.listdir(path.parent) == ["fleetpatch.prom"]  # no temp file left behind


def test_an_unwritable_textfile_never_stops_the_agent(tmp_path, caplog):
    Textfile(tmp_path / "missing-dir" / "fleetpatch.prom", _journal(tmp_path)).write()
    assert "cannot write the metrics textfile" in caplog.text
