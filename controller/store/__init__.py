"""All of the controller's SQL. Nothing else in the controller knows SQL.

Two backends run the same statements (dialect.py): SQLite, embedded, the
default (sqlite.py), and PostgreSQL for several controller replicas on one
database (postgres.py), chosen by `[store] url` (``open_store``).

The store is synchronous and not thread-safe: the server calls it from one
dedicated thread (see ``thread.StoreThread``).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetpatch.inventory import UPDATE_FIELDS

from controller.audit import AuditEntry
from controller.errors import Conflict, NotFound, TokenRefused
from controller.fleet.relabel import Relabel
from controller.fleet.tokens import Token
from controller.model import (
    CheckIn,
    CheckInOutcome,
    Heartbeat,
    Host,
    HostPlace,
    HostStatus,
    Package,
    ProgressReport,
)
from controller.store import audit
from controller.store.admins import AdminStore
from controller.store.backend import LEADER_LEASE_SECONDS, Backend
from controller.store.campaigns import CampaignStore
from controller.store.dialect import Connection, Cursor, select_in
from controller.store.lineage import LineageStore
from controller.store.releases import ReleaseStore
from controller.store.sqlite import SqliteBackend
from controller.store.vulns import VulnStore
from controller.store.webhooks import WebhookStore

__all__ = ["Store", "open_store"]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _must_dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def open_store(url: str, database: Path, timeout: float | None = None) -> Store:
    """The store `[store] url` names: PostgreSQL for a postgresql:// URL
    (``timeout``: `Store.connect`), else the SQLite file ``database``.
    Raises StoreUnavailable (one line) when PostgreSQL cannot be reached."""
    return Store.connect(url, timeout) if url else Store.open(database)


class Store(AdminStore, CampaignStore, LineageStore, ReleaseStore, WebhookStore, VulnStore):
    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)

    @classmethod
    def open(cls, path: Path) -> Store:
        """The SQLite database at ``path``, created (mode 0600) and migrated."""
        return cls(SqliteBackend.open(path))

    @classmethod
    def memory(cls) -> Store:
        return cls(SqliteBackend.memory())

    @classmethod
    def connect(cls, url: str, timeout: float | None = None) -> Store:
        """The PostgreSQL database at ``url`` (postgresql://...), migrated;
        ``timeout``: how long data sent on a connection may go unanswered
        before the connection is given up ([store] timeout). Raises
        StoreUnavailable when it cannot be reached."""
        from controller.store.postgres import PostgresBackend  # psycopg only when asked for

        return cls(PostgresBackend.connect(url, timeout=timeout))

    @property
    def shared(self) -> bool:
        """Whether other controller replicas may write to this database."""
        return self._backend.shared

    def lead(self, lease: float = LEADER_LEASE_SECONDS) -> bool:
        """Whether this controller is the replica that runs the campaign
        tick (always, on SQLite); PostgreSQL: an advisory lock, handed to
        another replica when this one dies, or is not heard from for
        ``lease`` seconds (ask more often)."""
        return self._backend.lead(lease)

    def close(self) -> None:
        self._backend.close()

    def applied_migrations(self) -> list[str]:
        return self._backend.applied_migrations()

    # -- tokens ---------------------------------------------------------------

    def create_token(self, token: Token) -> None:
        self._conn.execute(
            "INSERT INTO tokens (token_id, secret_hash, region, ring, labels, uses_allowed,"
            " uses, created_at, expires_at, revoked) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                token.token_id,
                token.secret_hash,
                token.region,
                token.ring,
                json.dumps(token.labels, sort_keys=True),
                token.uses_allowed,
                token.uses,
                _ts(token.created_at),
                _ts(token.expires_at),
                int(token.revoked),
            ),
        )

    def get_token(self, token_id: str) -> Token | None:
        row = self._conn.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,))
        found = _rows(row)
        return _token(found[0]) if found else None

    def list_tokens(self) -> list[Token]:
        cur = self._conn.execute("SELECT * FROM tokens ORDER BY created_at, token_id")
        return [_token(r) for r in _rows(cur)]

    def revoke_token(self, token_id: str, entry: AuditEntry | None = None) -> Token:
        """Revoke a token, with ``entry`` audited in the same transaction;
        a token revoked already is left as it is, and nothing is audited."""
        with self._transaction() as conn:
            if conn.execute(
                "UPDATE tokens SET revoked = 1 WHERE token_id = ? AND revoked = 0", (token_id,)
            ).rowcount:
                if entry is not None:
                    audit.append(conn, entry)
            elif (
                conn.execute("SELECT 1 FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
                is None
            ):
                raise NotFound(f"no enrollment token {token_id!r}")
        token = self.get_token(token_id)
        assert token is not None  # noqa: S101 - updated just above
        return token

    # -- hosts ----------------------------------------------------------------

    def enroll_host(self, host: Host, token_id: str, now: datetime) -> None:
        """Spend one use of the token and record the host, atomically.

        Raises TokenRefused when the token was revoked, expired or used up
        since it was checked (another agent may have spent the last use).
        """
        with self._transaction() as conn:
            spent = conn.execute(
                "UPDATE tokens SET uses = uses + 1 WHERE token_id = ? AND revoked = 0"
                " AND uses < uses_allowed AND expires_at > ?",
                (token_id, _ts(now)),
            ).rowcount
            if spent == 0:
                raise TokenRefused(f"enrollment token {token_id} can no longer be used")
            conn.execute(
                "INSERT INTO hosts (host_id, region, ring, labels, status, token_id,"
                " enrolled_at, facts, cert_serial, cert_expires_at, cert_not_before)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    host.host_id,
                    host.region,
                    host.ring,
                    json.dumps(dict(host.labels), sort_keys=True),
                    host.status.value,
                    token_id,
                    _ts(host.enrolled_at),
                    json.dumps(dict(host.facts)),
                    host.certificate_serial,
                    _ts(host.certificate_expires_at),
                    _ts(host.certificate_not_before),
                ),
            )

    def get_host(self, host_id: str) -> Host:
        """Raises NotFound."""
        found = _rows(self._conn.execute("SELECT * FROM hosts WHERE host_id = ?", (host_id,)))
        if not found:
            raise NotFound(f"no host {host_id!r}")
        return _host(found[0])

    def list_hosts(
        self, region: str = "", ring: int | None = None, after: str = "", limit: int = 500
    ) -> list[Host]:
        """Hosts ordered by id, after the id ``after`` (keyset pagination)."""
        where: list[str] = ["host_id > ?"]
        args: list[object] = [after]
        if region:
            where.append("region = ?")
            args.append(region)
        if ring is not None:
            where.append("ring = ?")
            args.append(ring)
        cur = self._conn.execute(
            f"SELECT * FROM hosts WHERE {' AND '.join(where)} ORDER BY host_id LIMIT ?",  # noqa: S608 - fixed fragments
            (*args, limit),
        )
        return [_host(r) for r in _rows(cur)]

    def active_places(self, seen_since: datetime | None = None) -> list[HostPlace]:
        """Where each active host is and what it reports (what campaign
        counts read of the fleet), or only of those that checked in after
        ``seen_since`` (through any replica): what a replica catching up
        reads instead of the fleet."""
        query = "SELECT host_id, region, ring, labels, facts, last_seen FROM hosts WHERE status = ?"
        args: tuple[Any, ...] = (HostStatus.ACTIVE.value,)
        if seen_since is not None:
            query += " AND last_seen > ?"
            args += (_ts(seen_since),)
        return [
            HostPlace(host_id, region, ring, json.loads(labels), json.loads(facts), _dt(seen))
            for host_id, region, ring, labels, facts, seen in self._conn.execute(query, args)
        ]

    def hosts_certified_before(self, when: datetime) -> list[str]:
        """Hosts, not revoked, whose certificate was issued before ``when``
        (still on a CA being retired, when that is the rotation's time)."""
        cur = self._conn.execute(
            "SELECT host_id FROM hosts WHERE status != ? AND cert_not_before < ? ORDER BY host_id",
            (HostStatus.REVOKED, when.timestamp()),
        )
        return [row[0] for row in cur.fetchall()]

    def renew_host_certificate(
        self,
        host_id: str,
        serial: str,
        not_before: datetime,
        expires_at: datetime,
        entry: AuditEntry,
    ) -> None:
        """The host's new certificate, and its audit record, in one
        transaction; its renewal failures are forgotten. Raises NotFound."""
        with self._transaction() as conn:
            if (
                conn.execute(
                    "UPDATE hosts SET cert_serial = ?, cert_not_before = ?, cert_expires_at = ?,"
                    " renew_failures = 0, renew_error = '' WHERE host_id = ?",
                    (serial, _ts(not_before), _ts(expires_at), host_id),
                ).rowcount
                == 0
            ):
                raise NotFound(f"no host {host_id!r}")
            audit.append(conn, entry)

    def record_renewal_failure(
        self, host_id: str, failures: int | None, error: str, entry: AuditEntry | None = None
    ) -> None:
        """A failed renewal of the host's certificate: ``failures`` in a row
        as its agent counts them, or None for one more (refused here); with
        its audit record when there is one."""
        count = (
            "renew_failures + 1" if failures is None
            else "CASE WHEN renew_failures > ? THEN renew_failures ELSE ? END"
        )  # fmt: skip
        with self._transaction() as conn:
            conn.execute(
                f"UPDATE hosts SET renew_failures = {count}, renew_error = ? WHERE host_id = ?",  # noqa: S608 - one of two constants
                (error, host_id) if failures is None else (failures, failures, error, host_id),
            )
            if entry is not None:
                audit.append(conn, entry)

    def relabel_host(
        self, host_id: str, change: Relabel, actor: str, now: datetime
    ) -> tuple[Host, str]:
        """Apply ``change`` to a host and audit it, atomically: (the host as
        it is now, what changed). Nothing changed: nothing is written or
        audited, and what changed is "". Raises NotFound, Conflict for a
        revoked host, UsageError for too many labels."""
        with self._transaction() as conn:
            before = self.get_host(host_id)
            if before.status is HostStatus.REVOKED:
                raise Conflict(f"host {host_id} is revoked")
            after = change.applied_to(before)
            detail = after.changes_from(before)
            if not detail:
                return before, ""
            conn.execute(
                "UPDATE hosts SET labels = ?, region = ?, ring = ? WHERE host_id = ?",
                (json.dumps(dict(after.labels), sort_keys=True), after.region, after.ring,
                 host_id),
            )  # fmt: skip
            audit.append(conn, AuditEntry(now, actor, "host.relabel", host_id, "ok", detail))
            return self.get_host(host_id), detail

    def hosts_with_machine_id(self, machine_id: str) -> list[str]:
        """Ids of the hosts, not revoked, whose facts report ``machine_id``."""
        if not machine_id:
            return []
        cur = self._conn.execute(
            "SELECT host_id FROM hosts WHERE json_extract(facts, '$.machine_id') = ?"
            " AND status != ? ORDER BY host_id",
            (machine_id, HostStatus.REVOKED.value),
        )
        return [row[0] for row in cur]

    def revoke_host(self, host_id: str, now: datetime, entry: AuditEntry | None = None) -> Host:
        """Revoke a host, with ``entry`` audited in the same transaction; a
        host revoked already is left as it is, and nothing is audited."""
        with self._transaction() as conn:
            if conn.execute(
                "UPDATE hosts SET status = ?, revoked_at = COALESCE(revoked_at, ?)"
                " WHERE host_id = ? AND status != ?",
                (HostStatus.REVOKED.value, _ts(now), host_id, HostStatus.REVOKED.value),
            ).rowcount:
                if entry is not None:
                    audit.append(conn, entry)
            elif (
                conn.execute("SELECT 1 FROM hosts WHERE host_id = ?", (host_id,)).fetchone() is None
            ):
                raise NotFound(f"no host {host_id!r}")
        return self.get_host(host_id)

    @staticmethod
    def _activate(conn: Connection, host_id: str) -> bool:
        return (
            conn.execute(
                "UPDATE hosts SET status = ? WHERE host_id = ? AND status = ?",
                (HostStatus.ACTIVE.value, host_id, HostStatus.PENDING.value),
            ).rowcount
            == 1
        )

    def activate_host(self, host_id: str) -> Host | None:
        """A pending host made its first mutual-TLS call: it is active now.
        The host, when this call activated it; None when it was not pending."""
        with self._transaction() as conn:
            if not self._activate(conn, host_id):
                return None
        return self.get_host(host_id)

    def expire_pending_hosts(self, enrolled_before: datetime, now: datetime) -> list[Host]:
        """Forget hosts enrolled before ``enrolled_before`` that never made a
        mutual-TLS call (their agent failed to keep what it was given), each
        giving its use of the token back, with an audit record; the hosts."""
        with self._transaction() as conn:
            rows = _rows(
                conn.execute(
                    "SELECT * FROM hosts WHERE status = ? AND enrolled_at < ?",
                    (HostStatus.PENDING.value, _ts(enrolled_before)),
                )
            )
            expired = [_host(r) for r in rows]
            gone: list[Host] = []
            for row, host in zip(rows, expired, strict=True):
                if not conn.execute("DELETE FROM hosts WHERE host_id = ? AND status = ?",
                                    (host.host_id, HostStatus.PENDING.value)).rowcount:  # fmt: skip
                    continue  # another replica expired it, or it just arrived
                gone.append(host)
                conn.execute(
                    "UPDATE tokens SET uses = uses - 1 WHERE token_id = ? AND uses > 0",
                    (row["token_id"],),
                )
                audit.append(conn, AuditEntry(
                    now, "controller", "host.expire", host.host_id, "expired",
                    f"enrolled {host.enrolled_at:%Y-%m-%d %H:%M:%SZ} with token "
                    f"{row['token_id']} and never checked in; the token use is given back",
                ))  # fmt: skip
        return gone

    def host_ids(self, status: HostStatus) -> set[str]:
        """The ids of the hosts in ``status`` (revoked, pending...)."""
        cur = self._conn.execute("SELECT host_id FROM hosts WHERE status = ?", (status.value,))
        return {row[0] for row in cur}

    @staticmethod
    def _store_updates(conn: Connection, checkin: CheckIn) -> None:
        rows = list(checkin.updates or ())
        index = {name: i for i, name in enumerate(UPDATE_FIELDS)}
        conn.execute(
            "INSERT INTO available_updates (host_id, hash, updates, scanned_at, total, security,"
            " reboot) VALUES (?,?,?,?,?,?,?) ON CONFLICT (host_id) DO UPDATE SET"
            " hash = excluded.hash, updates = excluded.updates, scanned_at = excluded.scanned_at,"
            " total = excluded.total, security = excluded.security, reboot = excluded.reboot",
            (checkin.host_id, checkin.updates_hash,
             zlib.compress(json.dumps([list(r) for r in rows]).encode()),
             _ts(checkin.scanned_at), len(rows),
             sum(1 for r in rows if r[index["security"]]),
             sum(1 for r in rows if r[index["reboot"]])),
        )  # fmt: skip

    def get_updates(self, host_id: str) -> tuple[list[tuple[object, ...]], datetime | None] | None:
        """The updates the host's agent last reported available (rows of
        UPDATE_FIELDS) and when it scanned; None before its first report."""
        row = self._conn.execute(
            "SELECT updates, scanned_at FROM available_updates WHERE host_id = ?", (host_id,)
        ).fetchone()
        if row is None:
            return None
        return [tuple(r) for r in json.loads(zlib.decompress(row[0]))], _dt(row[1])

    def get_inventory(self, host_id: str) -> list[Package]:
        row = self._conn.execute(
            "SELECT packages FROM inventories WHERE host_id = ?", (host_id,)
        ).fetchone()
        if row is None:
            return []
        return [(r[0], r[1], r[2]) for r in json.loads(zlib.decompress(row[0]))]

    # -- progress reports -----------------------------------------------------

    def record_reports(self, reports: Sequence[ProgressReport], now: datetime) -> int:
        """Store reports, each (host, idempotency key) once; returns how many
        were new. A report sent again is simply acknowledged again."""
        with self._transaction() as conn:
            new = conn.executemany(
                "INSERT OR IGNORE INTO progress_reports (idempotency_key, host_id, order_id,"
                " step, final, outcome, detail, at, received_at, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.idempotency_key,
                        r.host_id,
                        r.order_id,
                        r.step,
                        int(r.final),
                        r.outcome,
                        r.detail,
                        _ts(r.at),
                        _ts(now),
                        r.payload,
                    )
                    for r in reports
                ],
            ).rowcount
            # A host that reports is alive, even while it is too busy
            # patching to check in.
            hosts = {r.host_id for r in reports}
            conn.executemany(
                "UPDATE hosts SET last_seen = CASE WHEN last_seen > ? THEN last_seen ELSE ? END"
                " WHERE host_id = ?",
                [(_ts(now), _ts(now), h) for h in sorted(hosts)],
            )
            return new

    def reports_for_host(self, host_id: str, limit: int = 50) -> list[ProgressReport]:
        """The host's newest reports first."""
        cur = self._conn.execute(
            "SELECT * FROM progress_reports WHERE host_id = ? ORDER BY at DESC, rowid DESC LIMIT ?",
            (host_id, limit),
        )
        return [
            ProgressReport(
                r["idempotency_key"],
                r["host_id"],
                r["order_id"],
                r["step"],
                bool(r["final"]),
                r["outcome"],
                r["detail"],
                _must_dt(r["at"]),
                bytes(r["payload"]),
            )
            for r in _rows(cur)
        ]

    # -- the check-in hot path ------------------------------------------------

    @staticmethod
    def _checkin_rows(conn: Connection, host_ids: set[str]) -> dict[str, tuple[Any, ...]]:
        """What a check-in needs of each host, read a chunk at a time."""
        query = "SELECT host_id, status, inventory_hash, region, ring, labels, updates_hash FROM hosts WHERE host_id IN ({keys})"  # noqa: E501
        return {host_id: tuple(row) for host_id, *row in select_in(conn, query, sorted(host_ids))}

    def record_checkins(self, batch: Sequence[CheckIn]) -> list[CheckInOutcome]:
        """Persist a batch of check-ins in one transaction (group commit).

        Returns, for each, whether the host is known and active and the
        inventory hash the controller holds afterwards. Raw ``executemany``
        here: this runs thousands of times a second at fleet scale.
        """
        outcomes: list[CheckInOutcome] = []
        updates: list[tuple[Any, ...]] = []
        # A host may appear twice in one batch (a quick retry): later entries
        # must see what earlier ones wrote, which the deferred UPDATE has not.
        seen: dict[str, tuple[str, str, str, int, str, str]] = {}
        with self._transaction() as conn:
            # Before the rows: a placement changed after this read makes
            # what the rows said stale (controller/store/heartbeats.py).
            generation = self._hosts_generation(conn)
            known = self._checkin_rows(conn, {checkin.host_id for checkin in batch})
            for checkin in batch:
                row: tuple[Any, ...] | None = seen.get(checkin.host_id) or known.get(
                    checkin.host_id
                )
                if row is not None and row[0] == HostStatus.PENDING.value:
                    # Its first check-in. Read the row again once it is
                    # active: on PostgreSQL another replica may have
                    # relabelled, revoked or activated it since the read above.
                    activated = self._activate(conn, checkin.host_id)
                    row = self._checkin_rows(conn, {checkin.host_id}).get(checkin.host_id)
                else:
                    activated = False
                if row is None or row[0] != HostStatus.ACTIVE.value:
                    outcomes.append(CheckInOutcome(row is not None, row is not None, ""))
                    continue
                known_hash, new_inventory, count = row[1], 0, None
                if checkin.packages is not None:
                    blob = inventory_blob(checkin.packages, checkin.sources)
                    conn.execute(
                        "INSERT INTO inventories (host_id, hash, packages, updated_at)"
                        " VALUES (?,?,?,?) ON CONFLICT (host_id) DO UPDATE SET"
                        " hash = excluded.hash, packages = excluded.packages,"
                        " updated_at = excluded.updated_at",
                        (checkin.host_id, checkin.inventory_hash, blob, _ts(checkin.at)),
                    )
                    known_hash, new_inventory, count = (
                        checkin.inventory_hash,
                        1,
                        len(checkin.packages),
                    )
                known_updates = row[5]
                if checkin.updates is not None:
                    self._store_updates(conn, checkin)
                    known_updates = checkin.updates_hash
                updates.append(
                    (
                        _ts(checkin.at),
                        _ts(checkin.at),
                        json.dumps(dict(checkin.facts)),
                        json.dumps(dict(checkin.health)),
                        known_hash,
                        count,
                        new_inventory,
                        known_updates,
                        checkin.host_id,
                    )
                )
                seen[checkin.host_id] = (row[0], known_hash, row[2], row[3], row[4], known_updates)
                outcomes.append(
                    CheckInOutcome(
                        True,
                        False,
                        known_hash,
                        row[2],
                        row[3],
                        json.loads(row[4]),
                        activated,
                        known_updates,
                        generation,
                    )
                )
            # In host order: replicas updating the same hosts take their row
            # locks in the same order, rather than deadlock.
            updates.sort(key=lambda row: str(row[-1]))
            conn.executemany(
                "UPDATE hosts SET last_seen = CASE WHEN last_seen > ? THEN last_seen ELSE ? END,"
                " facts = ?, health = ?, inventory_hash = ?,"
                " package_count = COALESCE(?, package_count),"
                " inventory_updates = inventory_updates + ?, updates_hash = ?,"
                " checkins = checkins + 1 WHERE host_id = ?",
                updates,
            )
        return outcomes

    @staticmethod
    def _hosts_generation(conn: Connection) -> int:
        row = conn.execute("SELECT generation FROM generations WHERE name = 'hosts'").fetchone()
        return 0 if row is None else int(row[0])  # no row: never changed

    def hosts_generation(self) -> int:
        """How many times a host's placement (status, region, ring, labels)
        has changed, by any replica, a pending host's activation and expiry
        aside: migration 0011's triggers."""
        return self._hosts_generation(self._conn)

    def record_heartbeats(self, beats: Sequence[Heartbeat]) -> int:
        """Write check-ins that brought nothing new, answered before this
        (controller/store/heartbeats.py), in one transaction: each host's
        check-in count, last_seen (never moved back) and facts and health.
        A host no longer active is left as it is. Returns the hosts'
        placement generation, read in the same transaction."""
        with self._transaction() as conn:
            rows = [
                (
                    b.count, _ts(b.at), _ts(b.at), _json_or_none(b.facts), _json_or_none(b.health),
                    b.host_id, HostStatus.ACTIVE.value,
                )
                for b in beats
            ]  # fmt: skip
            rows.sort(key=lambda row: str(row[-2]))  # in host order, as record_checkins
            conn.executemany(
                "UPDATE hosts SET checkins = checkins + ?,"
                " last_seen = CASE WHEN last_seen > ? THEN last_seen ELSE ? END,"
                " facts = COALESCE(?, facts), health = COALESCE(?, health)"
                " WHERE host_id = ? AND status = ?",
                rows,
            )
            return self._hosts_generation(conn)


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value))


