"""The admin CLI's connection to the controller (mutual TLS with the admin
certificate from the data dir). gRPC errors become CLI errors here.

Several replicas may be named (`--controller a:7443,b:7443`, `[cli]
controllers`): the client connects to the first that completes a
connection (TLS handshake included) and moves to the next when one cannot
be reached. What it sends is retried on another replica only when that is
harmless: a read, or a verb that asking twice leaves as asking once
(approve, pause, resume, abort, revoke, relabel: see "Asking twice" in the
README). A call that creates something (a token, a campaign, an admin, a
release, an import, a renewed certificate) goes to another replica only
when no connection could be made, so it was certainly not sent; cut off
after it was sent, it is reported as unreachable with a word to check
before asking again. A TLS trust failure is a configuration error (exit
7) on any replica: it stops there, with no failover."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from fleetpatch import catrust
from fleetpatch.addresses import AddressError, split_address
from fleetpatch.labels import check_ring
from fleetpatch.overload import RETRY_AFTER_KEY
from fleetpatch.tlstrust import trust_problem
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc, vulns_pb2, vulns_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from controller.api.limits import MAX_ANSWER_BYTES, MAX_ID, MAX_MESSAGE_BYTES, quoted_id
from controller.datadir import DataDir, split_addresses
from controller.errors import (
    Conflict,
    ControllerUnavailable,
    DataDirError,
    FleetpatchError,
    NotFound,
    Refused,
    TrustFailure,
    UsageError,
)

_T = TypeVar("_T")


def _answered(exc: grpc.RpcError) -> bool:
    """Whether the controller itself refused the call (it says when to ask
    again), rather than the call not reaching it."""
    trailers = getattr(exc, "trailing_metadata", lambda: None)() or ()
    return any(key == RETRY_AFTER_KEY for key, _ in trailers)


# What a read is asked again of the next replica for: a replica that
# cannot be reached (or whose database cannot), or that does not answer in
# time (one cut off from the database while the others are not).
_ASK_ANOTHER = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
TIMEOUT_SECONDS = 15.0
# How long a replica has to complete a connection (TCP and TLS) before the
# next one is tried.
CONNECT_TIMEOUT_SECONDS = 10.0
PUBLISH_TIMEOUT_SECONDS = 900.0  # up to 256 MiB over a slow link
# Walking or exporting the whole audit trail: minutes at 10 million records.
AUDIT_TIMEOUT_SECONDS = 3600.0

_ERROR_OF: dict[grpc.StatusCode, type[FleetpatchError]] = {
    grpc.StatusCode.UNAVAILABLE: ControllerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ControllerUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ControllerUnavailable,  # busy: worth retrying
    grpc.StatusCode.UNAUTHENTICATED: Refused,
    grpc.StatusCode.PERMISSION_DENIED: Refused,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: UsageError,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
}


# What the channel takes and sends: any answer the controller builds, and
# requests no larger than it accepts (a larger one is refused here, before
# it is sent, rather than by the controller after).
_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_ANSWER_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
# gRPC's own words when a message passes a side's size limit ("CLIENT:" or
# "SERVER:" says whose, "Received"/"Sent" which way): RESOURCE_EXHAUSTED,
# as the answer of a busy controller is, but asking again cannot help.
_SIZE_LIMIT = re.compile(
    r"(?:(CLIENT|SERVER): )?(Received|Sent) message larger than max "
    r"\((\d{1,20}) vs\. (\d{1,20})\)"
)


def too_large(details: str) -> FleetpatchError | None:
    """The error for a message over gRPC's size limit on either side, from
    a RESOURCE_EXHAUSTED status's ``details``: a request too large is bad
    input (exit 2), an answer too large an error (exit 1); None when the
    details say something else (a busy controller)."""
    found = _SIZE_LIMIT.search(details)
    if found is None:
        return None
    side, way, size, limit = found.groups()
    sizes = f"({size} bytes, at most {limit})"
    if (side, way) in (("CLIENT", "Sent"), ("SERVER", "Received"), (None, "Sent")):
        return UsageError(f"the request is larger than the controller takes {sizes}")
    if side == "SERVER":
        return FleetpatchError(f"the controller's answer is larger than it may send {sizes}")
    return FleetpatchError(f"the controller's answer is larger than this CLI takes {sizes}")


def check_id(value: str, what: str) -> str:
    """``value``, the id (or name) of a ``what`` given on the command line;
    UsageError when it is longer than any can be (it would be sent, and
    quoted back, for nothing)."""
    if len(value) > MAX_ID:
        raise UsageError(
            f"{what} {quoted_id(value)} is {len(value)} characters long: no {what} is longer "
            f"than {MAX_ID}"
        )
    return value


def exit_code_for(code: grpc.StatusCode) -> int:
    """The admin CLI's exit code for a call that ended with ``code``."""
    return _ERROR_OF.get(code, FleetpatchError).exit_code


