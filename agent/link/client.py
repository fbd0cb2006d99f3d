"""The agent's gRPC connection to the controller. gRPC errors become agent
errors here and nowhere else."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
from fleetpatch.addresses import AddressError, split_addresses
from fleetpatch.logline import quoted
from fleetpatch.overload import retry_after
from fleetpatch.push import WATCH_OPEN
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from agent.errors import (
    AgentError,
    ConfigError,
    ControllerUnavailable,
    Overloaded,
    Refused,
    Rejected,
    TooLarge,
    TransientError,
)
from agent.link.backoff import overload_delay

log = logging.getLogger(__name__)
_T = TypeVar("_T")
TIMEOUT_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 600.0  # a whole agent package, on a slow link
FETCH_PATIENCE_SECONDS = 900.0  # how long a busy controller is waited for
DEFAULT_OVERLOAD_WAIT = 10.0  # when a busy controller does not say how long
_OPTIONS = [
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.enable_retries", 0),  # the agent retries with its own backoff
]


# Answers of a controller in trouble that may pass (a call cut off while it
# restarts or sheds a herd, a server error): retried with backoff, never a
# reason for the service to stop.
_PASSING = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
})  # fmt: skip


# gRPC's own words when a message passes a side's size limit ("CLIENT:" or
# "SERVER:" says whose, "Received"/"Sent" which way): RESOURCE_EXHAUSTED,
# like an overloaded controller's answer, but sending again cannot help.
_SIZE_LIMIT = re.compile(
    r"(?:(CLIENT|SERVER): )?(Received|Sent) message larger than max "
    r"\((\d{1,20}) vs\. (\d{1,20})\)"
)


def _too_large(address: str, details: str) -> TooLarge | None:
    """The error for a message larger than gRPC's size limit on either side,
    from the status's ``details``; None when they say something else."""
    found = _SIZE_LIMIT.search(details)
    if found is None:
        return None
    side, way, size, limit = found.groups()
    sizes = f"({size} bytes, at most {limit})"
    if (side, way) == ("CLIENT", "Received"):
        what = f"the answer of the controller at {address} is larger than this agent accepts"
    elif (side, way) == ("SERVER", "Sent"):
        what = f"the controller at {address} cannot send its answer: larger than it may send"
    elif (side, way) == ("SERVER", "Received"):
        what = f"this agent's request is larger than the controller at {address} accepts"
    elif (side, way) == ("CLIENT", "Sent"):
        what = "this agent's request is larger than this agent may send"
    else:  # a gRPC that does not say whose limit it was
        what = f"a message to or from the controller at {address} is larger than gRPC accepts"
    return TooLarge(f"{what} {sizes}")


