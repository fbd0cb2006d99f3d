"""The PostgreSQL backend, for several controller replicas on one database
(`[store] url = "postgresql://..."`): psycopg 3 over a psycopg_pool pool.

The store thread holds one connection from the pool and runs the store's
SQL on it, rewritten once per statement by dialect.to_postgres. A
connection that fails (the server restarted, failed over, or the network
dropped) is closed and given back, so the pool replaces it; the call that
met the failure raises StoreUnavailable (agents are answered UNAVAILABLE
with a retry delay), and the next call takes a fresh connection.

Migrations are the same named functions SQLite runs (migrations.py), given
a connection that rewrites their SQL; each runs in a transaction with its
record in `fleetpatch_migrations`, under an advisory lock so that replicas
starting together migrate once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

from controller import pgurl
from controller.errors import StoreUnavailable, UsageError
from controller.quietlog import OncePer, Quiet
from controller.store.backend import LEADER_LEASE_SECONDS
from controller.store.dialect import Connection, Cursor, to_postgres
from controller.store.migrations import MIGRATION_SET, refuse_newer, registered

log = logging.getLogger(__name__)
_quiet = Quiet(log)

# pg_advisory_xact_lock key while migrating: "fpmg".
MIGRATION_LOCK = 0x66706D67
# pg_try_advisory_lock key of the replica that runs the campaign tick: "fpld".
# A session lock: held as long as the leader's connection lives, released by
# PostgreSQL when it ends (the leader stopped, crashed or was cut off).
LEADER_LOCK = 0x66706C64
# How long a call waits for a connection when the database is unreachable
# before the caller is told it is unavailable (the pool keeps trying)...
CONNECTION_WAIT_SECONDS = 3.0
# ... and once it is known to be down: the store thread runs one call at a
# time, and a queue of 3 s waits would hold every answer up for minutes.
DOWN_WAIT_SECONDS = 0.1
RETRY_AFTER_SECONDS = 5.0
# The pool's attempt to reconnect gives up after this long, and the next
# call starts another, its back-off (1, 2, 4 s) from the start: a database
# back after an outage of any length is found within seconds (psycopg_pool
# doubles the delay for as long as an attempt lasts).
RECONNECT_SECONDS = 10.0
# psycopg_pool's warnings while the database is down: one line per attempt
# and connection. The same line is passed on once per this many seconds.
POOL_LOG_SECONDS = 60.0

# What says the server is no longer one to use: the connection is given up
# (the pool makes another) and the call is answered unavailable. Besides
# lost connections, a standby, or a primary just demoted in a failover,
# refuses writes (SQLSTATE 25006): a connection to the new primary may be
# one reconnection away.
_GONE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


# libpq's words for a URL it read but cannot use (a port of 99999, an
# sslmode or target_session_attrs it does not know, a service file entry
# that is not there): said before any server is asked.
_BAD = "connection is bad: "
_MISREAD = re.compile(rf"^(?:{_BAD})?(?:invalid |definition of service )")


def _try_first(url: str, libpq: dict[str, Any], where: str) -> None:
    """One plain connection, before the pool: the pool would only say it
    timed out, where a person needs "connection refused" or "password
    authentication failed"; and the database's encoding checked."""
    try:
        first = psycopg.connect(url, **libpq)
    except psycopg.ProgrammingError as exc:  # an unknown parameter, a bad value
        raise UsageError(f"store.url: {_reason(exc, url)}") from None
    except psycopg.OperationalError as exc:
        reason = _reason(exc, url)
        if _MISREAD.match(reason):  # never went to a server: restarting cannot help
            raise UsageError(f"store.url: {reason.removeprefix(_BAD)}") from None
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL ({where}): {reason}", RETRY_AFTER_SECONDS
        ) from None
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL ({where}): {_reason(exc, url)}", RETRY_AFTER_SECONDS
        ) from None
    try:
        _require_utf8(first, where)
    finally:
        first.close()


