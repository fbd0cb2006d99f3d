"""What the store needs of a database, whichever it is: a connection, a
transaction, the migrations applied. `sqlite.py` and `postgres.py` give it;
the SQL itself is shared (dialect.py)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from controller.store.dialect import Connection

# How long a leader not heard from keeps the lead, by default (the engine
# passes three ticks).
LEADER_LEASE_SECONDS = 30.0


class Backend(Protocol):
    # Raised by a statement that breaks a constraint (UNIQUE, PRIMARY KEY).
    integrity_errors: tuple[type[Exception], ...]
    # Whether other controller processes may write to the same database.
    shared: bool

    def connection(self) -> Connection:
        """The connection to run a statement on (autocommit outside a
        transaction). Raises StoreUnavailable when the database is lost."""
        ...

    def transaction(self) -> AbstractContextManager[Connection]:
        """Statements inside commit together or not at all (nested: a
        savepoint). Raises StoreUnavailable when the database is lost."""
        ...

    def applied_migrations(self) -> list[str]: ...

    def lead(self, lease: float = LEADER_LEASE_SECONDS) -> bool:
        """Whether this process is (still, or now) the one replica that runs
        the campaign tick; asked before each tick, more often than
        ``lease``: a leader not heard from for that long loses the lead."""
        ...

    def close(self) -> None: ...


class StoreBase:
    """What the store's parts (Store and its mixins) share: the backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def _conn(self) -> Connection:
        return self._backend.connection()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return self._backend.transaction()
