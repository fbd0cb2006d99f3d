"""The embedded backend: one SQLite file, WAL mode, migrations by
sqlite-utils (recorded in its `_sqlite_migrations` table).

Durability: WAL with ``synchronous=NORMAL``. A crash of the controller
process never loses a committed transaction; a power loss may lose the
last few, never corrupt the file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from controller.errors import UsageError
from controller.store.backend import LEADER_LEASE_SECONDS
from controller.store.dialect import Connection
from controller.store.migrations import migrations, refuse_newer


def _no_lock(key: int) -> None:
    return None


class SqliteBackend:
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    shared = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._raw = conn
        self._db = Database(conn)
        self._depth = 0  # savepoints open inside the current transaction
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        # The store's SQL takes PostgreSQL's transaction-scoped advisory
        # locks where replicas would race; SQLite lets one writer in at a
        # time anyway, so here they are no-ops.
        conn.create_function("pg_advisory_xact_lock", 1, _no_lock)
        try:
            refuse_newer(migration.name for migration in migrations.applied(self._db))
        except UsageError:
            conn.close()
            raise
        migrations.apply(self._db)

    @classmethod
    def open(cls, path: Path) -> SqliteBackend:
        """Open (creating if needed, mode 0600 whatever the umask) and migrate
        the database at ``path``. SQLite gives its WAL and shared-memory
        files the database file's mode."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            os.fchmod(fd, 0o600)
            os.close(fd)
        return cls(sqlite3.connect(path, isolation_level=None, check_same_thread=False))

    @classmethod
    def memory(cls) -> SqliteBackend:
        return cls(sqlite3.connect(":memory:", isolation_level=None))

    def connection(self) -> Connection:
        return self._raw

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction; nested, a savepoint (one refusal in a batch undoes
        that one alone). Savepoints are named by depth, not at random as
        sqlite-utils' ``atomic`` names them: the same few statements then
        stay prepared, where a new name per savepoint made two statements
        to parse for each order of a group commit, and pushed the hot
        path's prepared statements out of the connection's cache."""
        conn = self._raw
        if not conn.in_transaction:
            self._depth = 0
            conn.execute("BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # the error, or a failed COMMIT, left it open
                    conn.execute("ROLLBACK")
                raise
            return
        self._depth += 1
        name = f"nested_{self._depth}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # an error may have ended it all already
                conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            conn.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    def applied_migrations(self) -> list[str]:
        return [m.name for m in migrations.applied(self._db)]

    def lead(self, lease: float = LEADER_LEASE_SECONDS) -> bool:
        """One process has the file: it always runs the campaign tick."""
        return True

    def close(self) -> None:
        self._raw.close()
