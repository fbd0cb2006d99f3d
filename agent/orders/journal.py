"""The agent's local SQLite journal: the host's memory of what it did.

Every work-order state is written here *before* its side effect runs
(write-ahead intent), together with the progress report that tells the
controller, in one transaction. After a crash the journal says where each
order stood; the report queue says what the controller has not yet
acknowledged. Released table, column and state names never change.

    meta       check-in state, highest accepted order sequence, the last scan
               of available updates (and the hash the controller holds of it)
    orders     one row per accepted order: its envelope, state, plan, snapshot
    steps      every state entered, when, and why
    reports    progress reports, queued until the controller acknowledges them
    refusals   orders refused before they ran, and why
    restarts   services an order restarted (the intent first, then the result)

Every value read back is checked to be what the agent writes there (a time
with its offset, JSON of the shape its readers take, a known state, a
sequence): one that is not (edited by hand, written by another program) is
a StateDirError naming the journal, the table and column or meta key, the
value and what it should be (exit 2), never a traceback further on. Only
the schedule the agent recomputes itself is taken as unset instead
(`Journal._schedule`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from agent.errors import RESTORE, StateDirError, storage_error
from agent.orders.sqlschema import Migrations, atomic
from agent.orders.states import State

migrations = Migrations("fleetpatch.agent")
log = logging.getLogger(__name__)


@migrations(name="0001_meta")
def _meta(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations(name="0002_orders")
def _orders(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE orders (
            order_id     TEXT PRIMARY KEY,
            sequence     INTEGER NOT NULL,
            campaign_id  TEXT NOT NULL,
            envelope     BLOB NOT NULL,
            state        TEXT NOT NULL,
            received_at  TEXT NOT NULL,
            updated_at   TEXT NOT NULL,
            detail       TEXT NOT NULL DEFAULT '',
            plan         TEXT,
            snapshot     TEXT,
            changes      TEXT NOT NULL DEFAULT '[]',
            checks       TEXT NOT NULL DEFAULT '[]'
        )"""
    )
    db.execute(
        """CREATE TABLE steps (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id    TEXT NOT NULL REFERENCES orders (order_id),
            state       TEXT NOT NULL,
            entered_at  TEXT NOT NULL,
            detail      TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX steps_order ON steps (order_id, id)")
    db.execute(
        """CREATE TABLE reports (
            key         TEXT PRIMARY KEY,
            order_id    TEXT NOT NULL,
            payload     BLOB NOT NULL,
            created_at  TEXT NOT NULL,
            acked_at    TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE refusals (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            at        TEXT NOT NULL,
            order_id  TEXT NOT NULL,
            reason    TEXT NOT NULL,
            detail    TEXT NOT NULL
        )"""
    )


@migrations(name="0003_dropped_reports")
def _dropped(db: sqlite3.Connection) -> None:
    # A report the controller rejected as invalid is taken out of the queue
    # (so it never blocks the reports behind it), with why, never deleted.
    db.execute("ALTER TABLE reports ADD COLUMN dropped TEXT")


@migrations(name="0004_restarts")
def _restarts(db: sqlite3.Connection) -> None:
    # A restart is written before it is asked for and its result after: a
    # crash between restarts leaves the journal saying which were begun.
    db.execute(
        """CREATE TABLE restarts (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id    TEXT NOT NULL REFERENCES orders (order_id),
            phase       TEXT NOT NULL,
            unit        TEXT NOT NULL,
            begun_at    TEXT NOT NULL,
            result      TEXT
        )"""
    )
    db.execute("CREATE INDEX restarts_order ON restarts (order_id, phase)")


@dataclass(frozen=True)
class CheckInState:
    acked_inventory_hash: str
    last_success: datetime | None
    last_attempt: datetime | None
    last_error: str
    next_checkin: datetime | None

    @property
    def interval(self) -> timedelta | None:
        """The check-in interval the controller last announced (from the
        last successful check-in to the next one it asked for)."""
        if self.last_success is None or self.next_checkin is None:
            return None
        gap = self.next_checkin - self.last_success
        return gap if gap > timedelta(0) else None


class _Undecodable(Exception):
    """A journal value that is not what the agent writes there (edited by
    hand, or by another program): `_guarded` makes it one StateDirError
    naming the journal, where the value is, and what it should be."""

    def __init__(self, where: str, value: object, expected: str) -> None:
        super().__init__(where, value, expected)
        self.where, self.value, self.expected = where, value, expected

    def describe(self) -> str:
        """``meta.next_scan holds 'zzz', not a time``"""
        return f"{self.where} holds {_shown(self.value)}, not {self.expected}"


def _shown(value: object) -> str:
    if isinstance(value, bytes | memoryview):
        return f"a BLOB of {len(value)} bytes"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + "..."
    return repr(value)


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _Undecodable(where, value, "text")
    return value


def _blob(where: str, value: object) -> bytes:
    if not isinstance(value, bytes | memoryview):
        raise _Undecodable(where, value, "a BLOB")
    return bytes(value)


def _dt(where: str, text: object) -> datetime | None:
    """A time the agent wrote (ISO 8601 with its UTC offset); None for none."""
    if text is None or text == "":
        return None
    return _time(where, text)


def _time(where: str, text: object) -> datetime:
    if not isinstance(text, str):
        raise _Undecodable(where, text, "a time")
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise _Undecodable(where, text, "a time") from None
    if at.tzinfo is None:  # compared with aware times: a TypeError later
        raise _Undecodable(where, text, "a time with its UTC offset")
    try:
        at.astimezone(UTC)  # 9999-12-31T23:59:59-14:00 has no UTC form: shown, it would fail
    except OverflowError:
        raise _Undecodable(where, text, "a time") from None
    return at


_SEQUENCE = re.compile(r"[0-9]{1,18}")  # below 2**63: SQLite's INTEGER takes it back


def _sequence(where: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    if isinstance(value, str) and _SEQUENCE.fullmatch(value):
        return int(value)
    raise _Undecodable(where, value, "an order sequence (an integer >= 0)")


_STATES = frozenset(s.value for s in State)


def _state(where: str, value: object) -> str:
    if not isinstance(value, str) or value not in _STATES:
        raise _Undecodable(where, value, "a work-order state")
    return value


#: agent.backends.base.Change's fields: a package change in a plan or a result.
CHANGE_KEYS = frozenset({"name", "arch", "old", "new"})
CHANGE_OPTIONAL = frozenset({"origin"})
#: agent.host.updates.Available's fields without a default: an update a scan found.
UPDATE_KEYS = frozenset({"name", "arch", "installed", "candidate", "origin", "security"})


def _json(where: str, text: object, expected: str, shape: Callable[[Json], bool]) -> Json:
    """JSON the agent wrote, of the ``shape`` its readers take."""
    if not isinstance(text, str):
        raise _Undecodable(where, text, expected)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise _Undecodable(where, text, expected) from None
    if not shape(doc):
        raise _Undecodable(where, text, expected)
    return doc


def _changes(doc: Json) -> bool:
    return isinstance(doc, list) and all(
        isinstance(c, dict)
        and CHANGE_KEYS <= c.keys() <= CHANGE_KEYS | CHANGE_OPTIONAL
        and all(isinstance(v, str) for v in c.values())
        for c in doc
    )


def _updates(doc: Json) -> bool:
    return isinstance(doc, list) and all(
        isinstance(u, dict) and u.keys() >= UPDATE_KEYS for u in doc
    )


def _list(doc: Json) -> bool:
    return isinstance(doc, list)


def _object(doc: Json) -> bool:
    return isinstance(doc, dict)


Json = Any
MakeReport = Callable[[str], bytes]  # idempotency key -> serialized ProgressReport


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    sequence: int
    campaign_id: str
    envelope: bytes
    state: str
    received_at: datetime
    updated_at: datetime
    detail: str
    plan: Json
    snapshot: Json
    changes: Json
    checks: Json


@dataclass(frozen=True)
class Step:
    order_id: str
    state: str
    entered_at: datetime
    detail: str


@dataclass(frozen=True)
class Restart:
    unit: str
    begun_at: datetime
    result: str | None  # None: begun, and not known to have finished


@dataclass(frozen=True)
class Refusal:
    at: datetime
    order_id: str
    reason: str
    detail: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _order(row: sqlite3.Row) -> OrderRecord:
    """An orders row, each column checked; raises _Undecodable."""
    order_id = _text("orders.order_id", row["order_id"])
    where = f"order {order_id[:80]!r}: orders."
    changes = "a JSON list of package changes"
    plan, snapshot = row["plan"], row["snapshot"]
    return OrderRecord(
        order_id=order_id,
        sequence=_sequence(where + "sequence", row["sequence"]),
        campaign_id=_text(where + "campaign_id", row["campaign_id"]),
        envelope=_blob(where + "envelope", row["envelope"]),
        state=_state(where + "state", row["state"]),
        received_at=_time(where + "received_at", row["received_at"]),
        updated_at=_time(where + "updated_at", row["updated_at"]),
        detail=_text(where + "detail", row["detail"]),
        plan=_json(where + "plan", plan, changes, _changes) if plan else None,
        snapshot=_json(where + "snapshot", snapshot, "a JSON object", _object)
        if snapshot
        else None,
        changes=_json(where + "changes", row["changes"], changes, _changes),
        checks=_json(where + "checks", row["checks"], "a JSON list", _list),
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """A journal call whose SQLite or file error, or a value it reads that
    does not decode (a time, JSON, a state, a sequence: `_Undecodable`),
    becomes one StateDirError naming the journal and what to do (read-only,
    full, damaged), instead of a traceback. SQLite has rolled the
    transaction back by then: the journal holds what it held before the
    call."""

    @functools.wraps(method)
    def call(self: Journal, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # our mistake, not the file's
        except (sqlite3.DatabaseError, OSError) as exc:
            raise _journal_error(self.path, exc) from None
        except _Undecodable as exc:
            raise StateDirError(
                f"the journal {self.path} is damaged: {exc.describe()} ({RESTORE})"
            ) from None

    return cast(_F, call)


def _journal_error(path: Path, exc: sqlite3.DatabaseError | OSError) -> StateDirError:
    known = storage_error(path, exc)
    if known is not None:
        return known
    return StateDirError(f"the journal {path} is damaged ({exc}): {RESTORE}")


class Journal:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path, must_exist: bool = False) -> Journal:
        """Open and migrate the journal, creating it (mode 0600, and its
        WAL and shared-memory files with it) unless ``must_exist``: the
        journal of an enrolled host is made at enrollment, and one that
        went missing or was truncated lost the host's history and the
        sequence floor that refuses replayed orders. Raises StateDirError."""
        what = RESTORE
        try:
            if not path.exists():
                if must_exist:
                    raise StateDirError(f"the journal {path} is missing ({what})")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.fchmod(fd, 0o600)  # whatever the umask; SQLite gives -wal, -shm the same
                os.close(fd)
            elif must_exist and path.stat().st_size == 0:
                raise StateDirError(f"the journal {path} is empty ({what})")
            conn = sqlite3.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # the journal is the host's memory
            conn.execute("PRAGMA busy_timeout=5000")
            journal = cls(conn, path)
            migrations.apply(conn)
        except (sqlite3.DatabaseError, OSError) as exc:
            # A damaged file, a read-only or full state dir: say which file
            # and why, once, instead of a traceback.
            raise _journal_error(path, exc) from None
        return journal

    def close(self) -> None:
        self._conn.close()

    @_guarded
    def _get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else _text(f"meta.{key}", row[0])

    def _schedule(self, key: str) -> datetime | None:
        """A time the agent schedules for itself (``next_scan``, and the
        ``next_checkin`` the controller last announced), None when unset.

        Unlike every other value of the journal, one that does not decode is
        taken as unset, with a warning, rather than stopping the agent with
        a StateDirError: nothing depends on its history, and the agent
        writes it again on its own (`Agent.scan_if_due` schedules a scan
        when none is; every successful check-in records the next one), so
        the damage heals itself. The record of what happened (check-in
        times, scans, orders, the sequence floor) is never guessed at."""
        text = self._get(key)
        try:
            return _dt(f"meta.{key}", text)
        except _Undecodable as exc:
            log.warning(
                "the journal %s is damaged: %s; taken as unset (the agent sets it again)",
                self.path, exc.describe(),
            )  # fmt: skip
            return None

    @_guarded
    def _set(self, **values: str) -> None:
        with atomic(self._conn):
            self._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                values.items(),
            )

    @_guarded
    def checkin_state(self) -> CheckInState:
        return CheckInState(
            acked_inventory_hash=self._get("acked_inventory_hash") or "",
            last_success=_dt("meta.last_checkin_success", self._get("last_checkin_success")),
            last_attempt=_dt("meta.last_checkin_attempt", self._get("last_checkin_attempt")),
            last_error=self._get("last_checkin_error") or "",
            next_checkin=self._schedule("next_checkin"),
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

    @_guarded
    def record_checkin_failure(self, error: str, now: datetime | None = None) -> None:
        self._set(
            last_checkin_attempt=(now or datetime.now(UTC)).isoformat(),
            last_checkin_error=error,
        )

    # -- work orders ----------------------------------------------------------

    @_guarded
    def record_scan(self, updates: Json, at: datetime, next_scan: datetime) -> None:
        """The updates a scan found (JSON list), when, and when to scan next."""
        self._set(updates=json.dumps(updates), updates_scanned_at=at.isoformat(),
                  next_scan=next_scan.isoformat())  # fmt: skip

    @_guarded
    def scan(self) -> tuple[Json, datetime | None]:
        """The last scan's updates (JSON list, [] when none yet) and its time."""
        text = self._get("updates")
        found = _json("meta.updates", text, "a JSON list of updates", _updates) if text else []
        return found, _dt("meta.updates_scanned_at", self._get("updates_scanned_at"))

    @_guarded
    def next_scan(self) -> datetime | None:
        """When the next scan is due; None when unset, or damaged (`_schedule`)."""
        return self._schedule("next_scan")

    @_guarded
    def set_next_scan(self, at: datetime) -> None:
        self._set(next_scan=at.isoformat())

    @_guarded
    def acked_updates_hash(self) -> str:
        return self._get("acked_updates_hash") or ""

    @_guarded
    def ack_updates(self, known_hash: str) -> None:
        self._set(acked_updates_hash=known_hash)

    @_guarded
    def highest_sequence(self) -> int:
        return _sequence("meta.highest_sequence", self._get("highest_sequence") or "0")

    def accept(
        self,
        order_id: str,
        sequence: int,
        campaign_id: str,
        envelope: bytes,
        make_report: MakeReport,
    ) -> None:
        """Record a verified order as RECEIVED and raise the sequence floor,
        atomically: a replay of it is refused from now on, crash or not."""
        now = _now()
        with atomic(self._conn):
            if sequence <= self.highest_sequence():
                raise ValueError(f"sequence {sequence} is not above the highest accepted")
            self._conn.execute(
                "INSERT INTO orders (order_id, sequence, campaign_id, envelope, state,"
                " received_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                (order_id, sequence, campaign_id, envelope, "RECEIVED", now, now),
            )
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('highest_sequence', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(sequence),),
            )
            self._step(order_id, "RECEIVED", "", now, make_report)

    def _step(
        self, order_id: str, state: str, detail: str, now: str, make_report: MakeReport
    ) -> None:
        cur = self._conn.execute(
            "INSERT INTO steps (order_id, state, entered_at, detail) VALUES (?,?,?,?)",
            (order_id, state, now, detail),
        )
        key = f"{order_id}/{cur.lastrowid}/{state}"
        self._conn.execute(
            "INSERT INTO reports (key, order_id, payload, created_at) VALUES (?,?,?,?)",
            (key, order_id, make_report(key), now),
        )

    def enter(
        self,
        order_id: str,
        state: str,
        detail: str,
        make_report: MakeReport,
        **columns: Json,
    ) -> None:
        """Move an order to ``state`` (before that state's side effect runs),
        updating any of plan, snapshot, changes, checks, and queue its report."""
        now = _now()
        allowed = {"plan", "snapshot", "changes", "checks"}
        if set(columns) - allowed:
            raise ValueError(f"unknown order columns {sorted(set(columns) - allowed)}")
        sets = "".join(f", {name} = ?" for name in columns)
        with atomic(self._conn):
            self._conn.execute(
                f"UPDATE orders SET state = ?, detail = ?, updated_at = ?{sets}"  # noqa: S608
                " WHERE order_id = ?",
                (state, detail, now, *(json.dumps(v) for v in columns.values()), order_id),
            )
            self._step(order_id, state, detail, now, make_report)

    @_guarded
    def entries(self, order_id: str, state: str) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM steps WHERE order_id = ? AND state = ?", (order_id, state)
        ).fetchone()
        return int(row[0])

    @_guarded
    def order(self, order_id: str) -> OrderRecord | None:
        row = self._conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _order(row)

    @_guarded
    def orders(self, limit: int = 20) -> list[OrderRecord]:
        """The newest orders first."""
        rows = self._conn.execute(
            "SELECT * FROM orders ORDER BY sequence DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_order(r) for r in rows]

    @_guarded
    def unfinished(self, terminal: frozenset[str]) -> list[OrderRecord]:
        marks = ",".join("?" * len(terminal))
        rows = self._conn.execute(
            f"SELECT * FROM orders WHERE state NOT IN ({marks}) ORDER BY sequence",  # noqa: S608
            tuple(terminal),
        ).fetchall()
        return [_order(r) for r in rows]

    @_guarded
    def steps(self, order_id: str) -> list[Step]:
        rows = self._conn.execute(
            "SELECT * FROM steps WHERE order_id = ? ORDER BY id", (order_id,)
        ).fetchall()
        return [_step(r) for r in rows]

    @_guarded
    def refuse(self, order_id: str, reason: str, detail: str, make_report: MakeReport) -> None:
        now = _now()
        with atomic(self._conn):
            cur = self._conn.execute(
                "INSERT INTO refusals (at, order_id, reason, detail) VALUES (?,?,?,?)",
                (now, order_id, reason, detail),
            )
            key = f"refusal/{cur.lastrowid}/{order_id}"
            self._conn.execute(
                "INSERT INTO reports (key, order_id, payload, created_at) VALUES (?,?,?,?)",
                (key, order_id, make_report(key), now),
            )

    @_guarded
    def refusals(self, limit: int = 20) -> list[Refusal]:
        rows = self._conn.execute(
            "SELECT * FROM refusals ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_refusal(r) for r in rows]

    @_guarded
    def pending_reports(self, limit: int = 100) -> list[tuple[str, bytes]]:
        rows = self._conn.execute(
            "SELECT key, payload FROM reports WHERE acked_at IS NULL AND dropped IS NULL"
            " ORDER BY rowid LIMIT ?",
            (limit,),
        ).fetchall()
        return [_queued(r) for r in rows]

    @_guarded
    def drop_report(self, key: str, why: str) -> None:
        """Take a report the controller rejects out of the queue, noting why."""
        with atomic(self._conn):
            self._conn.execute(
                "UPDATE reports SET dropped = ? WHERE key = ? AND acked_at IS NULL",
                (f"{_now()} {why}", key),
            )

    @_guarded
    def dropped_reports(self) -> list[tuple[str, str]]:
        """(key, when and why) of every report dropped from the queue."""
        rows = self._conn.execute(
            "SELECT key, dropped FROM reports WHERE dropped IS NOT NULL ORDER BY rowid"
        ).fetchall()
        return [(_text("reports.key", r["key"]), _text("reports.dropped", r["dropped"]))
                for r in rows]  # fmt: skip

    @_guarded
    def ack_reports(self, keys: list[str]) -> None:
        now = _now()
        with atomic(self._conn):
            self._conn.executemany(
                "UPDATE reports SET acked_at = ? WHERE key = ? AND acked_at IS NULL",
                [(now, k) for k in keys],
            )

    @_guarded
    def restart_begun(self, order_id: str, phase: str, unit: str) -> int:
        """Record that ``unit`` is about to be restarted; returns the row id."""
        with atomic(self._conn):
            cur = self._conn.execute(
                "INSERT INTO restarts (order_id, phase, unit, begun_at) VALUES (?,?,?,?)",
                (order_id, phase, unit, _now()),
            )
        return int(cur.lastrowid or 0)

    @_guarded
    def restart_done(self, row: int, result: str) -> None:
        with atomic(self._conn):
            self._conn.execute("UPDATE restarts SET result = ? WHERE id = ?", (result, row))

    @_guarded
    def restarts(self, order_id: str, phase: str) -> list[Restart]:
        rows = self._conn.execute(
            "SELECT unit, begun_at, result FROM restarts WHERE order_id = ? AND phase = ?"
            " ORDER BY id",
            (order_id, phase),
        ).fetchall()
        return [_restart(r) for r in rows]


def _step(r: sqlite3.Row) -> Step:
    where = f"order {r['order_id']!r}: steps."
    return Step(
        _text("steps.order_id", r["order_id"]),
        _state(where + "state", r["state"]),
        _time(where + "entered_at", r["entered_at"]),
        _text(where + "detail", r["detail"]),
    )


def _queued(r: sqlite3.Row) -> tuple[str, bytes]:
    key = _text("reports.key", r["key"])
    return key, _blob(f"report {key[:80]!r}: reports.payload", r["payload"])


def _refusal(r: sqlite3.Row) -> Refusal:
    return Refusal(
        _time("refusals.at", r["at"]),
        _text("refusals.order_id", r["order_id"]),
        _text("refusals.reason", r["reason"]),
        _text("refusals.detail", r["detail"]),
    )


def _restart(r: sqlite3.Row) -> Restart:
    result = r["result"]
    return Restart(
        _text("restarts.unit", r["unit"]),
        _time("restarts.begun_at", r["begun_at"]),
        None if result is None else _text("restarts.result", result),
    )
