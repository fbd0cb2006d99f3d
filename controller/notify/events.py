"""Campaign events, read from the audit trail.

The audit trail is written in the same transaction as every change it
records, so it is the outbox: an event exists exactly when its change was
committed, and a restart loses none. Each event's key (the audit sequence
and the event kind) is its idempotency key: a receiver that sees a key
again has seen that event.

    campaign.approved   a person approved it: it runs
    ring.started        the first order of a ring was assigned
    ring.promoted       the ring before it met its gate (sent just before
                        the next ring's ring.started)
    campaign.halted     a budget was breached; ``reason`` says which
    campaign.resumed    a person resumed it
    campaign.completed  every host is done
    campaign.aborted    a person aborted it; ``revert`` when patched hosts go back
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.audit import AuditRecord

CAMPAIGN_ACTIONS = {
    "campaign.approve": "campaign.approved",
    "campaign.halt": "campaign.halted",
    "campaign.resume": "campaign.resumed",
    "campaign.complete": "campaign.completed",
    "campaign.abort": "campaign.aborted",
}
KINDS = ("ring.started", "ring.promoted", *CAMPAIGN_ACTIONS.values())
# What the engine audits for an assignment (rollout/engine.py `_assign`).
_ASSIGNED = re.compile(r"^campaign (?P<campaign>\S+) host \S+ ring (?P<ring>-?\d+) ")
_PATCH_ACTIONS = ("order.assign.patch", "order.assign.agent-update")


@dataclass(frozen=True)
class Event:
    key: str  # idempotency key: "<audit seq>:<kind>"
    kind: str
    campaign_id: str
    at: str  # ISO 8601, from the audit record
    actor: str
    fields: dict[str, object] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        """The JSON document POSTed."""
        return {
            "id": self.key, "event": self.kind, "campaign": self.campaign_id, "at": self.at,
            "actor": self.actor, **self.fields,
        }  # fmt: skip


def events_of(
    record: AuditRecord,
    first_order_of_ring: Callable[[str, int], str | None],
    ring_before: Callable[[str, int], int | None],
) -> list[Event]:
    """The events an audit record stands for (most stand for none).
    ``first_order_of_ring(campaign, ring)``: that ring's first patch order;
    ``ring_before(campaign, ring)``: the ring before it in the rollout."""
    entry = record.entry
    at = entry.at.isoformat()
    kind = CAMPAIGN_ACTIONS.get(entry.action)
    if kind is not None:
        fields: dict[str, object] = {}
        if kind == "campaign.halted":
            fields["reason"] = entry.detail
        elif kind == "campaign.resumed":
            fields["accepted"] = entry.detail
        elif kind == "campaign.aborted":
            fields["revert"] = entry.detail.startswith("and revert")
        return [Event(f"{record.seq}:{kind}", kind, entry.target, at, entry.actor, fields)]
    if entry.action not in _PATCH_ACTIONS:
        return []
    match = _ASSIGNED.match(entry.detail)
    if match is None:
        return []
    campaign, ring = match["campaign"], int(match["ring"])
    if first_order_of_ring(campaign, ring) != entry.target:
        return []
    found = []
    before = ring_before(campaign, ring)
    if before is not None:
        found.append(Event(f"{record.seq}:ring.promoted", "ring.promoted", campaign, at,
                           entry.actor, {"ring": before, "next_ring": ring}))  # fmt: skip
    started: dict[str, object] = {"ring": ring}
    found.append(Event(f"{record.seq}:ring.started", "ring.started", campaign, at, entry.actor,
                       started))  # fmt: skip
    return found
