"""The audit table: appended in the same transaction as the change it
records, so a change and its record exist together or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from controller.audit import GENESIS, AuditEntry, AuditRecord, chain
from controller.store.dialect import Connection

# pg_advisory_xact_lock key of the audit trail's head: "fpau".
APPEND_LOCK = 0x66706175


def append(conn: Connection, entry: AuditEntry) -> AuditRecord:
    """Chain ``entry`` after the last record; call inside a transaction.
    Replicas sharing a database append one at a time: the lock, held to the
    end of the transaction, makes the head read here the one it follows."""
    conn.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
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


def records(conn: Connection, since: datetime | None = None) -> Iterator[AuditRecord]:
    """Every record in sequence order (on SQLite, seq is the rowid: the
    stored order, which a reorder changes)."""
    cur = conn.execute(
        "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash"
        " FROM audit ORDER BY seq"
    )
    for seq, at, actor, action, target, outcome, detail, prev_hash, digest in cur:
        when = datetime.fromisoformat(at)
        if since is not None and when < since:
            continue
        yield AuditRecord(
            seq, AuditEntry(when, actor, action, target, outcome, detail), prev_hash, digest
        )


_COLUMNS = "seq, at, actor, action, target, outcome, detail, prev_hash, hash"


def page(conn: Connection, after: int, limit: int) -> list[AuditRecord]:
    """Up to ``limit`` records after sequence ``after``, in stored order
    (keyset pagination: seq is the rowid, so this is an index range)."""
    cur = conn.execute(
        f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - fixed columns
        (after, limit),
    )
    return [
        AuditRecord(
            seq, AuditEntry(datetime.fromisoformat(at), actor, action, target, outcome, detail),
            prev_hash, digest,
        )
        for seq, at, actor, action, target, outcome, detail, prev_hash, digest in cur
    ]  # fmt: skip


def head(conn: Connection) -> tuple[int, str]:
    """The last record's sequence and hash; (0, GENESIS) for an empty trail."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def hash_at(conn: Connection, seq: int) -> str | None:
    row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else str(row[0])
