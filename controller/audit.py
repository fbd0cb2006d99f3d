"""The audit trail: an append-only, hash-chained record of every admin
action, approval, assignment, result, refusal and halt.

Each record's hash covers the previous record's hash and the record's own
fields in a canonical form, so editing, deleting or reordering any record
breaks the chain at that point, and `verify` names the first broken one.
Cutting records off the tail, or rewriting the whole chain from some
point on, leaves a chain that verifies; a signed checkpoint kept outside
the database (controller/checkpoint.py) catches both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """What is recorded, before it is chained."""

    at: datetime
    actor: str  # "admin:NAME", "host:ID" or "controller"
    action: str  # "campaign.approve", "order.assign", "campaign.halt", ...
    target: str  # what it acted on: a campaign, host or order id
    outcome: str  # "ok", "refused", "halted", a result name
    detail: str = ""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    entry: AuditEntry
    prev_hash: str
    hash: str


def record_hash(seq: int, entry: AuditEntry, prev_hash: str) -> str:
    canonical = json.dumps(
        [seq, entry.at.isoformat(), entry.actor, entry.action, entry.target, entry.outcome,
         entry.detail, prev_hash],
        separators=(",", ":"),
        ensure_ascii=False,
    )  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain(seq: int, entry: AuditEntry, prev_hash: str) -> AuditRecord:
    return AuditRecord(seq, entry, prev_hash, record_hash(seq, entry, prev_hash))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    first_broken: int | None = None
    problem: str = ""


class ChainWalk:
    """`verify`, fed a page at a time, so that a long trail is never held
    in memory at once."""

    def __init__(self) -> None:
        self._prev, self._seq, self._count = GENESIS, 1, 0
        self._broken: Verdict | None = None

    @property
    def ok(self) -> bool:
        """No broken link so far (feeding more after one changes nothing)."""
        return self._broken is None

    def feed(self, records: Iterable[AuditRecord]) -> None:
        """The next records, in stored order."""
        if self._broken is not None:
            return
        for record in records:
            self._count += 1
            self._broken = self._check(record)
            if self._broken is not None:
                return
            self._prev, self._seq = record.hash, self._seq + 1

    def verdict(self) -> Verdict:
        return self._broken or Verdict(True, self._count)

    def _check(self, record: AuditRecord) -> Verdict | None:
        count = self._count
        if record.seq != self._seq:
            what = "missing" if record.seq > self._seq else "out of order"
            return Verdict(
                False, count, record.seq,
                f"record {record.seq} follows {self._seq - 1}: record(s) {what}",
            )  # fmt: skip
        if record.prev_hash != self._prev:
            return Verdict(
                False, count, record.seq,
                f"record {record.seq} does not link to record {record.seq - 1} "
                "(a record before it was changed, removed or reordered)",
            )  # fmt: skip
        if record_hash(record.seq, record.entry, record.prev_hash) != record.hash:
            return Verdict(False, count, record.seq, f"record {record.seq} was edited")
        return None


def verify(records: Iterable[AuditRecord]) -> Verdict:
    """Walk the chain in stored order; name the first record that breaks it."""
    walk = ChainWalk()
    walk.feed(records)
    return walk.verdict()
