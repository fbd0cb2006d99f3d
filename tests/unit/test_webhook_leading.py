"""Webhook deliveries with several controller replicas: only the leading
one delivers, and one that takes over starts from the cursor in the store,
not from what it knew before (which would deliver again what another did)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from controller.audit import AuditEntry
from controller.notify.webhooks import Deliveries, Webhook
from controller.store import Store
from controller.store.thread import StoreThread

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_only_the_leading_replica_delivers_and_a_new_leader_resumes_at_the_stored_cursor(
    tmp_path: Path,
):
    store = Store.open(tmp_path / "controller.db")
    db = StoreThread(store)
    hook = Webhook("chatops", "http://127.0.0.1:9/", b"k")
    sent: dict[str, list[str]] = {"a": [], "b": []}
    leader = {"now": "a"}

    def replica(name: str) -> Deliveries:
        return Deliveries(db, [hook], send=lambda h, e: sent[name].append(e.key),
                          leading=lambda: leader["now"] == name)  # fmt: skip

    def approve(n: int) -> None:
        store.append_audit(AuditEntry(NOW, "admin:a", "campaign.approve", f"c-{n}", "approved"))

    async def scenario() -> None:
        a, b = replica("a"), replica("b")
        assert await a.pump() == 0  # its cursor: the end of the (empty) trail
        assert await b.pump() == 0  # not leading: nothing, and no cursor kept
        approve(1)
        assert await b.pump() == 0
        assert await a.pump() == 1
        approve(2)
        leader["now"] = "b"  # a dies before delivering c-2's event
        assert await a.pump() == 0
        assert await b.pump() == 1  # c-2 only: c-1 went out through a

    try:
        asyncio.run(scenario())
    finally:
        db.close()
    assert sent == {"a": ["1:campaign.approved"], "b": ["2:campaign.approved"]}
