"""agent.orders.journal: a value in the journal that does not decode (edited
by hand, written by another program) is one StateDirError naming the
journal, where the value is and what it should be, never a traceback;
only the schedule the agent recomputes itself is taken as unset."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.backends.base import Change
from agent.errors import StateDirError
from agent.host.updates import Available
from agent.orders import journal as journal_module
from agent.orders.journal import Journal
from agent.orders.states import TERMINAL
from agent.service import Agent
from agent.statedir import AgentConfig

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RESTORE = r"\(restore it from a backup, or enroll this host again into an empty state dir\)"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    journal = Journal.open(path)
    yield journal
    journal.close()


def _sql(path: Path, statement: str, *args: object) -> None:
    """Change the journal behind the agent's back, as `sqlite3 journal.db` does."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, args)
    conn.close()


def _meta(path: Path, key: str, value: object) -> None:
    _sql(path, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value)


def _damaged(path: Path, where: str, shown: str, expected: str) -> str:
    """The message, as a pattern."""
    import re

    return (
        f"^the journal {re.escape(str(path))} is damaged: {re.escape(where)} holds "
        f"{re.escape(shown)}, not {re.escape(expected)} {RESTORE}$"
    )


@pytest.mark.parametrize(
    ("key", "value", "read", "shown", "expected"),
    [
        ("last_checkin_success", "garbage", Journal.checkin_state, "'garbage'", "a time"),
        ("last_checkin_attempt", "2025-13-01", Journal.checkin_state, "'2025-13-01'", "a time"),
        # A time without its offset would fail later, compared with an aware one.
        ("last_checkin_success", "2025-03-01T12:00:00", Journal.checkin_state,
         "'2025-03-01T12:00:00'", "a time with its UTC offset"),
        # A time that parses but has no UTC form: shown, it would overflow.
        ("last_checkin_success", "9999-12-31T23:59:59-14:00", Journal.checkin_state,
         "'9999-12-31T23:59:59-14:00'", "a time"),
        ("last_checkin_attempt", "0001-01-01T00:00:00+14:00", Journal.checkin_state,
         "'0001-01-01T00:00:00+14:00'", "a time"),
        ("updates", "{not json", Journal.scan, "'{not json'", "a JSON list of updates"),
        ("updates", '{"name": "bash"}', Journal.scan, "'{\"name\": \"bash\"}'",
         "a JSON list of updates"),
        ("updates", '[{"name": "bash"}]', Journal.scan, "'[{\"name\": \"bash\"}]'",
         "a JSON list of updates"),
        ("updates", "[" * 100_000, Journal.scan, repr("[" * 60) + "...",
         "a JSON list of updates"),
        ("updates_scanned_at", "yesterday", Journal.scan, "'yesterday'", "a time"),
        ("highest_sequence", "seven", Journal.highest_sequence, "'seven'",
         "an order sequence (an integer >= 0)"),
        ("highest_sequence", "-1", Journal.highest_sequence, "'-1'",
         "an order sequence (an integer >= 0)"),
        ("highest_sequence", "99999999999999999999", Journal.highest_sequence,
         "'99999999999999999999'", "an order sequence (an integer >= 0)"),
        ("acked_inventory_hash", b"\x00\x01", Journal.checkin_state, "a BLOB of 2 bytes",
         "text"),
    ],
)  # fmt: skip
def test_a_meta_value_that_does_not_decode_is_a_state_dir_error_naming_it(
    journal, path, key, value, read, shown, expected
):
    journal.record_checkin("sha256:one", NOW + timedelta(minutes=5), now=NOW)
    journal.record_scan([], NOW, NOW + timedelta(hours=6))
    _meta(path, key, value)
    with pytest.raises(StateDirError, match=_damaged(path, f"meta.{key}", shown, expected)):
        read(journal)


@pytest.mark.parametrize("key", ["next_checkin", "next_scan"])
def test_a_damaged_schedule_is_taken_as_unset_with_a_warning(journal, path, key, caplog):
    journal.record_checkin("sha256:one", NOW + timedelta(minutes=5), now=NOW)
    journal.record_scan([], NOW, NOW + timedelta(hours=6))
    _meta(path, key, "not-a-date")
    with caplog.at_level(logging.WARNING, logger="agent.orders.journal"):
        state = journal.checkin_state()
        scheduled = {"next_checkin": state.next_checkin, "next_scan": journal.next_scan()}
    assert scheduled[key] is None
    assert state.last_success == NOW  # the rest still reads
    assert f"meta.{key} holds 'not-a-date', not a time; taken as unset" in caplog.text
    assert str(path) in caplog.text


