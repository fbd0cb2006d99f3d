"""Send queued progress reports until the controller has acknowledged them.

Reports wait in the journal; a controller that is down only delays them.
The controller stores each idempotency key once, so sending one twice
(after a crash between sending and recording the acknowledgement) is safe.

A report the controller rejects as invalid can never be delivered: sent
oldest first, it would hold back every report behind it for good. When a
batch is rejected, its reports are sent one at a time; the one rejected on
its own is dropped from the queue (the journal keeps it, and why) with a
warning, and the rest go on.
"""

from __future__ import annotations

import logging

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.errors import AgentError, Rejected
from agent.link.client import ControllerClient
from agent.orders.journal import Journal

log = logging.getLogger(__name__)
BATCH = 100


def flush(journal: Journal, client: ControllerClient) -> int:
    """Send every pending report; returns how many were acknowledged.
    Stops quietly (the reports stay queued) when the controller cannot be
    reached or refuses."""
    sent = 0
    while pending := journal.pending_reports(BATCH):
        try:
            acked = _send(journal, client, pending)
        except Rejected:
            delivered, stopped = _one_by_one(journal, client, pending)
            sent += delivered
            if stopped:
                return sent
            continue
        except AgentError as exc:
            log.info("%d progress report(s) stay queued: %s", len(pending), exc)
            return sent
        sent += acked
        if acked < len(pending):
            log.warning("the controller acknowledged %d of %d reports", acked, len(pending))
            return sent
    return sent


def _send(journal: Journal, client: ControllerClient, pending: list[tuple[str, bytes]]) -> int:
    """Send these queued reports in one call and mark what the controller
    acknowledged; returns how many. Raises the client's AgentErrors."""
    request = agent_pb2.ReportProgressRequest(
        reports=[types_pb2.ProgressReport.FromString(payload) for _, payload in pending]
    )
    acked = list(client.report_progress(request).acknowledged_keys)
    journal.ack_reports(acked)
    return len(acked)


def _one_by_one(
    journal: Journal, client: ControllerClient, pending: list[tuple[str, bytes]]
) -> tuple[int, bool]:
    """Send a rejected batch report by report, dropping those rejected alone.
    Returns how many were acknowledged, and whether to stop (the controller
    became unreachable or refused us: the rest stays queued)."""
    sent = 0
    for key, payload in pending:
        try:
            sent += _send(journal, client, [(key, payload)])
        except Rejected as exc:
            log.warning("progress report %s dropped from the queue: %s", key, exc)
            journal.drop_report(key, str(exc))
        except AgentError as exc:
            log.info("progress reports stay queued: %s", exc)
            return sent, True
    return sent, False
