"""agent.link.reporting: queued reports reach the controller, and one it
rejects as invalid never blocks the ones behind it."""

from __future__ import annotations

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.errors import ControllerUnavailable, Rejected
from agent.link import convert, reporting
from agent.orders import journal as journal_module
from agent.orders.journal import Journal


class Controller:
    """Rejects any call carrying a report of a poisoned order; may be down."""

    def __init__(self, poisoned: set[str]) -> None:
        self.poisoned = poisoned
        self.down = False
        self.stored: list[str] = []

    def report_progress(
        self, request: agent_pb2.ReportProgressRequest
    ) -> agent_pb2.ReportProgressResponse:
        if self.down:
            raise ControllerUnavailable("cannot reach the controller at c:1")
        if any(r.order_id in self.poisoned for r in request.reports):
            raise Rejected("the controller rejected it as invalid: bad report")
        self.stored += [r.idempotency_key for r in request.reports]
        return agent_pb2.ReportProgressResponse(
            acknowledged_keys=[r.idempotency_key for r in request.reports]
        )


def _refusal(order_id: str) -> journal_module.MakeReport:
    return lambda key: convert.progress_report(key, order_id, "REFUSED", "x", final=True)


def _queue(journal: Journal, order_ids: list[str]) -> list[str]:
    for order_id in order_ids:
        journal.refuse(order_id, "bad-signature", "x", _refusal(order_id))
    return [key for key, _ in journal.pending_reports()]


def test_a_rejected_report_is_dropped_and_the_rest_delivered(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    keys = _queue(journal, ["o-1", "o-bad", "o-2", "o-3"])
    controller = Controller({"o-bad"})
    assert reporting.Reports(journal, controller).flush() == 3  # type: ignore[arg-type]
    assert journal.pending_reports() == []
    dropped = journal.dropped_reports()
    assert [key for key, _ in dropped] == [keys[1]]
    assert "rejected it as invalid" in dropped[0][1]
    assert controller.stored == [keys[0], keys[2], keys[3]]


def test_reports_stay_queued_while_the_controller_is_down(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    _queue(journal, ["o-bad", "o-1"])
    controller = Controller({"o-bad"})
    controller.down = True
    assert reporting.Reports(journal, controller).flush() == 0  # type: ignore[arg-type]
    assert len(journal.pending_reports()) == 2
    assert journal.dropped_reports() == []
    controller.down = False
    assert reporting.Reports(journal, controller).flush() == 1  # type: ignore[arg-type]
    assert journal.pending_reports() == []
    assert len(journal.dropped_reports()) == 1


def test_an_old_journal_gains_the_dropped_column(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    journal.close()
    again = Journal.open(tmp_path / "journal.db")  # migrations run once, in order
    assert again.dropped_reports() == []
    assert (
        types_pb2.ProgressReport.FromString(
            convert.progress_report("k", "o", "REFUSED", "x", final=True)
        ).order_id
        == "o"
    )
