"""What the admin client takes and sends: answers as large as the
controller builds; a message over gRPC's size limit said as such, not as
"busy, retry later"; an id longer than any refused before it is sent.
And the controller's side: a peer's words quoted short (`limits`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from fleetpatch.overload import RETRY_AFTER_KEY

from controller.api import limits
from controller.cli.admin_client import _OPTIONS, AdminClient, check_id, exit_code_for
from controller.errors import ControllerUnavailable, FleetpatchError, UsageError


class _Exhausted(grpc.RpcError):
    def __init__(self, details: str, retry_after: str | None = None) -> None:
        self._details, self._retry_after = details, retry_after

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return () if self._retry_after is None else ((RETRY_AFTER_KEY, self._retry_after),)


def _client() -> AdminClient:
    admin = object.__new__(AdminClient)
    admin.addresses, admin.address = ["a:1"], "a:1"
    admin._channel, admin._stubs = None, None
    return admin


@pytest.mark.parametrize(
    ("details", "kind", "code", "said"),
    [
        ("CLIENT: Received message larger than max (5000000 vs. 4194304)", FleetpatchError, 1,
         "the controller's answer is larger than this CLI takes (5000000 bytes, at most 4194304)"),
        ("CLIENT: Sent message larger than max (17000000 vs. 16777216)", UsageError, 2,
         "the request is larger than the controller takes (17000000 bytes, at most 16777216)"),
        ("SERVER: Received message larger than max (17000000 vs. 16777216)", UsageError, 2,
         "the request is larger than the controller takes (17000000 bytes, at most 16777216)"),
        ("SERVER: Sent message larger than max (9 vs. 8)", FleetpatchError, 1,
         "the controller's answer is larger than it may send (9 bytes, at most 8)"),
    ],
)  # fmt: skip
def test_a_message_over_the_size_limit_is_not_busy(details, kind, code, said):
    # was: ControllerUnavailable, exit 3, "retry later"
    error = _client()._error(_Exhausted(details))
    assert type(error) is kind
    assert (error.exit_code, str(error)) == (code, said)


def test_a_busy_controller_is_still_busy():
    error = _client()._error(_Exhausted("the controller is busy; retry later", "5"))
    assert isinstance(error, ControllerUnavailable)
    assert error.exit_code == exit_code_for(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3


@pytest.fixture
def large_answers() -> Iterator[str]:
    """A gRPC server whose one method answers 6 MiB."""

    def answer(request: bytes, context: object) -> bytes:
        return b"x" * (6 * 1024 * 1024)

    handler = grpc.method_handlers_generic_handler(
        "test.Large", {"Get": grpc.unary_unary_rpc_method_handler(answer)}
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _get(channel: grpc.Channel) -> bytes:
    call = channel.unary_unary("/test.Large/Get", None, None)
    answer: bytes = call(b"", timeout=30)
    return answer


def test_the_channel_takes_answers_larger_than_grpcs_default(large_answers):
    assert dict(_OPTIONS)["grpc.max_receive_message_length"] >= limits.MAX_MESSAGE_BYTES
    with grpc.insecure_channel(large_answers) as default:
        with pytest.raises(grpc.RpcError) as refused:
            _get(default)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(large_answers, options=_OPTIONS) as channel:
        assert len(_get(channel)) == 6 * 1024 * 1024


def test_an_id_longer_than_any_is_refused_before_it_is_sent():
    assert check_id("h-" + "0" * 126, "host id") == "h-" + "0" * 126
    with pytest.raises(UsageError) as refused:
        check_id("a" * 20000, "host id")
    said = str(refused.value)
    assert (
        said == f"host id '{'a' * 97}...' is 20000 characters long: no host id is longer than 128"
    )


def test_a_peers_id_is_quoted_short_and_on_one_line():
    assert limits.quoted_id("h-1") == "'h-1'"
    assert limits.quoted_id("a" * 20000) == f"'{'a' * 97}...'"
    assert limits.quoted_id("x\ny") == "'x y'"


def test_a_refusals_text_stays_small_enough_for_grpc_to_deliver():
    short = "no host 'h-1'"
    assert limits.status_text(short) == short
    ascii_text = limits.status_text("no vulnerability named '" + "a" * 20000 + "'")
    assert len(ascii_text) == limits.MAX_STATUS_TEXT
    wide = limits.status_text("no vulnerability named '" + "\U0001f600" * 20000 + "'")
    assert len(wide.encode()) <= limits.MAX_STATUS_TEXT
    assert "\n" not in limits.status_text("line one\nline two")


@pytest.mark.parametrize("uses", ["-1", "4294967296"])
def test_token_uses_outside_the_field_are_one_line_naming_the_option(tmp_path, uses):
    """Before: protobuf's own words, 'Value out of range: -1'."""
    from tests.support.controller import BIN

    done = subprocess.run(
        [str(BIN / "fleetpatch"), "token", "create", "--region", "eu", "--ring", "0",
         "--uses", uses, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'--uses'" in lines[0]
    assert "0<=x<=4294967295" in lines[0]
