"""The audit trail's hash chain finds an edited, deleted or reordered record."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from controller.audit import AuditEntry, verify
from controller.store import Store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "controller.db"
    store = Store.open(path)
    for i in range(6):
        store.append_audit(
            AuditEntry(T0 + timedelta(seconds=i), "admin:admin", f"action.{i}", f"t-{i}", "ok")
        )
    store.close()
    return path


def _verdict(path):
    store = Store.open(path)
    try:
        return verify(store.audit_records())
    finally:
        store.close()


def _sql(path, *statements, args=()):
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement, args)
    conn.close()


def test_an_untouched_trail_verifies(db):
    verdict = _verdict(db)
    assert verdict.ok
    assert verdict.records == 6


def test_an_edited_record_is_found(db):
    _sql(db, "UPDATE audit SET outcome = 'refused' WHERE seq = 3")
    verdict = _verdict(db)
    assert not verdict.ok
    assert verdict.first_broken == 3
    assert "edited" in verdict.problem


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db):
    from controller.audit import record_hash

    store = Store.open(db)
    record = store.audit_records()[2]
    store.close()
    forged = AuditEntry(record.entry.at, "admin:mallory", record.entry.action,
                        record.entry.target, record.entry.outcome)  # fmt: skip
    new_hash = record_hash(3, forged, record.prev_hash)
    _sql(db, "UPDATE audit SET actor = 'admin:mallory', hash = ? WHERE seq = 3", args=(new_hash,))
    verdict = _verdict(db)
    assert not verdict.ok
    assert verdict.first_broken == 4
    assert "does not link" in verdict.problem


def test_a_deleted_record_is_found(db):
    _sql(db, "DELETE FROM audit WHERE seq = 4")
    verdict = _verdict(db)
    assert not verdict.ok
    assert verdict.first_broken == 5
    assert "missing" in verdict.problem


def test_reordered_records_are_found(db):
    # Swap the contents of records 2 and 5, keeping their positions.
    _sql(
        db,
        "UPDATE audit SET seq = -2 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 5",
        "UPDATE audit SET seq = 5 WHERE seq = -2",
    )
    verdict = _verdict(db)
    assert not verdict.ok
    assert verdict.first_broken == 2


def test_appends_after_a_restart_continue_the_chain(db):
    store = Store.open(db)
    store.append_audit(AuditEntry(T0 + timedelta(minutes=1), "controller", "x", "y", "ok"))
    records = store.audit_records()
    store.close()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert records[-1].prev_hash == records[-2].hash
    assert verify(records).ok


def test_the_chain_walked_a_page_at_a_time_finds_the_same_break(db):
    from controller.audit import ChainWalk

    _sql(db, "UPDATE audit SET outcome = 'refused' WHERE seq = 5")
    store = Store.open(db)
    try:
        walk, after = ChainWalk(), 0
        while page := store.audit_page(after, 2):
            walk.feed(page)
            after = page[-1].seq
        assert walk.verdict() == verify(store.audit_records())
        assert walk.verdict().first_broken == 5
        assert not walk.ok
        assert store.audit_head()[0] == 6
        assert store.audit_hash_at(7) is None
    finally:
        store.close()
