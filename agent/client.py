"""The agent's gRPC connection to the controller. gRPC errors become agent
errors here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from .errors import AgentError, ControllerUnavailable, Refused

_T = TypeVar("_T")
TIMEOUT_SECONDS = 30.0
_OPTIONS = [
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.enable_retries", 0),  # the agent retries with its own backoff
]


def _call(address: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or code.name
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ControllerUnavailable(
                f"cannot reach the controller at {address}: {details}"
            ) from None
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise Refused(f"the controller refused: {details}") from None
        raise AgentError(f"the controller answered {code.name}: {details}") from None


def enroll_call(
    address: str, ca_pem: bytes, request: agent_pb2.EnrollRequest
) -> agent_pb2.EnrollResponse:
    """Enroll over server-authenticated TLS (we have no certificate yet)."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(address, creds, options=_OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return _call(address, lambda: stub.Enroll(request, timeout=TIMEOUT_SECONDS))


class ControllerClient:
    """Mutual-TLS calls as this host."""

    def __init__(self, address: str, ca_pem: bytes, key_pem: bytes, cert_pem: bytes) -> None:
        self.address = address
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channel = grpc.secure_channel(address, creds, options=_OPTIONS)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def check_in(self, request: agent_pb2.CheckInRequest) -> agent_pb2.CheckInResponse:
        return _call(self.address, lambda: self._stub.CheckIn(request, timeout=TIMEOUT_SECONDS))

    def report_progress(
        self, request: agent_pb2.ReportProgressRequest
    ) -> agent_pb2.ReportProgressResponse:
        return _call(
            self.address, lambda: self._stub.ReportProgress(request, timeout=TIMEOUT_SECONDS)
        )
