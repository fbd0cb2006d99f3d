"""Admins and their certificates (controller/fleet/admins.py says what they
are). Every change is audited in its own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.audit import AuditEntry
from controller.errors import AlreadyExists, Conflict, NotFound
from controller.fleet.admins import AdminRecord, AdminRole, AdminStatus
from controller.store import audit
from controller.store.backend import StoreBase
from controller.store.dialect import Connection


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate issued to an admin, as the store keeps it."""

    serial: str  # lower-case hex, as `format(serial, "x")`
    not_before: datetime
    not_after: datetime


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


# The admin and their latest certificate not revoked.
_SELECT = (
    "SELECT a.name, a.role, a.status, a.created_at, a.created_by, a.revoked_at,"
    " c.serial, c.not_after FROM admins a LEFT JOIN admin_certificates c"
    " ON c.serial = (SELECT serial FROM admin_certificates WHERE name = a.name AND revoked = 0"
    " ORDER BY not_after DESC LIMIT 1)"
)


def _admin(row: tuple[Any, ...]) -> AdminRecord:
    name, role, status, created_at, created_by, revoked_at, serial, not_after = row
    return AdminRecord(
        name=name,
        role=AdminRole(role),
        status=AdminStatus(status),
        created_at=datetime.fromtimestamp(created_at, UTC),
        created_by=created_by,
        revoked_at=_dt(revoked_at),
        certificate_serial=serial or "",
        certificate_expires_at=_dt(not_after),
    )


class AdminStore(StoreBase):
    """Mixed into Store; ``_conn`` and ``_transaction`` come from there."""

    def add_admin(
        self, admin: AdminRecord, cert: IssuedCertificate, entry: AuditEntry
    ) -> AdminRecord:
        """Record a new admin (or one revoked before, added again) with their
        first certificate, audited. Raises AlreadyExists for an active admin
        of that name."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM admins WHERE name = ?", (admin.name,)).fetchone()
            if row is not None and row[0] == AdminStatus.ACTIVE:
                raise AlreadyExists(
                    f"admin {admin.name} exists; revoke them first to issue a new certificate"
                )
            values = (admin.role, AdminStatus.ACTIVE, admin.created_at.timestamp(),
                      admin.created_by, admin.name)  # fmt: skip
            if row is None:
                conn.execute(
                    "INSERT INTO admins (role, status, created_at, created_by, name)"
                    " VALUES (?,?,?,?,?)",
                    values,
                )
            else:  # revoked before: their old certificates stay revoked
                conn.execute(
                    "UPDATE admins SET role = ?, status = ?, created_at = ?, created_by = ?,"
                    " revoked_at = NULL WHERE name = ?",
                    values,
                )
            self._insert_certificate(conn, admin.name, cert)
            audit.append(conn, entry)
        return self._must_get_admin(admin.name)

    @staticmethod
    def _insert_certificate(conn: Connection, name: str, cert: IssuedCertificate) -> None:
        conn.execute(
            "INSERT INTO admin_certificates (serial, name, not_before, not_after, revoked)"
            " VALUES (?,?,?,?,0)",
            (cert.serial, name, cert.not_before.timestamp(), cert.not_after.timestamp()),
        )

    def renew_admin_certificate(
        self, name: str, cert: IssuedCertificate, entry: AuditEntry
    ) -> None:
        """Record a renewed certificate of an active admin, audited. The
        one it renews stays valid until it expires (the CLI may still be
        using it). Raises NotFound."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT 1 FROM admins WHERE name = ? AND status = ?", (name, AdminStatus.ACTIVE)
            ).fetchone()
            if row is None:
                raise NotFound(f"no active admin {name!r}")
            self._insert_certificate(conn, name, cert)
            audit.append(conn, entry)

    def admin_for_certificate(self, name: str, serial: str) -> AdminRecord | None:
        """The admin certificate ``serial`` was issued to, if it names
        ``name``: a revoked admin's record too (to refuse by, saying so).
        None for a certificate never issued to them, or one revoked before
        they were added again."""
        row = self._conn.execute(
            "SELECT revoked FROM admin_certificates WHERE serial = ? AND name = ?",
            (serial, name),
        ).fetchone()
        if row is None:
            return None
        admin = self.get_admin(name)
        if admin is not None and row[0] and admin.status is AdminStatus.ACTIVE:
            return None
        return admin

    def get_admin(self, name: str) -> AdminRecord | None:
        row = self._conn.execute(f"{_SELECT} WHERE a.name = ?", (name,)).fetchone()
        return None if row is None else _admin(row)

    def _must_get_admin(self, name: str) -> AdminRecord:
        found = self.get_admin(name)
        if found is None:
            raise NotFound(f"no admin {name!r}")
        return found

    def list_admins(self) -> list[AdminRecord]:
        cur = self._conn.execute(f"{_SELECT} ORDER BY a.name")
        return [_admin(row) for row in cur.fetchall()]

    def admin_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM admins").fetchone()[0])

    def revoke_admin(self, name: str, now: datetime, entry: AuditEntry) -> AdminRecord:
        """Revoke an admin and every certificate of theirs, audited; an admin
        already revoked is returned unchanged. Raises NotFound, and Conflict
        for the last active owner (nobody could add admins any more)."""
        with self._transaction() as conn:
            row = conn.execute("SELECT role, status FROM admins WHERE name = ?",
                               (name,)).fetchone()  # fmt: skip
            if row is None:
                raise NotFound(f"no admin {name!r}")
            if row[1] == AdminStatus.REVOKED:
                return self._must_get_admin(name)
            if row[0] == AdminRole.OWNER:
                owners = conn.execute(
                    "SELECT COUNT(*) FROM admins WHERE role = ? AND status = ?",
                    (AdminRole.OWNER, AdminStatus.ACTIVE),
                ).fetchone()[0]
                if owners <= 1:
                    raise Conflict(
                        f"admin {name} is the last owner; add another owner before revoking them"
                    )
            conn.execute(
                "UPDATE admins SET status = ?, revoked_at = ? WHERE name = ?",
                (AdminStatus.REVOKED, now.timestamp(), name),
            )
            conn.execute("UPDATE admin_certificates SET revoked = 1 WHERE name = ?", (name,))
            audit.append(conn, entry)
        return self._must_get_admin(name)
