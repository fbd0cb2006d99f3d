"""The controller's event metrics: what happens (check-ins, store batches,
results, halts) counted as it happens, in a registry of the controller's
own (never prometheus_client's global one: two controllers in one test
process must not share counts).

The state metrics (campaigns, hosts) are not here: `collector` reads them
from the kept counts at scrape time.
"""

from __future__ import annotations

from datetime import datetime

from fleetpatch.orderspec import OrderState
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.campaigns.gates import HaltKind
from controller.metrics.presence import Presence
from controller.model import PATCHED, AssignmentKind, AssignmentStatus

# Time from the agent's APPLY report to its verified final report (M6): the
# seed's target is ten minutes; a reboot can take far longer.
VERIFY_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_APPLY = OrderState.APPLY.value
_VERIFIED = PATCHED


class Metrics:
    """Everything the controller measures; one per controller, passed in."""

    def __init__(self, presence: Presence, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.presence = presence
        r = self.registry
        self.checkin_seconds = Histogram(
            "fleetpatch_checkin_duration_seconds",
            "Time to answer an agent check-in (durable write and campaign decision included).",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "fleetpatch_store_checkin_batch_size",
            "Check-ins written per store transaction (group commit).",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "fleetpatch_store_checkin_commit_seconds",
            "Time to write one batch of check-ins to the store.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.halts = Counter(
            "fleetpatch_campaign_halts",
            "Campaigns halted by the controller, by what breached.",
            ["kind"], registry=r,
        )  # fmt: skip
        for halt in HaltKind:
            self.halts.labels(halt.value)
        self.results = Counter(
            "fleetpatch_order_results",
            "Orders that got a final status (rollbacks: status reverted or revert_failed).",
            ["kind", "status"], registry=r,
        )  # fmt: skip
        for kind in AssignmentKind:
            for status in AssignmentStatus:
                if status is not AssignmentStatus.IN_FLIGHT:
                    self.results.labels(kind.value, status.value)
        self.apply_to_verified = Histogram(
            "fleetpatch_apply_to_verified_seconds",
            "Time from a host's APPLY report to its verified final report (M6).",
            buckets=VERIFY_BUCKETS, registry=r,
        )  # fmt: skip
        self._applied_at: dict[str, datetime] = {}  # order id -> its APPLY report's time
        self.certificate_ends = Gauge(
            "fleetpatch_certificate_not_after_timestamp_seconds",
            "When the certificate this controller serves with (server) and the fleet CA "
            "agents trust (ca) end, as Unix time.",
            ["certificate"], registry=r,
        )  # fmt: skip

    def halted(self, kind: str) -> None:
        self.halts.labels(kind).inc()

    def reported(self, order_id: str, step: str, at: datetime) -> None:
        """A progress report of an order in flight (not final)."""
        if step == _APPLY:
            self._applied_at.setdefault(order_id, at)

    def finished(self, order_id: str, kind: AssignmentKind, status: AssignmentStatus,
                 at: datetime) -> None:  # fmt: skip
        """An order got its final status (a result or a time-out)."""
        self.results.labels(str(kind), status.value).inc()
        applied = self._applied_at.pop(order_id, None)
        if applied is not None and status in _VERIFIED:
            self.apply_to_verified.observe(max(0.0, (at - applied).total_seconds()))