def inventory_blob(packages: Sequence[Package], sources: Mapping[str, tuple[str, str]]) -> bytes:
    """An inventory as stored: zlib(JSON rows), each ``[name, version, arch]``
    and, where its source differs, ``source, source version`` after them."""
    rows = [[*p, *sources[p[0]]] if p[0] in sources else list(p) for p in packages]
    return zlib.compress(json.dumps(rows).encode())


def _rows(cursor: Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _token(row: Mapping[str, Any]) -> Token:
    return Token(
        token_id=row["token_id"],
        secret_hash=row["secret_hash"],
        region=row["region"],
        ring=row["ring"],
        uses_allowed=row["uses_allowed"],
        uses=row["uses"],
        created_at=_must_dt(row["created_at"]),
        expires_at=_must_dt(row["expires_at"]),
        revoked=bool(row["revoked"]),
        labels=json.loads(row["labels"]),
    )


def _host(row: Mapping[str, Any]) -> Host:
    return Host(
        host_id=row["host_id"],
        region=row["region"],
        ring=row["ring"],
        status=HostStatus(row["status"]),
        enrolled_at=_must_dt(row["enrolled_at"]),
        labels=json.loads(row["labels"]),
        last_seen=_dt(row["last_seen"]),
        facts=json.loads(row["facts"]),
        health=json.loads(row["health"]),
        inventory_hash=row["inventory_hash"],
        package_count=row["package_count"],
        certificate_serial=row["cert_serial"],
        certificate_expires_at=_dt(row["cert_expires_at"]),
        inventory_updates=row["inventory_updates"],
        checkins=row["checkins"],
        certificate_not_before=_dt(row["cert_not_before"]),
        renewal_failures=row["renew_failures"],
        renewal_error=row["renew_error"],
    )