def wait_connected(channel: grpc.Channel, timeout: float) -> bool | None:
    """Whether ``channel`` completes a connection (READY) within
    ``timeout``: True; False as soon as an attempt fails
    (TRANSIENT_FAILURE); None when neither happened in time.

    Watched as grpc's own ``subscribe`` does, on its core channel, but
    each watch returning before the next starts: ``subscribe`` keeps a watch
    of 0.2 s open after the last callback is gone, and ``close`` then waits
    it out, 0.2 s of every admin command (half of a quick one's time).

    Ctrl-C is held back while a watch runs, and acted on as it returns
    (within `WATCH_SLICE_SECONDS`): raised from inside the watch, it would
    leave the watch due for ever, and the channel's ``close`` waits for
    every due watch, so the CLI would hang instead of stopping."""
    core: Any = getattr(channel, "_channel", None)
    if not (
        hasattr(core, "check_connectivity_state") and hasattr(core, "watch_connectivity_state")
    ):  # another grpcio's insides: the public way, slower to close
        return _wait_subscribed(channel, timeout)
    deadline = time.time() + timeout
    with _interrupts_held() as interrupted:
        number = core.check_connectivity_state(True)
        while _CONNECTIVITY[number] not in _SETTLED and not interrupted():
            now = time.time()
            if now >= deadline:
                return None
            core.watch_connectivity_state(number, min(deadline, now + WATCH_SLICE_SECONDS))
            # Connecting again should it have gone back to IDLE meanwhile.
            number = core.check_connectivity_state(True)
    return _CONNECTIVITY[number] is grpc.ChannelConnectivity.READY


WATCH_SLICE_SECONDS = 0.1


@contextlib.contextmanager
def _interrupts_held() -> Iterator[Callable[[], bool]]:
    """Within: SIGINT is noted, not raised (``interrupted()`` says whether
    one came); on leaving, KeyboardInterrupt is raised if one did. Only the
    main thread can hold it, and only Python's own handler is replaced."""
    held: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return
    signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield lambda: bool(held)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


_SETTLED = (
    grpc.ChannelConnectivity.READY,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE,
    grpc.ChannelConnectivity.SHUTDOWN,
)
# The core's state numbers, as the public enum's values carry them: (2, "ready").
_CONNECTIVITY = {state.value[0]: state for state in grpc.ChannelConnectivity}


def _wait_subscribed(channel: grpc.Channel, timeout: float) -> bool | None:
    settled = threading.Event()
    seen: list[grpc.ChannelConnectivity] = []

    def follow(state: grpc.ChannelConnectivity) -> None:
        if state in _SETTLED:
            seen.append(state)
            settled.set()

    channel.subscribe(follow, try_to_connect=True)
    try:
        settled.wait(timeout)
    finally:
        channel.unsubscribe(follow)
    if not seen:
        return None
    return seen[0] is grpc.ChannelConnectivity.READY


