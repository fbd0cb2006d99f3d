"""`fleetpatch-sim load` counts a failed call under its cause: a CANCELLED
the server sent (gRPC core cancelling calls past its backlog) apart from
one the generator made, and its own deadline apart from the server's
refusals."""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from fleetpatch.overload import retry_after_trailer
from fleetpatch.v1 import types_pb2

from controller.api import limits
from controller.api.server import server_options
from simulator.load import Tally, _report, cause


def _error(
    code: grpc.StatusCode, details: str, trailer: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailer), details, None
    )


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.CANCELLED, "CANCELLED", "CANCELLED (by the server)"),
        (grpc.StatusCode.CANCELLED, "Locally cancelled by application!",
         "CANCELLED (by this generator)"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded",
         "DEADLINE_EXCEEDED (the generator's 60 s deadline)"),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", "UNAVAILABLE (connection failed or lost)"),
        (grpc.StatusCode.INTERNAL, "boom", "INTERNAL"),
    ],
)  # fmt: skip
def test_each_failure_is_named_by_its_cause(code, details, expected):
    assert cause(_error(code, details)) == expected


@pytest.mark.parametrize("seed", range(20))
def test_a_controller_whose_database_is_down_is_waited_out_as_an_agent_does(seed):
    """UNAVAILABLE with a retry delay is the controller's own answer while
    its database is down, not a lost connection: counted under that cause,
    and the next check-in waits between once and twice the delay, as the
    agent's does (agent.link.backoff.overload_delay), instead of coming
    back within a second and a half."""
    rng = random.Random(seed)
    tally = Tally()
    down = _error(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; try again shortly",
                  retry_after_trailer(5.0))  # fmt: skip
    assert 5.0 <= tally.failed(down, True, rng) <= 10.0
    lost = _error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert 0.5 <= tally.failed(lost, True, rng) <= 1.5
    assert tally.errors == {
        "UNAVAILABLE (the database down: answered with a retry delay, waited out)": 1,
        "UNAVAILABLE (connection failed or lost)": 1,
    }
    assert tally.shed == 0


def test_the_tally_keeps_an_example_per_cause_and_call():
    tally = Tally()
    tally.error(_error(grpc.StatusCode.CANCELLED, "CANCELLED"))
    tally.error(_error(grpc.StatusCode.CANCELLED, "CANCELLED"), "report")
    tally.error(_error(grpc.StatusCode.CANCELLED, "CANCELLED"))
    assert tally.errors == {"CANCELLED (by the server)": 2, "report CANCELLED (by the server)": 1}
    assert tally.details["CANCELLED (by the server)"] == "CANCELLED"


def test_the_controller_keeps_a_herd_sized_backlog_of_calls_not_yet_taken_up():
    options = dict(server_options(100_000))
    assert options["grpc.server.max_pending_requests"] == limits.MAX_PENDING_CALLS >= 10_000
    assert options["grpc.server.max_pending_requests_hard_limit"] == limits.MAX_PENDING_CALLS_HARD


@pytest.mark.parametrize(
    ("trailer", "shed", "errors"),
    [
        (retry_after_trailer(2.0), 1, {}),
        ((), 0, {"report RESOURCE_EXHAUSTED (shed without a retry delay)": 1}),
    ],
)
def test_a_report_shed_with_a_retry_delay_is_kept_for_later_not_an_error(trailer, shed, errors):
    """A loaded controller sheds report calls as it sheds check-ins: with a
    retry delay, which is load handled as designed, not an error; the
    reports are kept and sent again, as an agent does."""

    async def refused(request: object, timeout: float) -> None:
        raise _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailer)

    report = types_pb2.ProgressReport(order_id="o-1", step="SUCCEEDED")
    agent = SimpleNamespace(
        pending=[(time.monotonic() - 1, report)], stub=SimpleNamespace(ReportProgress=refused)
    )
    tally = Tally()
    asyncio.run(_report(cast(Any, agent), tally))
    assert tally.reports_shed == shed
    assert tally.errors == errors
    assert len(agent.pending) == 1  # kept, to be sent again
    assert tally.reports == 0
