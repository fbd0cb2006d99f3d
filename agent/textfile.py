"""The agent's metrics as a node_exporter textfile (issue 16).

An agent opens no port on its host: it writes `fleetpatch.prom` where
node_exporter's textfile collector reads (`--collector.textfile.directory`),
and node_exporter serves it with the host's other metrics. The path is
`[metrics] textfile` of agent.toml; unset, nothing is written.

Everything in the file is read from the journal, which already holds it
(check-in state, orders, their steps with times), so the file can be
rewritten at any moment and says the same as `fleetpatch-agent status`.
The agent rewrites it after every check-in attempt and every state entry
of an order. Written atomically (temp file, fsync, rename): node_exporter
never reads half a file. Labels are bounded: the campaign and the state of
the newest order, never the order id (a new series per order).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from fleetpatch.atomicfile import write_atomic
from fleetpatch.orderspec import OrderState

from agent.orders.journal import Journal, OrderRecord, Step

log = logging.getLogger(__name__)

_TERMINAL = {
    OrderState.SUCCEEDED, OrderState.PENDING_REBOOT, OrderState.PENDING_RESTART,
    OrderState.REVERTED, OrderState.REVERT_FAILED, OrderState.FAILED,
}  # fmt: skip
_VERIFIED = {
    OrderState.SUCCEEDED.value, OrderState.PENDING_REBOOT.value, OrderState.PENDING_RESTART.value,
}  # fmt: skip
# Orders looked at for the last verification: the newest may not have one
# (refused, failed in precheck, nothing to do).
_RECENT = 5


def _ts(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_: str, value: float, labels: str = "") -> Iterator[str]:
    yield f"# HELP {name} {help_}"
    yield f"# TYPE {name} gauge"
    yield f"{name}{labels} {value:.17g}"


def _last_verify(journal: Journal, orders: list[OrderRecord]) -> tuple[Step, Step] | None:
    """The newest finished verification: its VERIFY step and the step after."""
    for order in orders:
        steps = journal.steps(order.order_id)
        pairs = list(itertools.pairwise(steps))
        for entered, left in reversed(pairs):
            if entered.state == OrderState.VERIFY.value:
                return entered, left
    return None


def render(journal: Journal) -> str:
    """The textfile's content, from the journal."""
    checkin = journal.checkin_state()
    lines: list[str] = []
    lines += _gauge(
        "fleetpatch_agent_last_checkin_timestamp_seconds",
        "When the agent last tried to check in (Unix time; 0: never).",
        _ts(checkin.last_attempt),
    )
    ok = checkin.last_attempt is not None and not checkin.last_error
    lines += _gauge(
        "fleetpatch_agent_last_checkin_success",
        "1 when the last check-in attempt succeeded, else 0.", float(ok),
    )  # fmt: skip
    lines += _gauge(
        "fleetpatch_agent_last_successful_checkin_timestamp_seconds",
        "When the agent last checked in successfully (Unix time; 0: never).",
        _ts(checkin.last_success),
    )
    orders = journal.orders(limit=_RECENT)
    newest = orders[0] if orders else None
    if newest is not None:
        state = OrderState(newest.state)
        labels = f'{{campaign="{_escape(newest.campaign_id)}",state="{_escape(newest.state)}"}}'
        lines += _gauge(
            "fleetpatch_agent_order_state",
            "1 for the step the newest work order is in (or ended in).", 1.0, labels,
        )  # fmt: skip
        lines += _gauge(
            "fleetpatch_agent_order_sequence", "The newest work order's sequence number.",
            float(newest.sequence),
        )  # fmt: skip
        lines += _gauge(
            "fleetpatch_agent_order_in_progress",
            "1 while the newest work order has not reached a final state.",
            float(state not in _TERMINAL),
        )
        lines += _gauge(
            "fleetpatch_agent_order_updated_timestamp_seconds",
            "When the newest work order last changed state (Unix time).",
            _ts(newest.updated_at),
        )
    pending = newest is not None and newest.state == OrderState.PENDING_REBOOT.value
    lines += _gauge(
        "fleetpatch_agent_pending_reboot",
        "1 when the newest order was verified with a reboot still owed.", float(pending),
    )  # fmt: skip
    restart = newest is not None and newest.state == OrderState.PENDING_RESTART.value
    lines += _gauge(
        "fleetpatch_agent_pending_restart",
        "1 when the newest order was verified with services still running replaced code.",
        float(restart),
    )  # fmt: skip
    verify = _last_verify(journal, orders)
    if verify is not None:
        entered, left = verify
        lines += _gauge(
            "fleetpatch_agent_last_verify_success",
            "1 when the last verification passed, 0 when it failed (the update was reverted).",
            float(left.state in _VERIFIED),
        )
        lines += _gauge(
            "fleetpatch_agent_last_verify_duration_seconds",
            "How long the last verification took, retries included.",
            max(0.0, (left.entered_at - entered.entered_at).total_seconds()),
        )
        lines += _gauge(
            "fleetpatch_agent_last_verify_timestamp_seconds",
            "When the last verification ended (Unix time).", _ts(left.entered_at),
        )  # fmt: skip
    return "\n".join(lines) + "\n"


class Textfile:
    """Rewrites the textfile at ``path`` from ``journal`` on `write`."""

    def __init__(self, path: Path, journal: Journal) -> None:
        self._path = path
        self._journal = journal

    def write(self) -> None:
        """Rewrite the file. A failure is logged, never raised: metrics must
        not stop an agent that is patching."""
        try:
            write_atomic(self._path, render(self._journal).encode(), mode=0o644)
        except OSError as exc:
            log.warning("cannot write the metrics textfile %s: %s", self._path, exc.strerror)