def why_unreachable(address: str, timeout: float = 3.0) -> str:
    """A few words on why nothing answers at ``address`` (for the error),
    naming the addresses a name resolved to."""
    try:
        host, port = split_address(address)
    except AddressError:
        return "not HOST:PORT"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    tried: list[str] = []
    reason = "no address"
    for family, kind, proto, _, sockaddr in found:
        ip = str(sockaddr[0])
        tried.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
            return f"{tried[-1]} accepts TCP connections, but no gRPC connection over TLS was made"
        except TimeoutError:
            reason = f"no answer within {timeout:.0f}s"
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if tried == [address]:
        return reason
    return f"{reason} ({', '.join(tried)})"


def _credentials(data_dir: DataDir) -> tuple[bytes, bytes, bytes]:
    """The CA, the admin's key and certificate, each checked as PEM first,
    and the key as the certificate's: gRPC's core would print its own lines
    about a damaged one ("Invalid private key", six times), then fail the
    call as if the controller were at fault. Raises DataDirError."""
    ca, key, cert = (data_dir.read(p) for p in (data_dir.ca_cert, data_dir.admin_key,
                                                data_dir.admin_cert))  # fmt: skip
    _certificates(data_dir.ca_cert, ca)
    admin = _certificates(data_dir.admin_cert, cert)[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise DataDirError(f"{data_dir.admin_key} is not a PEM private key (damaged?)") from None
    if not catrust.same_key(private.public_key(), admin.public_key()):
        raise DataDirError(
            f"the data dir's admin key {data_dir.admin_key} does not belong to its "
            f"certificate {data_dir.admin_cert} (put back the key made with it, or restore both)"
        )
    return ca, key, cert


def _certificates(path: Path, pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise DataDirError(f"{path} is not a PEM certificate (damaged?)") from None


class AdminClient:
    def __init__(self, data_dir: DataDir, address: str | None = None) -> None:
        data_dir.require_initialised()
        try:
            self.addresses = split_addresses(address) if address else data_dir.client_addresses()
        except UsageError as exc:
            raise UsageError(f"--controller: {exc}" if address else str(exc)) from None
        self.address = self.addresses[0]
        self._data_dir = data_dir
        self._creds = grpc.ssl_channel_credentials(*_credentials(data_dir))
        self._channel: grpc.Channel | None = None
        self._stubs: tuple[admin_pb2_grpc.AdminServiceStub, vulns_pb2_grpc.VulnServiceStub] | None
        self._stubs = None

    @property
    def _stub(self) -> admin_pb2_grpc.AdminServiceStub:
        if self._stubs is None:
            raise AssertionError("a call before _connect()")
        return self._stubs[0]

    @property
    def _vulns(self) -> vulns_pb2_grpc.VulnServiceStub:
        if self._stubs is None:
            raise AssertionError("a call before _connect()")
        return self._stubs[1]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel, self._stubs = None, None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _connect(self) -> None:
        """A connection to the replica in use or, when it cannot be made,
        to the next ones in turn; raises TrustFailure at the first replica
        that fails on trust, ControllerUnavailable when none answers."""
        if self._channel is not None:
            return
        start = self.addresses.index(self.address)
        failed: list[str] = []
        for step in range(len(self.addresses)):
            address = self.addresses[(start + step) % len(self.addresses)]
            channel = grpc.secure_channel(address, self._creds, options=_OPTIONS)
            connected = wait_connected(channel, CONNECT_TIMEOUT_SECONDS)
            if connected:
                if failed:
                    print(f"warning: {'; '.join(failed)}; using {address}", file=sys.stderr)
                self.address, self._channel = address, channel
                self._stubs = (
                    admin_pb2_grpc.AdminServiceStub(channel),
                    vulns_pb2_grpc.VulnServiceStub(channel),
                )
                return
            channel.close()
            if connected is None:  # silence (a host down, a firewall): no probe would answer
                why = f"no connection within {CONNECT_TIMEOUT_SECONDS:.0f}s"
            else:
                problem = self._trust_problem(address)
                if problem is not None:
                    raise TrustFailure(f"TLS trust fails: {problem}")
                why = why_unreachable(address)
            failed.append(f"cannot reach the controller at {address}: {why}")
        raise ControllerUnavailable("; ".join(failed))

    def _next(self) -> None:
        """Drop the connection; the next call starts at the next replica."""
        self.close()
        self.address = self.addresses[(self.addresses.index(self.address) + 1)
                                      % len(self.addresses)]  # fmt: skip

    def _ask(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, safe to send twice (a read, or a verb whose second
        asking changes nothing): on a replica that cannot be reached, or
        does not answer in time (one cut off from the database), asked
        again of the next, each replica once."""
        for attempt in range(len(self.addresses)):
            self._connect()
            try:
                return fn()
            except grpc.RpcError as exc:
                error = self._error(exc)
                if (
                    exc.code() not in _ASK_ANOTHER
                    or isinstance(error, TrustFailure)
                    or attempt == len(self.addresses) - 1
                ):
                    raise error from None
                was = self.address
                self._next()
                print(f"warning: {error}; asking {self.address} instead of {was}", file=sys.stderr)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, which must not be applied twice: another replica is
        tried only when none could be connected to (so nothing was sent)."""
        self._connect()
        try:
            return fn()
        except grpc.RpcError as exc:
            error = self._error(exc)
            if exc.code() is grpc.StatusCode.UNAVAILABLE and not isinstance(error, TrustFailure):
                self.close()
                raise ControllerUnavailable(
                    f"{error} (the request may have reached it before the connection was "
                    "lost: check whether it was done before asking again)"
                ) from None
            raise error from None

    def _error(self, exc: grpc.RpcError) -> FleetpatchError:
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or code.name
        if code is grpc.StatusCode.UNAVAILABLE:
            problem = self._trust_problem(self.address)
            if problem is not None:
                return TrustFailure(f"TLS trust fails: {problem}")
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED and not _answered(exc):
            error = too_large(details)
            if error is not None:
                return error
        if code is grpc.StatusCode.UNAVAILABLE and _answered(exc):
            # It answered, with a retry delay: its database is out of reach.
            details = f"the controller at {self.address} cannot serve it now: {details}"
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            details = f"cannot reach the controller at {self.address}: {details}"
        return _ERROR_OF.get(code, FleetpatchError)(details)

    def _trust_problem(self, address: str) -> str | None:
        """Whether an UNAVAILABLE was a trust failure (grpc cannot tell)."""
        data_dir = self._data_dir
        problem = trust_problem(
            address, data_dir.read(data_dir.ca_cert), data_dir.admin_cert, data_dir.admin_key
        )
        if problem is None:
            return None
        return f"{problem} (CA {data_dir.ca_cert}, admin certificate {data_dir.admin_cert})"

    def create_token(self, request: admin_pb2.CreateTokenRequest) -> admin_pb2.CreateTokenResponse:
        return self._send(lambda: self._stub.CreateToken(request, timeout=TIMEOUT_SECONDS))

    def list_tokens(self) -> list[admin_pb2.Token]:
        response = self._ask(
            lambda: self._stub.ListTokens(admin_pb2.ListTokensRequest(), timeout=TIMEOUT_SECONDS)
        )
        return list(response.tokens)

    def revoke_token(self, token_id: str) -> admin_pb2.Token:
        request = admin_pb2.RevokeTokenRequest(token_id=check_id(token_id, "token id"))
        return self._ask(lambda: self._stub.RevokeToken(request, timeout=TIMEOUT_SECONDS)).token

    def iter_hosts(self, region: str = "", ring: int | None = None) -> Iterator[admin_pb2.Host]:
        """Every matching host, fetched page by page. UsageError for a ring
        no host can be in."""
        if ring is not None:
            try:
                check_ring(ring)
            except ValueError as exc:
                raise UsageError(f"--ring: {exc}") from None
        request = admin_pb2.ListHostsRequest(region=region, ring=ring, page_size=1000)
        while True:
            page = self._ask(lambda: self._stub.ListHosts(request, timeout=TIMEOUT_SECONDS))
            yield from page.hosts
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def get_host(self, host_id: str) -> admin_pb2.GetHostResponse:
        request = admin_pb2.GetHostRequest(host_id=check_id(host_id, "host id"))
        return self._ask(lambda: self._stub.GetHost(request, timeout=TIMEOUT_SECONDS))

    def revoke_host(self, host_id: str) -> admin_pb2.Host:
        request = admin_pb2.RevokeHostRequest(host_id=check_id(host_id, "host id"))
        return self._ask(lambda: self._stub.RevokeHost(request, timeout=TIMEOUT_SECONDS)).host

    def relabel_host(self, request: admin_pb2.RelabelHostRequest) -> admin_pb2.Host:
        check_id(request.host_id, "host id")
        return self._ask(lambda: self._stub.RelabelHost(request, timeout=TIMEOUT_SECONDS)).host

    def create_campaign(self, spec: str, source: str) -> admin_pb2.Campaign:
        request = admin_pb2.CreateCampaignRequest(spec=spec, source=source)
        return self._send(
            lambda: self._stub.CreateCampaign(request, timeout=TIMEOUT_SECONDS)
        ).campaign

    def campaign_action(
        self, action: str, campaign_id: str, revert: bool = False
    ) -> admin_pb2.Campaign:
        """approve, pause, resume, abort or get one campaign."""
        check_id(campaign_id, "campaign id")
        if action == "abort":
            abort = admin_pb2.AbortCampaignRequest(campaign_id=campaign_id, revert=revert)
            return self._ask(
                lambda: self._stub.AbortCampaign(abort, timeout=TIMEOUT_SECONDS)
            ).campaign
        request = admin_pb2.CampaignRequest(campaign_id=campaign_id)
        method = {
            "approve": "ApproveCampaign",
            "pause": "PauseCampaign",
            "resume": "ResumeCampaign",
            "get": "GetCampaign",
        }[action]
        reply: admin_pb2.CampaignResponse = self._ask(
            lambda: getattr(self._stub, method)(request, timeout=TIMEOUT_SECONDS)
        )
        return reply.campaign

    def campaign_hosts(self, campaign_id: str, status: str = "") -> list[admin_pb2.CampaignHost]:
        """The hosts a campaign assigned orders to (of one status, if given)."""
        check_id(campaign_id, "campaign id")
        request = admin_pb2.ListCampaignHostsRequest(campaign_id=campaign_id, status=status)
        return list(
            self._ask(lambda: self._stub.ListCampaignHosts(request, timeout=TIMEOUT_SECONDS)).hosts
        )

    def list_campaigns(self) -> list[admin_pb2.Campaign]:
        request = admin_pb2.ListCampaignsRequest()
        return list(
            self._ask(lambda: self._stub.ListCampaigns(request, timeout=TIMEOUT_SECONDS)).campaigns
        )

    def publish_release(
        self, header: admin_pb2.PublishAgentReleaseHeader, chunks: Iterable[bytes]
    ) -> admin_pb2.AgentRelease:
        """Stream an agent package: the header, then its bytes."""

        def requests() -> Iterator[admin_pb2.PublishAgentReleaseRequest]:
            yield admin_pb2.PublishAgentReleaseRequest(header=header)
            for chunk in chunks:
                yield admin_pb2.PublishAgentReleaseRequest(data=chunk)

        return self._send(
            lambda: self._stub.PublishAgentRelease(requests(), timeout=PUBLISH_TIMEOUT_SECONDS)
        ).release

    def list_releases(self) -> list[admin_pb2.AgentRelease]:
        request = admin_pb2.ListAgentReleasesRequest()
        return list(
            self._ask(
                lambda: self._stub.ListAgentReleases(request, timeout=TIMEOUT_SECONDS)
            ).releases
        )

    def fleet_history(self) -> list[admin_pb2.CellHistory]:
        request = admin_pb2.FleetHistoryRequest()
        reply = self._ask(lambda: self._stub.GetFleetHistory(request, timeout=TIMEOUT_SECONDS))
        return list(reply.cells)

    def verify_audit(
        self, checkpoint: admin_pb2.AuditCheckpoint | None = None
    ) -> admin_pb2.VerifyAuditResponse:
        request = admin_pb2.VerifyAuditRequest(checkpoint=checkpoint)
        return self._ask(lambda: self._stub.VerifyAudit(request, timeout=AUDIT_TIMEOUT_SECONDS))

    def audit_checkpoint(self) -> admin_pb2.AuditCheckpoint:
        request = admin_pb2.AuditCheckpointRequest()
        return self._ask(
            lambda: self._stub.AuditCheckpoint(request, timeout=TIMEOUT_SECONDS)
        ).checkpoint

    def export_audit(self, since: Timestamp | None) -> Iterator[admin_pb2.AuditRecord]:
        """The trail, oldest first, as the controller streams it: a page at
        a time in memory, however long the trail."""
        request = admin_pb2.ExportAuditRequest(since=since)

        def opened() -> tuple[Iterator[admin_pb2.ExportAuditResponse], list[admin_pb2.AuditRecord]]:
            # The first page is asked for with the call: until it comes,
            # another replica may be asked instead.
            stream = iter(self._stub.ExportAudit(request, timeout=AUDIT_TIMEOUT_SECONDS))
            first = next(stream, None)
            return stream, [] if first is None else list(first.records)

        stream, first = self._ask(opened)
        yield from first
        try:
            for page in stream:
                yield from page.records
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # -- vulnerabilities -----------------------------------------------------------

    def import_vulns(
        self, batches: list[vulns_pb2.ImportVulnsRequest]
    ) -> vulns_pb2.ImportVulnsResponse:
        """Send a feed already read whole (the last batch commits)."""
        return self._send(
            lambda: self._vulns.ImportVulns(iter(batches), timeout=PUBLISH_TIMEOUT_SECONDS)
        )

    def list_vulns(self, request: vulns_pb2.ListVulnsRequest) -> vulns_pb2.ListVulnsResponse:
        return self._ask(lambda: self._vulns.ListVulns(request, timeout=TIMEOUT_SECONDS))

    def get_vuln(self, vuln_id: str) -> vulns_pb2.GetVulnResponse:
        request = vulns_pb2.GetVulnRequest(vuln_id=check_id(vuln_id, "vulnerability id"))
        return self._ask(lambda: self._vulns.GetVuln(request, timeout=TIMEOUT_SECONDS))

    def exposures(self, request: vulns_pb2.ListExposuresRequest) -> list[vulns_pb2.Exposure]:
        reply = self._ask(lambda: self._vulns.ListExposures(request, timeout=TIMEOUT_SECONDS))
        return list(reply.exposures)

    def compliance(self, by: str) -> vulns_pb2.ComplianceResponse:
        request = vulns_pb2.ComplianceRequest(by=by)
        return self._ask(lambda: self._vulns.GetCompliance(request, timeout=TIMEOUT_SECONDS))

    def add_admin(self, name: str, role: str, csr_pem: bytes) -> admin_pb2.AddAdminResponse:
        request = admin_pb2.AddAdminRequest(name=name, role=role, csr_pem=csr_pem)
        return self._send(lambda: self._stub.AddAdmin(request, timeout=TIMEOUT_SECONDS))

    def list_admins(self) -> list[admin_pb2.Admin]:
        request = admin_pb2.ListAdminsRequest()
        return list(
            self._ask(lambda: self._stub.ListAdmins(request, timeout=TIMEOUT_SECONDS)).admins
        )

    def revoke_admin(self, name: str) -> admin_pb2.Admin:
        request = admin_pb2.RevokeAdminRequest(name=check_id(name, "admin name"))
        return self._ask(lambda: self._stub.RevokeAdmin(request, timeout=TIMEOUT_SECONDS)).admin

    def renew_admin(self, csr_pem: bytes) -> admin_pb2.RenewAdminResponse:
        """A new certificate for the calling admin, for the key in the CSR,
        and the CAs to trust."""
        request = admin_pb2.RenewAdminRequest(csr_pem=csr_pem)
        return self._send(lambda: self._stub.RenewAdmin(request, timeout=TIMEOUT_SECONDS))
