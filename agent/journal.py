"""The agent's local SQLite journal.

For now it remembers the check-in state (the inventory hash the controller
acknowledged, when the last check-in succeeded or why it failed). Work
orders, their steps and the queue of progress reports join it as new
migrations; released table and state names never change.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("fleetpatch.agent")


@migrations(name="0001_meta")
def _meta(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@dataclass(frozen=True)
class CheckInState:
    acked_inventory_hash: str
    last_success: datetime | None
    last_attempt: datetime | None
    last_error: str
    next_checkin: datetime | None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Journal:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._db = Database(conn)

    @classmethod
    def open(cls, path: Path) -> Journal:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # the journal is the host's memory
        conn.execute("PRAGMA busy_timeout=5000")
        journal = cls(conn)
        migrations.apply(journal._db)
        return journal

    def close(self) -> None:
        self._conn.close()

    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, **values: str) -> None:
        with self._db.atomic():
            self._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                values.items(),
            )

    def checkin_state(self) -> CheckInState:
        return CheckInState(
            acked_inventory_hash=self._get("acked_inventory_hash") or "",
            last_success=_dt(self._get("last_checkin_success")),
            last_attempt=_dt(self._get("last_checkin_attempt")),
            last_error=self._get("last_checkin_error") or "",
            next_checkin=_dt(self._get("next_checkin")),
        )

    def record_checkin(
        self, acked_hash: str, next_checkin: datetime, now: datetime | None = None
    ) -> None:
        at = (now or datetime.now(UTC)).isoformat()
        self._set(
            acked_inventory_hash=acked_hash,
            last_checkin_success=at,
            last_checkin_attempt=at,
            last_checkin_error="",
            next_checkin=next_checkin.isoformat(),
        )

    def record_checkin_failure(self, error: str, now: datetime | None = None) -> None:
        self._set(
            last_checkin_attempt=(now or datetime.now(UTC)).isoformat(),
            last_checkin_error=error,
        )
