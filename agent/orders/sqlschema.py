"""The journal's transactions and schema migrations, on the standard
library's sqlite3 alone.

The journal used sqlite-utils for two things only: `Database.atomic()` and
`Migrations`. Importing sqlite-utils costs the daemon about 15 MiB of RSS
(it brings click, dateutil, pluggy and tabulate with it), over a third of
the agent's 40 MiB budget (issue 18). Both are here instead, compatible with
every journal sqlite-utils migrated: the same `_sqlite_migrations` table
(id, migration_set, name, applied_at) and unique index, each migration
committed together with its record, applied in the order registered.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

TABLE = "_sqlite_migrations"

#: One schema step: runs its statements on the connection.
Step = Callable[[sqlite3.Connection], None]


@contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction (BEGIN ... COMMIT, rolled back on any exception); a
    savepoint when one is already open. `conn` must be in autocommit mode
    (isolation_level=None), as the journal opens it."""
    if conn.in_transaction:
        savepoint = f"fp_{os.urandom(8).hex()}"  # secrets.token_hex, without hmac
        conn.execute(f"SAVEPOINT {savepoint}")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            raise
        conn.execute(f"RELEASE SAVEPOINT {savepoint}")
        return
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Migrations:
    """Named schema steps of one set, each applied once, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._steps: list[tuple[str, Step]] = []

    def __call__(self, *, name: str) -> Callable[[Step], Step]:
        """Register a step under `name` (which must never change)."""

        def register(step: Step) -> Step:
            if any(known == name for known, _ in self._steps):
                raise ValueError(f"migration {name!r} is already registered in {self.name!r}")
            self._steps.append((name, step))
            return step

        return register

    def applied(self, conn: sqlite3.Connection) -> list[str]:
        """Names of the steps of this set already applied, in order."""
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
        ).fetchone()
        if exists is None:
            return []
        rows = conn.execute(
            f"SELECT name FROM {TABLE} WHERE migration_set = ? ORDER BY rowid",  # noqa: S608 - a constant
            (self.name,),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def apply(self, conn: sqlite3.Connection) -> list[str]:
        """Apply the pending steps, each in one transaction with its record.
        Returns the names applied. Raises sqlite3.Error."""
        with atomic(conn):
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, "
                "migration_set TEXT, name TEXT, applied_at TEXT)"
            )
            conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS idx_{TABLE}_migration_set_name "
                f"ON {TABLE} (migration_set, name)"
            )
        done = set(self.applied(conn))
        applied = []
        for name, step in self._steps:
            if name in done:
                continue
            with atomic(conn):
                step(conn)
                conn.execute(
                    f"INSERT INTO {TABLE} (migration_set, name, applied_at) VALUES (?, ?, ?)",  # noqa: S608 - a constant
                    (self.name, name, str(datetime.now(UTC))),
                )
            applied.append(name)
        return applied
