"""The audit trail: an append-only, hash-chained record of every admin
action, approval, assignment, result, refusal and halt.

Each record's hash covers the previous record's hash and the record's own
fields in a canonical form, so editing, deleting or reordering any record
breaks the chain at that point, and `verify` names the first broken one.
(Rewriting the whole chain from some point on needs write access to the
database; export it regularly to somewhere else to catch that too.)
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


def verify(records: Iterable[AuditRecord]) -> Verdict:
    """Walk the chain in stored order; name the first record that breaks it."""
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for record in records:
        count += 1
        if record.seq != expected_seq:
            what = "missing" if record.seq > expected_seq else "out of order"
            return Verdict(
                False, count, record.seq,
                f"record {record.seq} follows {expected_seq - 1}: record(s) {what}",
            )  # fmt: skip
        if record.prev_hash != expected_prev:
            return Verdict(
                False, count, record.seq,
                f"record {record.seq} does not link to record {record.seq - 1} "
                "(a record before it was changed, removed or reordered)",
            )  # fmt: skip
        if record_hash(record.seq, record.entry, record.prev_hash) != record.hash:
            return Verdict(False, count, record.seq, f"record {record.seq} was edited")
        expected_prev, expected_seq = record.hash, expected_seq + 1
    return Verdict(True, count)
