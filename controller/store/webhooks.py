"""Webhook cursors: how far into the audit trail each webhook has been
delivered (controller/notify). The audit trail is the outbox."""

from __future__ import annotations

from controller.audit import AuditRecord
from controller.store import audit
from controller.store.backend import StoreBase


class WebhookStore(StoreBase):
    """A part of Store."""

    def webhook_cursor(self, name: str) -> int:
        """The last audit sequence delivered to webhook ``name``; a webhook
        seen for the first time starts at the end of the trail (it is told
        what happens from now on, not the history)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT after_seq FROM webhook_cursors WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            seq, _ = audit.head(conn)
            # Another replica may have started the same webhook meanwhile: its cursor stands.
            conn.execute(
                "INSERT OR IGNORE INTO webhook_cursors (name, after_seq) VALUES (?, ?)", (name, seq)
            )
            row = conn.execute(
                "SELECT after_seq FROM webhook_cursors WHERE name = ?", (name,)
            ).fetchone()
            return int(row[0])

    def advance_webhook(self, name: str, after_seq: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE webhook_cursors SET after_seq = ? WHERE name = ? AND after_seq < ?",
                (after_seq, name, after_seq),
            )

    def audit_after(self, after: int, limit: int) -> list[AuditRecord]:
        return audit.page(self._conn, after, limit)

    def first_order_of_ring(self, campaign_id: str, ring: int) -> str | None:
        """The campaign's first patch order in ``ring`` (by assignment time)."""
        row = self._conn.execute(
            "SELECT order_id FROM assignments WHERE campaign_id = ? AND ring = ?"
            " AND kind = 'patch' ORDER BY assigned_at, rowid LIMIT 1",
            (campaign_id, ring),
        ).fetchone()
        return None if row is None else str(row[0])
