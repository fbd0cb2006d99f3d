"""Campaigns, their assignments (one work order per host and kind), and
the per-host order sequence. Each change is audited in its own
transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.audit import AuditEntry, AuditRecord
from controller.campaigns.gates import HaltKind
from controller.campaigns.tallies import CampaignState
from controller.errors import Conflict, NotFound
from controller.model import (
    OUTCOME_STATUS,
    Applied,
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    CellHistory,
)
from controller.store import audit
from controller.store.backend import StoreBase
from controller.store.dialect import Connection, select_in

# A work order waiting for its host's sequence: (host id, seal), where
# seal(sequence) gives the signed assignment and its audit entry.
Sealing = tuple[str, Callable[[int], tuple[Assignment, AuditEntry]]]

_CAMPAIGN_COLUMNS = {
    "state", "updated_at", "approved_at", "halt_kind", "halt_reason", "accepted_failures",
    "accepted_silent", "revert_requested",
}  # fmt: skip


# Step durations are read from the latest this many finished orders per cell.
HISTORY_SAMPLES = 500


def step_durations(
    orders: Iterable[Sequence[tuple[str, float]]],
) -> dict[str, tuple[float, ...]]:
    """Seconds each order spent applying (APPLY to the next step), verifying
    (VERIFY to the last step) and rebooting (REBOOT to REBOOTED), from its
    reports as (step, at) in time order. An order that never took a step
    adds nothing for it."""
    out: dict[str, list[float]] = {"apply": [], "verify": [], "reboot": []}
    for reports in orders:
        seen = [step for step, _ in reports]
        at = [when for _, when in reports]
        for name, begin, end in (("apply", "APPLY", None), ("reboot", "REBOOT", "REBOOTED")):
            if begin in seen:
                i = seen.index(begin)
                j = seen.index(end, i) if end in seen[i:] else i + 1 if end is None else -1
                if 0 <= j < len(at) and j > i:
                    out[name].append(at[j] - at[i])
        if "VERIFY" in seen and seen[-1] != "VERIFY":
            out["verify"].append(at[-1] - at[seen.index("VERIFY")])
    return {name: tuple(values) for name, values in out.items()}


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _campaign(row: tuple[Any, ...], names: list[str]) -> CampaignRecord:
    r = dict(zip(names, row, strict=True))
    return CampaignRecord(
        campaign_id=r["campaign_id"],
        name=r["name"],
        spec=r["spec"],
        state=CampaignState(r["state"]),
        created_at=datetime.fromtimestamp(r["created_at"], UTC),
        created_by=r["created_by"],
        updated_at=datetime.fromtimestamp(r["updated_at"], UTC),
        approved_at=_dt(r["approved_at"]),
        halt_kind=HaltKind(r["halt_kind"]) if r["halt_kind"] else None,
        halt_reason=r["halt_reason"],
        accepted_failures={int(k): v for k, v in json.loads(r["accepted_failures"]).items()},
        accepted_silent={int(k): v for k, v in json.loads(r["accepted_silent"]).items()},
        revert_requested=bool(r["revert_requested"]),
    )


def _assignment(row: tuple[Any, ...], names: list[str]) -> Assignment:
    r = dict(zip(names, row, strict=True))
    return Assignment(
        order_id=r["order_id"],
        campaign_id=r["campaign_id"],
        host_id=r["host_id"],
        kind=AssignmentKind(r["kind"]),
        ring=r["ring"],
        region=r["region"],
        sequence=r["sequence"],
        envelope=bytes(r["envelope"]),
        status=AssignmentStatus(r["status"]),
        assigned_at=datetime.fromtimestamp(r["assigned_at"], UTC),
        step=r["step"],
        detail=r["detail"],
        last_report_at=_dt(r["last_report_at"]),
        finished_at=_dt(r["finished_at"]),
    )


_ASSIGNMENT_COLUMNS = [
    "order_id", "campaign_id", "host_id", "kind", "ring", "region", "sequence", "envelope",
    "status", "assigned_at", "step", "detail", "last_report_at", "finished_at",
]  # fmt: skip
_ASSIGNMENTS_BY_ID = (
    f"SELECT {', '.join(_ASSIGNMENT_COLUMNS)} FROM assignments WHERE order_id IN ({{keys}})"  # noqa: S608 - fixed names
)


class CampaignStore(StoreBase):
    """A part of Store."""

    def _select(self, sql: str, args: Iterable[Any] = ()) -> tuple[list[str], list[Any]]:
        cur = self._conn.execute(sql, tuple(args))
        return [d[0] for d in cur.description], cur.fetchall()

    def create_campaign(self, record: CampaignRecord, entry: AuditEntry) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO campaigns (campaign_id, name, spec, state, created_at, created_by,"
                " updated_at) VALUES (?,?,?,?,?,?,?)",
                (
                    record.campaign_id, record.name, record.spec, record.state,
                    _ts(record.created_at), record.created_by, _ts(record.updated_at),
                ),
            )  # fmt: skip
            audit.append(conn, entry)

    def get_campaign(self, campaign_id: str) -> CampaignRecord:
        names, rows = self._select("SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,))
        if not rows:
            raise NotFound(f"no campaign {campaign_id!r}")
        return _campaign(rows[0], names)

    def list_campaigns(self) -> list[CampaignRecord]:
        names, rows = self._select("SELECT * FROM campaigns ORDER BY created_at, campaign_id")
        return [_campaign(r, names) for r in rows]

    def update_campaign(
        self,
        campaign_id: str,
        expect_states: Iterable[str],
        entry: AuditEntry,
        done_if: str | None = None,
        **changes: Any,
    ) -> CampaignRecord:
        """Change a campaign that is in one of ``expect_states`` (else
        Conflict), and audit it, atomically. A campaign already in state
        ``done_if`` is returned as it is, unchanged and unaudited: asking
        twice for a state it is in succeeds (the CLI's contract)."""
        unknown = set(changes) - _CAMPAIGN_COLUMNS
        if unknown:
            raise ValueError(f"unknown campaign columns {sorted(unknown)}")
        values = {
            k: json.dumps({str(r): n for r, n in v.items()}) if isinstance(v, Mapping)
            else _ts(v) if isinstance(v, datetime) else "" if k == "halt_kind" and v is None
            else v
            for k, v in changes.items()
        }  # fmt: skip
        states = list(expect_states)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state FROM campaigns WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no campaign {campaign_id!r}")
            if done_if is not None and row[0] == done_if:
                return self.get_campaign(campaign_id)
            if row[0] not in states:
                raise Conflict(
                    f"campaign {campaign_id} is {row[0]}; this needs it {' or '.join(states)}"
                )
            sets = ", ".join(f"{k} = ?" for k in values)
            # Only from the state just read: a replica that changed it
            # meanwhile wins, and this one is told so.
            if not conn.execute(
                f"UPDATE campaigns SET {sets} WHERE campaign_id = ? AND state = ?",  # noqa: S608 - checked names
                (*values.values(), campaign_id, row[0]),
            ).rowcount:
                raise Conflict(f"campaign {campaign_id} changed meanwhile; look again")
            audit.append(conn, entry)
        return self.get_campaign(campaign_id)

    def fleet_history(self, samples: int = HISTORY_SAMPLES) -> list[CellHistory]:
        """Per ring x region, how the finished patch orders of every campaign
        ended, and the step durations of the latest ``samples`` of them."""
        cells: dict[tuple[int, str], dict[str, int]] = {}
        for ring, region, status, n in self._conn.execute(
            "SELECT ring, region, status, COUNT(*) FROM assignments"
            " WHERE kind = 'patch' AND status != 'in_flight' GROUP BY ring, region, status"
        ):
            cells.setdefault((ring, region), {})[status] = n
        # A host counts once per cell, whatever became of each of its orders.
        hosts: dict[tuple[int, str], int] = {
            (ring, region): n
            for ring, region, n in self._conn.execute(
                "SELECT ring, region, COUNT(DISTINCT host_id) FROM assignments"
                " WHERE kind = 'patch' AND status != 'in_flight' GROUP BY ring, region"
            )
        }
        rows = self._conn.execute(
            "SELECT a.ring, a.region, r.order_id, r.step, r.at FROM"
            " (SELECT order_id, ring, region, ROW_NUMBER() OVER"
            "   (PARTITION BY ring, region ORDER BY finished_at DESC) AS latest"
            "  FROM assignments WHERE kind = 'patch' AND status != 'in_flight') AS a"
            " JOIN progress_reports r ON r.order_id = a.order_id"
            " WHERE a.latest <= ? ORDER BY a.ring, a.region, r.order_id, r.at",
            (samples,),
        ).fetchall()
        steps: dict[tuple[int, str], dict[str, list[tuple[str, float]]]] = {}
        for ring, region, order_id, step, at in rows:
            steps.setdefault((ring, region), {}).setdefault(order_id, []).append((step, at))
        out = []
        for key in sorted(cells):
            cell = cells[key]
            durations = step_durations(steps.get(key, {}).values())
            out.append(CellHistory(
                ring=key[0], region=key[1], hosts=hosts[key], orders=sum(cell.values()),
                succeeded=cell.get("succeeded", 0) + cell.get("pending_reboot", 0)
                + cell.get("pending_restart", 0),
                failed=cell.get("failed", 0), reverted=cell.get("reverted", 0),
                revert_failed=cell.get("revert_failed", 0), timed_out=cell.get("timed_out", 0),
                apply_seconds=durations["apply"], verify_seconds=durations["verify"],
                reboot_seconds=durations["reboot"],
            ))  # fmt: skip
        return out

    def assignments(self, campaign_id: str) -> list[Assignment]:
        names, rows = self._select(
            "SELECT * FROM assignments WHERE campaign_id = ? ORDER BY assigned_at", (campaign_id,)
        )
        return [_assignment(r, names) for r in rows]

    def assignments_by_id(self, order_ids: Sequence[str]) -> list[Assignment]:
        """These orders, those that exist (in no particular order)."""
        rows = select_in(self._conn, _ASSIGNMENTS_BY_ID, order_ids)
        return [_assignment(r, _ASSIGNMENT_COLUMNS) for r in rows]

    def campaign_hosts(
        self, campaign_id: str, status: AssignmentStatus | None = None
    ) -> tuple[list[Assignment], dict[str, str], dict[str, list[bytes]]]:
        """A campaign's assignments (optionally of one status), oldest
        first; the hostname each host reported; and per order, the progress
        reports it sent (their payloads, oldest first). NotFound for no
        such campaign."""
        self.get_campaign(campaign_id)
        found = [a for a in self.assignments(campaign_id) if status is None or a.status == status]
        hostnames: dict[str, str] = {}
        reports: dict[str, list[bytes]] = {}
        hosts = (
            "SELECT host_id, json_extract(facts, '$.hostname') FROM hosts WHERE host_id IN ({keys})"
        )
        for host_id, hostname in select_in(self._conn, hosts, [a.host_id for a in found]):
            hostnames[host_id] = hostname or ""
        payloads = (
            "SELECT order_id, payload FROM progress_reports WHERE order_id IN ({keys}) ORDER BY at"
        )
        for order_id, payload in select_in(self._conn, payloads, [a.order_id for a in found]):
            reports.setdefault(order_id, []).append(bytes(payload))
        return found, hostnames, reports

    def owed_by(self, host_ids: Sequence[str]) -> dict[str, list[str]]:
        """What each of these hosts still owes after being patched, over all
        campaigns: "reboot", "restart" (hosts owing nothing are left out)."""
        words = {AssignmentStatus.PENDING_REBOOT.value: "reboot",
                 AssignmentStatus.PENDING_RESTART.value: "restart"}  # fmt: skip
        owes: dict[str, set[str]] = {}
        query = "SELECT DISTINCT host_id, status FROM assignments WHERE status IN (?, ?) AND host_id IN ({keys})"  # noqa: E501
        for host_id, status in select_in(self._conn, query, host_ids, before=tuple(words)):
            owes.setdefault(host_id, set()).add(words[status])
        return {host_id: sorted(found) for host_id, found in owes.items()}

    def owed(self, campaign_id: str) -> dict[tuple[int, str], dict[str, int]]:
        """Per (ring, region): patched hosts still owing a reboot, or
        restarts of services running replaced code (status -> hosts)."""
        rows = self._conn.execute(
            "SELECT ring, region, status, count(*) FROM assignments"
            " WHERE campaign_id = ? AND kind = 'patch' AND status IN (?, ?)"
            " GROUP BY ring, region, status",
            (campaign_id, AssignmentStatus.PENDING_REBOOT.value,
             AssignmentStatus.PENDING_RESTART.value),
        ).fetchall()  # fmt: skip
        owed: dict[tuple[int, str], dict[str, int]] = {}
        for ring, region, status, n in rows:
            owed.setdefault((ring, region), {})[status] = n
        return owed

    def in_flight(self) -> list[Assignment]:
        """Every order in flight, of any campaign."""
        names, rows = self._select(
            "SELECT * FROM assignments WHERE status = ?", (AssignmentStatus.IN_FLIGHT.value,)
        )
        return [_assignment(row, names) for row in rows]

    def in_flight_for_host(self, host_id: str) -> Assignment | None:
        names, rows = self._select(
            "SELECT * FROM assignments WHERE host_id = ? AND status = ? ORDER BY sequence DESC",
            (host_id, AssignmentStatus.IN_FLIGHT.value),
        )
        return _assignment(rows[0], names) if rows else None

    def next_sequence(self, host_id: str) -> int:
        row = self._conn.execute(
            "SELECT order_sequence FROM hosts WHERE host_id = ?", (host_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no host {host_id!r}")
        return int(row[0]) + 1

    def assign(self, assignment: Assignment, entry: AuditEntry) -> None:
        """Record a work order for a host, atomically with the host's order
        sequence (which must still be one below the order's) and the audit.
        Raises Conflict when the host already has this campaign's order of
        this kind, or its sequence moved: a host is never assigned twice."""
        with self._transaction() as conn:
            refused = _insert_assignment(conn, assignment, self._backend.integrity_errors)
            if refused:
                raise Conflict(refused)
            audit.append(conn, entry)

    def assign_many(self, pending: Sequence[Sealing]) -> list[Assignment | None]:
        """Record many work orders in one transaction (group commit), each
        sealed here with the host's next order sequence: ``seal(sequence)``
        gives the signed assignment and its audit entry. An order that
        cannot be recorded (the host's sequence moved or it already has the
        campaign's order of this kind: another replica was first) is None
        in the answer, and the others are recorded all the same."""
        recorded: list[Assignment | None] = []
        hosts = sorted({host_id for host_id, _ in pending})  # one lock order for replicas
        with self._transaction() as conn:
            query = "SELECT host_id, order_sequence FROM hosts WHERE host_id IN ({keys})"
            sequences = {host_id: int(seq) for host_id, seq in select_in(conn, query, hosts)}
            for host_id, seal in pending:
                if host_id not in sequences:
                    recorded.append(None)  # gone from the store: nothing to assign
                    continue
                assignment, entry = seal(sequences[host_id] + 1)
                try:
                    with self._transaction() as nested:  # a savepoint: one refusal undoes one
                        refused = _insert_assignment(
                            nested, assignment, self._backend.integrity_errors
                        )
                        if refused:
                            raise Conflict(refused)
                except Conflict:
                    recorded.append(None)
                    continue
                audit.append(conn, entry)
                sequences[host_id] = assignment.sequence
                recorded.append(assignment)
        return recorded

    def apply_results(
        self, host_id: str, results: Iterable[tuple[str, str, str, str, datetime]]
    ) -> list[Applied]:
        """Apply progress to assignments: (order id, step, final outcome or
        "", detail, at). Only in-flight orders of this host change; a late
        result for a timed-out order is kept in the report table only.
        Returns what changed, in order."""
        changed: list[Applied] = []
        with self._transaction() as conn:
            for order_id, step, outcome, detail, at in results:
                row = conn.execute(
                    "SELECT campaign_id FROM assignments WHERE order_id = ? AND host_id = ?"
                    " AND status = ?",
                    (order_id, host_id, AssignmentStatus.IN_FLIGHT.value),
                ).fetchone()
                if row is None:
                    continue
                status = OUTCOME_STATUS.get(outcome) if outcome else None
                changed.append(Applied(row[0], order_id, status, at))
                conn.execute(
                    "UPDATE assignments SET step = ?, detail = ?, last_report_at = ?,"
                    " status = COALESCE(?, status), finished_at = COALESCE(?, finished_at)"
                    " WHERE order_id = ?",
                    (
                        step, detail, _ts(at), status.value if status else None,
                        _ts(at) if status else None, order_id,
                    ),
                )  # fmt: skip
                if status is not None:
                    audit.append(
                        conn,
                        AuditEntry(at, f"host:{host_id}", "order.result", order_id, status.value,
                                   detail),
                    )  # fmt: skip
        return changed

    def time_out(
        self,
        order_ids: Iterable[str],
        now: datetime,
        silent_since: Mapping[str, datetime] | None = None,
    ) -> list[str]:
        """Mark in-flight orders as timed out (final for the budget); returns
        those that were still in flight. ``silent_since``: per order, the
        last report the caller knew of; an order that has reported since
        (through another replica) is left in flight."""
        timed_out: list[str] = []
        known = silent_since or {}
        with self._transaction() as conn:
            for order_id in order_ids:
                seen = known.get(order_id)
                # Stored times are float seconds; the caller's went through a
                # datetime (microseconds): a millisecond of slack.
                latest = float("inf") if seen is None else seen.timestamp() + 0.001
                if conn.execute(
                    "UPDATE assignments SET status = ?, finished_at = ?, detail = ?"
                    " WHERE order_id = ? AND status = ?"
                    " AND COALESCE(last_report_at, assigned_at) <= ?",
                    (
                        AssignmentStatus.TIMED_OUT.value, _ts(now),
                        "no report within the campaign's report timeout", order_id,
                        AssignmentStatus.IN_FLIGHT.value, latest,
                    ),
                ).rowcount:  # fmt: skip
                    timed_out.append(order_id)
                    audit.append(
                        conn, AuditEntry(now, "controller", "order.timeout", order_id, "timed_out")
                    )
        return timed_out

    def append_audit(self, entry: AuditEntry) -> None:
        self.append_audits([entry])

    def append_audits(self, entries: Iterable[AuditEntry]) -> None:
        with self._transaction() as conn:
            for entry in entries:
                audit.append(conn, entry)

    def audit_records(self, since: datetime | None = None) -> list[AuditRecord]:
        return list(audit.records(self._conn, since))

    def audit_page(self, after: int, limit: int) -> list[AuditRecord]:
        """Records after sequence ``after``, at most ``limit``, oldest first."""
        return audit.page(self._conn, after, limit)

    def audit_head(self) -> tuple[int, str]:
        """(last sequence, its hash); (0, GENESIS) when the trail is empty."""
        return audit.head(self._conn)

    def audit_hash_at(self, seq: int) -> str | None:
        return audit.hash_at(self._conn, seq)


def _insert_assignment(
    conn: Connection, a: Assignment, integrity_errors: tuple[type[Exception], ...]
) -> str:
    """Insert ``a`` and move its host's order sequence to it; why not ("")
    when the sequence moved or the host has the campaign's order of this
    kind already. Inside a transaction that the caller undoes on refusal."""
    bumped = conn.execute(
        "UPDATE hosts SET order_sequence = ? WHERE host_id = ? AND order_sequence = ?",
        (a.sequence, a.host_id, a.sequence - 1),
    ).rowcount
    if bumped != 1:
        return f"host {a.host_id}'s order sequence moved; not assigning"
    try:
        conn.execute(
            "INSERT INTO assignments (order_id, campaign_id, host_id, kind, ring, region,"
            " sequence, envelope, status, assigned_at, last_report_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                a.order_id, a.campaign_id, a.host_id, a.kind, a.ring, a.region, a.sequence,
                a.envelope, a.status.value, _ts(a.assigned_at), _ts(a.assigned_at),
            ),
        )  # fmt: skip
    except integrity_errors:
        return f"host {a.host_id} already has a {a.kind} order of campaign {a.campaign_id}"
    return ""
