"""Send queued progress reports until the controller has acknowledged them.

Reports wait in the journal; a controller that is down only delays them.
The controller stores each idempotency key once, so sending one twice
(after a crash between sending and recording the acknowledgement) is safe.
"""

from __future__ import annotations

import logging

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.errors import AgentError
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
        request = agent_pb2.ReportProgressRequest(
            reports=[types_pb2.ProgressReport.FromString(payload) for _, payload in pending]
        )
        try:
            response = client.report_progress(request)
        except AgentError as exc:
            log.info("%d progress report(s) stay queued: %s", len(pending), exc)
            return sent
        acked = list(response.acknowledged_keys)
        journal.ack_reports(acked)
        sent += len(acked)
        if len(acked) < len(pending):
            log.warning("the controller acknowledged %d of %d reports", len(acked), len(pending))
            return sent
    return sent
