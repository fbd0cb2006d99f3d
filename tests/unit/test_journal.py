"""agent.journal: the host's memory of its check-ins, across restarts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.orders.journal import CheckInState, Journal

NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    journal = Journal.open(path)
    yield journal
    journal.close()


def test_fresh_journal_knows_nothing(journal):
    assert journal.checkin_state() == CheckInState("", None, None, "", None)


def test_record_checkin(journal):
    journal.record_checkin("sha256:one", NOW + timedelta(minutes=5), now=NOW)
    assert journal.checkin_state() == CheckInState(
        acked_inventory_hash="sha256:one",
        last_success=NOW,
        last_attempt=NOW,
        last_error="",
        next_checkin=NOW + timedelta(minutes=5),
    )


def test_failure_keeps_the_last_success(journal):
    journal.record_checkin("sha256:one", NOW + timedelta(minutes=5), now=NOW)
    later = NOW + timedelta(minutes=5)
    journal.record_checkin_failure("controller unreachable: connection refused", now=later)
    state = journal.checkin_state()
    assert state.last_success == NOW
    assert state.last_attempt == later
    assert state.last_error == "controller unreachable: connection refused"
    assert state.acked_inventory_hash == "sha256:one"
    assert state.next_checkin == NOW + timedelta(minutes=5)


def test_failure_before_any_success(journal):
    journal.record_checkin_failure("refused", now=NOW)
    assert journal.checkin_state() == CheckInState("", None, NOW, "refused", None)


def test_success_clears_the_error(journal):
    journal.record_checkin_failure("refused", now=NOW)
    later = NOW + timedelta(minutes=1)
    journal.record_checkin("sha256:two", later + timedelta(minutes=5), now=later)
    state = journal.checkin_state()
    assert state.last_error == ""
    assert state.acked_inventory_hash == "sha256:two"
    assert state.last_success == state.last_attempt == later


def test_latest_checkin_wins(journal):
    journal.record_checkin("sha256:one", NOW, now=NOW)
    journal.record_checkin("sha256:two", NOW + timedelta(hours=1), now=NOW + timedelta(minutes=1))
    state = journal.checkin_state()
    assert state.acked_inventory_hash == "sha256:two"
    assert state.next_checkin == NOW + timedelta(hours=1)


def test_time_defaults_to_now_and_is_aware(journal):
    before = datetime.now(UTC)
    journal.record_checkin_failure("x")
    after = datetime.now(UTC)
    state = journal.checkin_state()
    assert state.last_attempt is not None
    assert state.last_attempt.tzinfo is not None
    assert before <= state.last_attempt <= after


def test_time_zones_survive(journal):
    tz = timezone(timedelta(hours=-5))
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=tz)
    journal.record_checkin("h", at + timedelta(minutes=5), now=at)
    state = journal.checkin_state()
    assert state.last_success == at
    assert state.last_success is not None
    assert state.last_success.utcoffset() == timedelta(hours=-5)


def test_survives_reopen(path):
    journal = Journal.open(path)
    journal.record_checkin("sha256:one", NOW + timedelta(minutes=5), now=NOW)
    journal.record_checkin_failure("timeout", now=NOW + timedelta(minutes=5))
    expected = journal.checkin_state()
    journal.close()

    reopened = Journal.open(path)
    try:
        assert reopened.checkin_state() == expected
        assert expected.last_error == "timeout"
    finally:
        reopened.close()


def test_two_journals_on_one_file_see_each_other(path):
    writer, reader = Journal.open(path), Journal.open(path)
    try:
        writer.record_checkin("sha256:one", NOW, now=NOW)
        assert reader.checkin_state().acked_inventory_hash == "sha256:one"
    finally:
        writer.close()
        reader.close()


def test_a_journal_sqlite_utils_migrated_opens_and_carries_on(path):
    """Journals written by agents that migrated with sqlite-utils (before
    issue 18 took it off the daemon's path) keep their history: the steps
    they applied are not run again, the rest are, in the same table."""
    import sqlite3

    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations as SqliteUtilsMigrations

    from agent.orders import journal as journal_module

    old = SqliteUtilsMigrations("fleetpatch.agent")
    steps = journal_module.migrations._steps
    for name, step in steps[:2]:  # an agent from before 0003 and 0004
        old(name=name)(lambda db, step=step: step(db.conn))
    conn = sqlite3.connect(path, isolation_level=None)
    old.apply(Database(conn))
    conn.execute("INSERT INTO meta (key, value) VALUES ('sequence_floor', '41')")
    conn.close()

    Journal.open(path, must_exist=True).close()

    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id").fetchall()
    assert rows == [("fleetpatch.agent", name) for name, _ in steps]
    assert conn.execute("SELECT value FROM meta").fetchall() == [("41",)]
    columns = [r[1] for r in conn.execute("PRAGMA table_info(reports)")]
    assert "dropped" in columns, "0003 applied once, on top"
    conn.close()
    # And what we write, sqlite-utils reads as applied: nothing pending.
    assert [
        m.name
        for m in SqliteUtilsMigrations("fleetpatch.agent").applied(Database(sqlite3.connect(path)))
    ] == [name for name, _ in steps]


def test_a_failing_step_leaves_no_record_and_no_change(tmp_path):
    import sqlite3

    from agent.orders.sqlschema import Migrations

    migrations = Migrations("t")

    @migrations(name="0001")
    def _one(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE a (x)")

    @migrations(name="0002")
    def _two(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE b (x)")
        raise RuntimeError("boom")

    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    with pytest.raises(RuntimeError, match="boom"):
        migrations.apply(conn)
    assert migrations.applied(conn) == ["0001"]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables
    assert "b" not in tables
    with pytest.raises(ValueError, match="already registered"):
        migrations(name="0001")(_one)
