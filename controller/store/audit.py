"""The audit table: appended in the same transaction as the change it
records, so a change and its record exist together or not at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime

from controller.audit import GENESIS, AuditEntry, AuditRecord, chain


def append(conn: sqlite3.Connection, entry: AuditEntry) -> AuditRecord:
    """Chain ``entry`` after the last record; call inside a transaction."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    record = chain(seq, entry, prev)
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (
            record.seq, entry.at.isoformat(), entry.actor, entry.action, entry.target,
            entry.outcome, entry.detail, record.prev_hash, record.hash,
        ),
    )  # fmt: skip
    return record


def records(conn: sqlite3.Connection, since: datetime | None = None) -> Iterator[AuditRecord]:
    """Every record in stored order (rowid order: what a reorder would change)."""
    cur = conn.execute(
        "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash"
        " FROM audit ORDER BY rowid"
    )
    for seq, at, actor, action, target, outcome, detail, prev_hash, digest in cur:
        when = datetime.fromisoformat(at)
        if since is not None and when < since:
            continue
        yield AuditRecord(
            seq, AuditEntry(when, actor, action, target, outcome, detail), prev_hash, digest
        )
