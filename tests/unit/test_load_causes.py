"""`fleetpatch-sim load` counts a failed call under its cause: a CANCELLED
the server sent (gRPC core cancelling calls past its backlog) apart from
one the generator made, and its own deadline apart from the server's
refusals."""

from __future__ import annotations

import grpc
import pytest

from controller.api import limits
from controller.api.server import server_options
from simulator.load import Tally, cause


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


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