def _require_utf8(conn: psycopg.Connection[Any], where: str) -> None:
    """A database that cannot hold any text a host or an admin sends is
    refused at start (UsageError): one in SQL_ASCII hands text back as
    bytes, one in LATIN1 refuses a hostname in another script, and a batch
    of check-ins holding one would fail for every host in it."""
    server = conn.info.parameter_status("server_encoding") or "unknown"
    client = conn.info.parameter_status("client_encoding") or "unknown"
    if server != "UTF8":
        raise UsageError(
            f"PostgreSQL ({where}) stores text as {server}; the store needs UTF8: create the "
            "database with ENCODING 'UTF8' (README: several controller replicas)"
        )
    if client != "UTF8":
        raise UsageError(
            f"store.url sets client_encoding {client}; the store needs UTF8 (leave it out)"
        )


def describe(url: str) -> str:
    """``url`` for a person, without its password: "database DB on
    HOST:PORT[, HOST:PORT...]"."""
    try:
        params = None if pgurl.problem(url) else conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        params = None
    if params is None:
        return "an unreadable PostgreSQL URL"
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    places = []
    for i, host in enumerate(hosts):  # libpq: one port for all hosts, or one each
        port = (ports[i] if len(ports) == len(hosts) else ports[0]) or "5432"
        if not host or host.startswith("/"):
            places.append(f"the local socket{' in ' + host if host else ''} (port {port})")
        else:
            places.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    name = params.get("dbname") or params.get("user") or "?"
    return f"database {name} on {', '.join(places)}"


def _reason(exc: BaseException, url: str = "") -> str:
    """The first line of libpq's words, without the password of ``url``."""
    lines = str(exc).strip().splitlines()
    return pgurl.scrub(lines[0], url) if lines else type(exc).__name__


def _quieten_the_pool() -> None:
    pool = logging.getLogger("psycopg.pool")
    if not any(isinstance(f, OncePer) for f in pool.filters):
        pool.addFilter(OncePer(POOL_LOG_SECONDS))