def test_a_damaged_next_scan_is_scheduled_again(journal, path):
    """The daemon's scan schedule (Agent.scan_if_due) recomputes it."""
    _meta(path, "next_scan", "zzz")
    agent = SimpleNamespace(journal=journal, config=AgentConfig("localhost:1", ""))
    Agent.scan_if_due(agent)  # type: ignore[arg-type]
    due = journal.next_scan()
    assert due is not None
    assert datetime.now(UTC) <= due <= datetime.now(UTC) + timedelta(minutes=10)


def _report(key: str) -> bytes:
    return key.encode()


@pytest.fixture
def ordered(journal: Journal) -> Journal:
    journal.accept("o-1", 7, "c-1", b"envelope", _report)
    journal.enter(
        "o-1", "APPLY", "applying", _report,
        plan=[{"name": "bash", "arch": "amd64", "old": "5.1", "new": "5.2", "origin": ""}],
        snapshot={"saved": [], "new": []},
        changes=[{"name": "bash", "arch": "amd64", "old": "5.1", "new": "5.2"}],
        checks=[{"name": "disk", "ok": True}],
    )  # fmt: skip
    journal.refuse("", "unreadable", "not a work order", _report)
    row = journal.restart_begun("o-1", "RESTART", "nginx.service")
    journal.restart_done(row, "restarted")
    return journal


def _read_everything(journal: Journal) -> None:
    journal.orders()
    journal.order("o-1")
    journal.unfinished(frozenset(TERMINAL))
    journal.steps("o-1")
    journal.refusals()
    journal.restarts("o-1", "RESTART")
    journal.pending_reports()


def test_what_the_agent_writes_reads_back(ordered):
    _read_everything(ordered)
    (record,) = ordered.orders()
    assert record.sequence == 7
    assert record.state == "APPLY"
    assert record.changes[0]["new"] == "5.2"


@pytest.mark.parametrize(
    ("table", "column", "value", "shown", "expected"),
    [
        ("orders", "received_at", "garbage", "'garbage'", "a time"),
        ("orders", "updated_at", 12, "'12'", "a time"),
        ("orders", "state", "DANCING", "'DANCING'", "a work-order state"),
        ("orders", "sequence", "seven", "'seven'", "an order sequence (an integer >= 0)"),
        ("orders", "sequence", -3, "-3", "an order sequence (an integer >= 0)"),
        ("orders", "envelope", "text", "'text'", "a BLOB"),
        ("orders", "plan", "{oops", "'{oops'", "a JSON list of package changes"),
        ("orders", "plan", "[1]", "'[1]'", "a JSON list of package changes"),
        ("orders", "plan", '[{"name": "bash", "colour": "red"}]',
         "'[{\"name\": \"bash\", \"colour\": \"red\"}]'", "a JSON list of package changes"),
        ("orders", "snapshot", "[]", "'[]'", "a JSON object"),
        ("orders", "changes", "{oops", "'{oops'", "a JSON list of package changes"),
        ("orders", "changes", '[{"name": "bash"}]', "'[{\"name\": \"bash\"}]'",
         "a JSON list of package changes"),
        ("orders", "checks", "{}", "'{}'", "a JSON list"),
        ("orders", "detail", b"\xff", "a BLOB of 1 bytes", "text"),
        ("steps", "entered_at", "garbage", "'garbage'", "a time"),
        ("steps", "state", "DANCING", "'DANCING'", "a work-order state"),
    ],
)  # fmt: skip
def test_an_order_value_that_does_not_decode_is_a_state_dir_error_naming_it(
    ordered, path, table, column, value, shown, expected
):
    _sql(path, f"UPDATE {table} SET {column} = ?", value)  # noqa: S608
    table_where = f"order 'o-1': {table}.{column}"
    with pytest.raises(StateDirError, match=_damaged(path, table_where, shown, expected)):
        _read_everything(ordered)


@pytest.mark.parametrize(
    ("table", "column", "value", "shown", "expected"),
    [
        ("refusals", "at", "garbage", "'garbage'", "a time"),
        ("restarts", "begun_at", "garbage", "'garbage'", "a time"),
        ("restarts", "result", b"\x00", "a BLOB of 1 bytes", "text"),
        ("reports", "payload", "text", "'text'", "a BLOB"),
    ],
)
def test_other_rows_that_do_not_decode_are_state_dir_errors_naming_them(
    ordered, path, table, column, value, shown, expected
):
    _sql(path, f"UPDATE {table} SET {column} = ?", value)  # noqa: S608
    with pytest.raises(StateDirError, match=f"is damaged: .*{table}.{column} holds "):
        _read_everything(ordered)
    with pytest.raises(StateDirError, match=f"{shown}, not {expected} {RESTORE}$"):
        _read_everything(ordered)


def test_the_shapes_checked_are_those_of_the_agents_own_classes():
    change = {f.name for f in dataclasses.fields(Change)}
    assert change == journal_module.CHANGE_KEYS | journal_module.CHANGE_OPTIONAL
    required = {
        f.name
        for f in dataclasses.fields(Available)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == journal_module.UPDATE_KEYS
