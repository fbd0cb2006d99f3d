"""Send queued progress reports until the controller has acknowledged them.

Reports wait in the journal; a controller that is down only delays them.
The controller stores each idempotency key once, so sending one twice
(after a crash between sending and recording the acknowledgement) is safe.

A report the controller rejects as invalid can never be delivered: sent
oldest first, it would hold back every report behind it for good. When a
batch is rejected, its reports are sent one at a time; the one rejected on
its own is dropped from the queue (the journal keeps it, and why) with a
warning, and the rest go on.

An overloaded controller (RESOURCE_EXHAUSTED) is left alone for at least
the delay it asked for, spread over once to twice that so a fleet does not
come back at once; said once per episode, not at every attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.errors import AgentError, Overloaded, Rejected
from agent.link.backoff import overload_delay
from agent.link.client import ControllerClient
from agent.orders.journal import Journal

log = logging.getLogger(__name__)
BATCH = 100


class Reports:
    """Sends queued reports, holding back while the controller said it is
    overloaded. ``clock``: monotonic seconds."""

    def __init__(
        self,
        journal: Journal,
        client: ControllerClient,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._journal = journal
        self._client = client
        self._clock = clock
        self._rng = rng or random.Random()
        self._not_before = 0.0
        self._overloaded = False

    def flush(self) -> int:
        """Send every pending report (unless the controller asked us to
        wait); returns how many were acknowledged."""
        if self._clock() < self._not_before:
            return 0
        try:
            sent = _flush(self._journal, self._client)
        except Overloaded as exc:
            wait = overload_delay(exc.retry_after, self._rng)
            self._not_before = self._clock() + (wait or 0.0)
            if not self._overloaded:
                log.warning("progress reports stay queued, %s; sending again in %.0fs at the "
                            "earliest", exc, wait or 0.0)  # fmt: skip
            self._overloaded = True
            return 0
        self._overloaded = False
        return sent


def _flush(journal: Journal, client: ControllerClient) -> int:
    """Send every pending report; returns how many were acknowledged.
    Stops quietly (the reports stay queued) when the controller cannot be
    reached or refuses; raises Overloaded (for `Reports` to hold back)."""
    sent = 0
    while pending := journal.pending_reports(BATCH):
        try:
            acked = _send(journal, client, pending)
        except Overloaded:
            raise
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
        except Overloaded:
            raise
        except AgentError as exc:
            log.info("progress reports stay queued: %s", exc)
            return sent, True
    return sent, False