class _Mute(logging.Filter):
    """Passes nothing (psycopg.pool's lines while `connect` migrates)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


class _BoolAsInteger(Dumper):
    """The store keeps flags in INTEGER columns (as SQLite does)."""

    format = Format.TEXT
    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configurer(bound: float) -> Callable[[psycopg.Connection[Any]], None]:
    """Each new connection's set-up: flags kept as integers, and its waits
    bounded by ``bound`` seconds (the store timeout), unless the URL, the
    role or the database bounds them already:

    - idle_in_transaction_session_timeout: a replica frozen or cut off in
      the middle of a transaction holds its locks (the audit chain's
      among them) until its session ends; every other replica's calls
      would wait on them for as long, and the fleet with them. The server
      now ends such a session, and the transaction, which was never
      acknowledged to anyone, is rolled back.
    - lock_timeout: a call waiting on a lock (a table locked by hand,
      another replica's long migration) gives up, and is answered
      UNAVAILABLE, instead of keeping the store thread for as long."""
    value = f"{int(bound * 1000)}"

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.adapters.register_dumper(bool, _BoolAsInteger)
        row = conn.execute(
            "SELECT current_setting('idle_in_transaction_session_timeout'),"
            " current_setting('lock_timeout')"
        ).fetchone()
        for name, now in zip(_BOUNDED, row or ("", ""), strict=True):
            if now in ("0", "0ms"):
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    return configure


_BOUNDED = ("idle_in_transaction_session_timeout", "lock_timeout")
DEFAULT_BOUND_SECONDS = 20.0


def _transient(exc: psycopg.OperationalError) -> bool:
    """A deadlock or serialization failure between replicas (SQLSTATE class
    40), a lock waited on past lock_timeout (55P03) or a statement
    cancelled (57014: statement_timeout): the transaction is rolled back,
    the connection is fine."""
    state = exc.sqlstate or ""
    return state.startswith("40") or state in ("55P03", "57014")


class _Connection:
    """A psycopg connection speaking the store's dialect (dialect.Connection)."""

    __slots__ = ("_backend", "raw")

    def __init__(self, raw: psycopg.Connection[Any], backend: PostgresBackend) -> None:
        self.raw = raw
        self._backend = backend

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        try:
            return self.raw.execute(to_postgres(sql), parameters)
        except _GONE as exc:
            raise self._backend.lost(self.raw, exc) from None
        except _THE_STORES:
            raise
        except psycopg.Error as exc:
            raise self._backend.refused(exc) from None

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self.raw.cursor()
        try:
            cursor.executemany(to_postgres(sql), parameters)
        except _GONE as exc:
            raise self._backend.lost(self.raw, exc) from None
        except _THE_STORES:
            raise
        except psycopg.Error as exc:
            raise self._backend.refused(exc) from None
        return cursor


# Errors the store's own code handles (a conflict on a unique key).
_THE_STORES = (psycopg.IntegrityError,)


class PostgresBackend:
    integrity_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError,)
    shared = True

    def __init__(self, pool: ConnectionPool[Any], where: str) -> None:
        self._pool = pool
        self._where = where
        self._held: _Connection | None = None
        self._leader: psycopg.Connection[Any] | None = None
        self._starting = False  # connect() migrating: its failure is said by the caller
        # Since when the database is known to be down (monotonic); None: up.
        self._down_since: float | None = None

    @classmethod
    def connect(
        cls, url: str, max_connections: int = 4, timeout: float | None = None
    ) -> PostgresBackend:
        """Connect to the database at ``url`` and migrate it. Raises
        StoreUnavailable, one line naming the database (never its password)
        and why, when it cannot be reached or refuses us; UsageError for a
        URL libpq cannot read or a user that may not create the tables.
        ``timeout``: how long data sent may go unacknowledged before libpq
        gives a connection up (tcp_user_timeout)."""
        wrong = pgurl.problem(url)
        if wrong is not None:
            raise UsageError(f"store.url {wrong}")
        where = describe(url)
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:  # an unknown parameter, a bad value
            raise UsageError(f"store.url: {_reason(exc, url)}") from None
        # What libpq does not do by default and a connection that can hang
        # needs, unless the URL says otherwise: connecting is bounded, an
        # idle connection to a host gone silent is found by keepalives, and
        # a busy one by tcp_user_timeout (a partition: the kernel would
        # retransmit for some 15 minutes). Not a frozen server, which the
        # kernel still acknowledges for: the store thread's own timeout.
        # Text goes both ways as UTF-8, whatever PGCLIENTENCODING says.
        wanted: dict[str, Any] = {
            "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
            "keepalives_interval": 5, "keepalives_count": 3, "client_encoding": "UTF8",
        }  # fmt: skip
        if timeout is not None:
            wanted["tcp_user_timeout"] = int(timeout * 1000)
        libpq = {key: value for key, value in wanted.items() if key not in given}
        _try_first(url, libpq, where)
        pool: ConnectionPool[Any] = ConnectionPool(
            url, min_size=1, max_size=max_connections, open=False,
            configure=_configurer(timeout or DEFAULT_BOUND_SECONDS),
            # Checked when taken (rarely: the store thread keeps one), so a
            # connection that died idle in the pool is replaced, not handed out.
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, **libpq}, timeout=CONNECTION_WAIT_SECONDS,
            name="fleetpatch",
            reconnect_timeout=RECONNECT_SECONDS,
        )  # fmt: skip
        _quieten_the_pool()
        try:
            pool.open(wait=True, timeout=10)
        except PoolTimeout:
            pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL ({where}): no connection within 10s",
                RETRY_AFTER_SECONDS,
            ) from None
        backend = cls(pool, where)
        # Until it is up, a failure is the one line the caller says: the
        # warnings of a connection lost (or of the pool discarding it) would
        # only repeat it.
        backend._starting = True
        mute = _Mute()
        logging.getLogger("psycopg.pool").addFilter(mute)
        try:
            backend.migrate()
        except psycopg.errors.InsufficientPrivilege as exc:
            backend.close()
            raise UsageError(
                f"PostgreSQL ({where}) does not let this user create the store's tables "
                f"({_reason(exc, url)}): make it the database's owner (README: several "
                "controller replicas)"
            ) from None
        except psycopg.DatabaseError as exc:
            backend.close()
            if isinstance(exc, _GONE):
                raise StoreUnavailable(
                    f"cannot use PostgreSQL ({where}): {_reason(exc, url)}", RETRY_AFTER_SECONDS
                ) from None
            raise UsageError(
                f"PostgreSQL ({where}) holds what the store cannot use ({_reason(exc, url)}): "
                "give the store a database of its own, created empty, owned by its user "
                "(README: several controller replicas)"
            ) from None
        except (StoreUnavailable, psycopg.Error) as exc:
            backend.close()
            raise StoreUnavailable(
                f"cannot use PostgreSQL ({where}): {_reason(exc, url)}", RETRY_AFTER_SECONDS
            ) from None
        except BaseException:
            backend.close()
            raise
        finally:
            backend._starting = False
            logging.getLogger("psycopg.pool").removeFilter(mute)
        return backend

    def lost(self, raw: psycopg.Connection[Any], exc: psycopg.Error) -> StoreUnavailable:
        """``raw`` failed: give it back broken (the pool replaces it); the
        error to raise. A conflict with another replica (a deadlock, say)
        only rolled its transaction back: the caller may simply retry."""
        if isinstance(exc, psycopg.OperationalError) and _transient(exc) and not raw.broken:
            log.info("database conflict with another replica: %s", _reason(exc))
            return StoreUnavailable(
                f"the database refused a conflicting change ({_reason(exc)}); try again",
                RETRY_AFTER_SECONDS / 5,
            )
        standby = isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)
        if self._held is not None and self._held.raw is raw:
            self._held = None
            # Once per interval: a standby refuses every call, each on a
            # connection made again for it. Not while connect() migrates:
            # its caller says the failure, in one line.
            if not self._starting:
                if standby:
                    _quiet.say("standby", "PostgreSQL (%s) refuses writes, a standby: %s; "
                               "connecting again (with several hosts in store.url, add "
                               "target_session_attrs=read-write)", self._where,
                               _reason(exc))  # fmt: skip
                else:
                    _quiet.say("lost", "lost the connection to PostgreSQL (%s): %s",
                               self._where, _reason(exc))  # fmt: skip
            raw.close()
            self._pool.putconn(raw)
        what = "a standby, it refuses writes" if standby else _reason(exc)
        return StoreUnavailable(
            f"the database is unavailable ({what}); try again shortly", RETRY_AFTER_SECONDS
        )

    def refused(self, exc: psycopg.Error) -> Exception:
        """The error to raise for ``exc``, which the database answered for a
        reason of its own (a grant taken away, a table changed by hand): an
        agent or admin is answered UNAVAILABLE with a retry delay, as in an
        outage, never an internal error with a traceback; said in the log
        once per interval. While `connect` migrates, ``exc`` itself: its
        caller says it in one line."""
        if self._starting:
            return exc
        _quiet.say("refused", "PostgreSQL (%s) refuses the store's SQL: %s (%s); was a table "
                   "or a grant changed by hand?", self._where, _reason(exc),
                   type(exc).__name__)  # fmt: skip
        return StoreUnavailable(
            f"the database refused the call ({_reason(exc)}); try again shortly",
            RETRY_AFTER_SECONDS,
        )

    def connection(self) -> _Connection:
        if self._held is None:
            self._held = _Connection(self._take(), self)
        return self._held

    def _take(self) -> psycopg.Connection[Any]:
        """A connection from the pool, waited for briefly once the database
        is known to be down; StoreUnavailable when none comes."""
        down = self._down_since
        try:
            raw: psycopg.Connection[Any] = self._pool.getconn(
                DOWN_WAIT_SECONDS if down else CONNECTION_WAIT_SECONDS
            )
        except PoolTimeout:
            self._down_since = down or time.monotonic()
            raise StoreUnavailable(
                f"cannot reach PostgreSQL ({self._where}); try again shortly",
                RETRY_AFTER_SECONDS,
            ) from None
        if down is not None:
            self._down_since = None
            log.warning("PostgreSQL (%s) answers again, after %.0fs", self._where,
                        time.monotonic() - down)  # fmt: skip
        return raw

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        conn = self.connection()
        try:
            with conn.raw.transaction():
                yield conn
        except _GONE as exc:
            raise self.lost(conn.raw, exc) from None

    # -- migrations -----------------------------------------------------------

    def migrate(self) -> None:
        """Apply the migrations this database lacks, each in a transaction
        with its record; replicas starting together take turns."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS fleetpatch_migrations ("
                " id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL,"
                " UNIQUE (migration_set, name))"
            )
            refuse_newer(self.applied_migrations())
        for migration in registered():
            with self.transaction() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                if migration.name in self.applied_migrations():
                    continue
                log.info("applying migration %s (%s)", migration.name, self._where)
                migration.fn(conn)
                conn.execute(
                    "INSERT INTO fleetpatch_migrations (migration_set, name, applied_at)"
                    " VALUES (?, ?, ?)",
                    (MIGRATION_SET, migration.name, datetime.now(UTC).isoformat()),
                )

    def applied_migrations(self) -> list[str]:
        cur = self.connection().execute(
            "SELECT name FROM fleetpatch_migrations WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        )
        return [row[0] for row in cur]

    # -- leadership ----------------------------------------------------------

    def lead(self, lease: float = LEADER_LEASE_SECONDS) -> bool:
        """Whether this replica holds the leader lock, taking it when it is
        free. The lock lives on a connection of its own, kept while leading:
        when this process dies, PostgreSQL ends the session and the lock
        passes to the next replica that asks. A leader cut off from the
        database, or frozen, leaves a session that looks alive to the
        server (TCP keepalives take hours by default), so the session is
        told to end itself after ``lease`` seconds without a word
        (idle_session_timeout; asking here is the word). StoreUnavailable
        when the database cannot be asked (not "another replica leads")."""
        lost = ""  # why the leader's connection was given up, if it just was
        if self._leader is not None:
            try:
                self._leader.execute("SELECT 1")
                return True
            except psycopg.Error as exc:
                lost = _reason(exc)
                self._drop_leader()
        leading = False
        try:
            raw = self._take()
            try:
                row = raw.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            except psycopg.Error as exc:
                raise self._given_up(raw, "ask for the leader lock", exc) from None
            leading = row is not None and bool(row[0])
        finally:
            if lost and not leading:
                log.warning("no longer leading: lost the leader's connection (%s)", lost)
        if not leading:
            self._pool.putconn(raw)
            return False
        if lost:  # a new primary (a failover), or only the session ended: first again
            log.warning("lost the leader's connection (%s); leading again on a new one", lost)
        try:
            raw.execute(
                "SELECT set_config('idle_session_timeout', %s, false)", (f"{int(lease * 1000)}",)
            )
        except psycopg.errors.UndefinedObject:  # PostgreSQL before 14: the keepalives only
            log.warning("PostgreSQL (%s) has no idle_session_timeout (before 14): a leader cut "
                        "off from it keeps the lead until TCP keepalives end its session",
                        self._where)  # fmt: skip
        except psycopg.Error as exc:
            raise self._given_up(raw, "set up the leader's session", exc) from None
        self._leader = raw
        return True

    def _given_up(
        self, raw: psycopg.Connection[Any], what: str, exc: psycopg.Error
    ) -> StoreUnavailable:
        """``raw`` closed and given back (the pool makes another); the error
        saying what could not be done on PostgreSQL, to raise."""
        raw.close()
        self._pool.putconn(raw)
        return StoreUnavailable(
            f"cannot {what} on PostgreSQL ({self._where}): {_reason(exc)}", RETRY_AFTER_SECONDS
        )

    def _drop_leader(self) -> None:
        raw, self._leader = self._leader, None
        if raw is None:
            return
        try:
            raw.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))
        except psycopg.Error:
            raw.close()  # ends the session, which releases the lock all the same
        self._pool.putconn(raw)

    def close(self) -> None:
        self._drop_leader()
        if self._held is not None:
            self._pool.putconn(self._held.raw)
            self._held = None
        self._pool.close()