def _call(address: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        # The controller's words (or gRPC's): one line, cut short, before
        # they go into a message that is printed, journaled and logged.
        details = quoted(exc.details() or code.name)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            trailing = getattr(exc, "trailing_metadata", lambda: None)()
            raise ControllerUnavailable(
                f"cannot reach the controller at {address}: {details}", retry_after(trailing)
            ) from None
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise Refused(f"the controller refused: {details}") from None
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            too_large = _too_large(address, details)
            if too_large is not None:
                raise too_large from None
            trailing = getattr(exc, "trailing_metadata", lambda: None)()
            raise Overloaded(
                f"the controller at {address} is overloaded: {details}", retry_after(trailing)
            ) from None
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            raise Rejected(f"the controller rejected it as invalid: {details}") from None
        if code in _PASSING:
            raise TransientError(f"the controller answered {code.name}: {details}") from None
        raise AgentError(f"the controller answered {code.name}: {details}") from None


def patiently(
    call: Callable[[], _T],
    patience: float,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> _T:
    """``call()``, asked again while the controller answers Overloaded, each
    time after the delay it asks for (`overload_delay`), for at most
    ``patience`` seconds; then the last Overloaded is raised."""
    rng = rng or random.Random()
    deadline = clock() + patience
    while True:
        try:
            return call()
        except Overloaded as exc:
            wait = overload_delay(exc.retry_after, rng) or DEFAULT_OVERLOAD_WAIT
            if clock() + wait > deadline:
                raise
            log.info("%s; asking again in %.0fs", exc, wait)
            sleep(wait)


def enroll_call(
    address: str, ca_pem: bytes, request: agent_pb2.EnrollRequest
) -> agent_pb2.EnrollResponse:
    """Enroll over server-authenticated TLS (we have no certificate yet)."""
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(address, creds, options=_OPTIONS) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return _call(address, lambda: stub.Enroll(request, timeout=TIMEOUT_SECONDS))


class ControllerClient:
    """Mutual-TLS calls as this host.

    ``address`` may list several controller replicas, comma-separated
    ("ctl-a:7443,ctl-b:7443"; they share one database): calls go to one,
    and to the next when it cannot be reached (not when it answers that its
    database is down: the others share it)."""

    def __init__(self, address: str, ca_pem: bytes, key_pem: bytes, cert_pem: bytes) -> None:
        try:
            self.addresses = split_addresses(address)
        except AddressError as exc:
            raise ConfigError(f"controller address: {exc}") from None
        self.address = self.addresses[0]
        self._ca_pem = ca_pem
        self._connect(key_pem, cert_pem)

    def retrust(self, ca_pem: bytes) -> None:
        """Verify the controller with these CA certificates from now on (a
        CA rotation: the new CA is taken, or the old one dropped)."""
        self._ca_pem = ca_pem
        self._channel.close()
        self._connect(self._key_pem, self._cert_pem)

    def _connect(self, key_pem: bytes, cert_pem: bytes) -> None:
        self._key_pem, self._cert_pem = key_pem, cert_pem
        creds = grpc.ssl_channel_credentials(
            root_certificates=self._ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channel = grpc.secure_channel(self.address, creds, options=_OPTIONS)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def reload(self, key_pem: bytes, cert_pem: bytes) -> None:
        """Call as the host with this key and certificate from now on (a
        renewed certificate)."""
        self._channel.close()
        self._connect(key_pem, cert_pem)

    def _ask(self, call: Callable[[agent_pb2_grpc.AgentServiceStub], _T]) -> _T:
        """``call(stub)`` on this replica, or on the next ones while the
        ones asked cannot be reached; the last error when none can."""
        for attempt in range(len(self.addresses)):
            try:
                return _call(self.address, functools.partial(call, self._stub))
            except ControllerUnavailable as exc:
                if exc.retry_after is not None or attempt == len(self.addresses) - 1:
                    raise
                following = self.addresses[(self.addresses.index(self.address) + 1)
                                           % len(self.addresses)]  # fmt: skip
                log.warning("%s; trying %s", exc, following)
                self._channel.close()
                self.address = following
                self._connect(self._key_pem, self._cert_pem)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def renew(self, csr_pem: bytes) -> bytes:
        """A new certificate for the key of ``csr_pem``, asked for with the
        current one; its PEM."""
        request = agent_pb2.RenewRequest(csr_pem=csr_pem)
        response = self._ask(lambda stub: stub.Renew(request, timeout=TIMEOUT_SECONDS))
        return bytes(response.certificate_pem)

    def check_in(self, request: agent_pb2.CheckInRequest) -> agent_pb2.CheckInResponse:
        try:
            return self._ask(lambda stub: stub.CheckIn(request, timeout=TIMEOUT_SECONDS))
        except ControllerUnavailable as exc:
            if "CERTIFICATE_VERIFY_FAILED" not in str(exc):
                raise
            # Still retried (a middlebox may pass), but saying what a person
            # must do when it does not: the fleet CA moved on without us.
            raise ControllerUnavailable(
                f"the controller at {self.address} presents a certificate that the CA(s) this "
                "host pins (ca.pem) do not verify; if the fleet's CA was rotated while this "
                "host was away, enroll it again with a token and the new ca.pem "
                "(fleetpatch-agent enroll --ca-cert NEW_CA)"
            ) from None

    def watch(self) -> tuple[Iterator[agent_pb2.Nudge | None], Callable[[], None]]:
        """Open this host's Watch stream on the replica in use: its nudges
        as they come (the iterator raises agent errors like every call, and
        yields None once, when the controller has opened the stream) and a
        function that cancels it from another thread."""
        address = self.address
        try:
            call = self._stub.Watch(agent_pb2.WatchRequest())
        except ValueError as exc:  # the channel closed by the loop's thread (failover, renewal)
            raise ControllerUnavailable(f"cannot watch on {address}: {exc}") from None
        stream: Iterator[agent_pb2.Nudge] = iter(call)

        def nudges() -> Iterator[agent_pb2.Nudge | None]:
            headers = _call(address, call.initial_metadata) or ()
            if any(key == WATCH_OPEN for key, _ in headers):
                yield None
            while True:
                nudge = _call(address, lambda: next(stream, None))
                if nudge is None:
                    return
                yield nudge

        return nudges(), call.cancel

    def report_progress(
        self, request: agent_pb2.ReportProgressRequest
    ) -> agent_pb2.ReportProgressResponse:
        return self._ask(lambda stub: stub.ReportProgress(request, timeout=TIMEOUT_SECONDS))

    def reach(self) -> None:
        """One authenticated round trip (an empty report): proves this agent
        can load its key, complete mutual TLS and be accepted as its host."""
        self.report_progress(agent_pb2.ReportProgressRequest())

    def fetch_artifact(self, sha256: bytes, dest: Path, max_size: int) -> None:
        """Stream the artifact with this digest into ``dest`` (created 0600),
        hashing as it comes; raises AgentError and removes ``dest`` when it is
        larger than ``max_size`` or not what was asked for. A controller
        serving as many downloads as it will is asked again, as it says, for
        up to FETCH_PATIENCE_SECONDS: a busy moment must not fail an update."""
        patiently(lambda: self._fetch_once(sha256, dest, max_size), FETCH_PATIENCE_SECONDS)

    def _fetch_once(self, sha256: bytes, dest: Path, max_size: int) -> None:

        def fetch() -> None:
            digest, size = hashlib.sha256(), 0
            stream = self._stub.FetchArtifact(
                agent_pb2.FetchArtifactRequest(sha256=sha256), timeout=FETCH_TIMEOUT_SECONDS
            )
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                for chunk in stream:
                    size += len(chunk.data)
                    if size > max_size:
                        stream.cancel()  # type: ignore[no-untyped-call]
                        raise AgentError(
                            f"the artifact is larger than the {max_size} bytes announced"
                        )
                    digest.update(chunk.data)
                    out.write(chunk.data)
                out.flush()
                os.fsync(out.fileno())
            if digest.digest() != sha256:
                raise AgentError(
                    f"the controller sent an artifact whose SHA-256 is {digest.hexdigest()}"
                )

        try:
            _call(self.address, fetch)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
