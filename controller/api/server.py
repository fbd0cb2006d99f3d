"""Assemble and run the controller's gRPC server.

One grpc.aio server, two listeners: the mutual-TLS port (every RPC but
Enroll needs a client certificate our CA signed) and the enrollment port
(server-authenticated TLS; only Enroll is served there, on the strength of
a token). grpcio cannot ask for an *optional* client certificate, hence two
ports rather than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fleetpatch.v1 import admin_pb2, agent_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller.api import lenient
from controller.api.auditkeeping import AuditKeeper
from controller.api.servicers import AdminService, AgentService, Revocations
from controller.checkpoint import Checkpoints
from controller.datadir import DataDir, join_address, split_address
from controller.errors import UsageError
from controller.fleet.pki import CertificateAuthority
from controller.fleet.signing import load_signing_keys
from controller.releases.artifacts import ArtifactStore
from controller.releases.publishing import Releases, load_release_key
from controller.rollout.engine import CampaignEngine
from controller.store import Store
from controller.store.thread import CheckInBatcher, StoreThread

log = logging.getLogger(__name__)

SERVICES = ("fleetpatch.v1.AgentService", "fleetpatch.v1.AdminService")
SHUTDOWN_GRACE_SECONDS = 10.0
_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ("grpc.so_reuseport", 0),
]


def _check_bindable(host: str, port: int) -> None:
    """Try the address first, so a busy port is one clear line rather than
    gRPC core's log noise followed by a vaguer error."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {join_address(host, port)}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {join_address(host, port)}: {exc.strerror}"
            ) from None


def _bind(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials) -> str:
    host, port = split_address(address)
    _check_bindable(host, port)
    try:
        port = server.add_secure_port(address, creds)
    except RuntimeError as exc:
        raise UsageError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise UsageError(f"cannot listen on {address} (in use, or not an address of this host)")
    return join_address(host, port)


async def serve(
    data_dir: DataDir,
    listen: str | None = None,
    enroll_listen: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set, or SIGTERM/SIGINT; then shut down
    gracefully: stop accepting, finish in-flight calls, flush check-ins."""
    data_dir.require_initialised()
    settings = data_dir.settings()
    if enroll_listen is None:
        enroll_listen = _next_port(listen) if listen else settings.enroll_listen
    listen = listen or settings.listen
    ca = CertificateAuthority.load(data_dir.read(data_dir.ca_key), data_dir.read(data_dir.ca_cert))
    server_key = data_dir.read(data_dir.server_key)
    server_cert = data_dir.read(data_dir.server_cert)
    keys = load_signing_keys(data_dir)
    release_key = load_release_key(data_dir, settings.release_public_key)

    store = Store.open(data_dir.database)
    db = StoreThread(store)
    revoked = Revocations(await db.call(lambda s: s.revoked_host_ids()))
    batcher = CheckInBatcher(db, settings.checkin_max_batch)
    engine = CampaignEngine(db, keys.key)
    await engine.start()
    releases = _releases(data_dir, db, release_key)
    keeper = AuditKeeper.start(db, settings, Checkpoints(keys.key, keys.trusted))
    server = grpc.aio.server(options=_OPTIONS)
    lenient.add_servicer(
        server,
        AgentService(db, batcher, ca, keys.published, settings, revoked, engine, releases,
                     keys.chain, refusals=keeper.refusals),
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    )  # fmt: skip
    lenient.add_servicer(
        server, AdminService(db, revoked, engine, releases, keeper.checkpoints),
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    )  # fmt: skip
    # grpc-stubs predates the asyncio health servicer that grpcio-health-checking ships.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    try:
        bound, enroll_bound = _listen(server, ca, (server_key, server_cert), listen, enroll_listen)
    except BaseException:
        db.close()
        raise

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    _handle_signals(loop, stop.set)

    await server.start()
    batcher.start()
    ticks = asyncio.create_task(engine.run_ticks(settings.campaign_tick.total_seconds(), stop))
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    data_dir.write_endpoints(
        _advertised(bound, settings.advertise), _advertised(enroll_bound, settings.advertise)
    )
    log.info("controller serving on %s (enrollment on %s)", bound, enroll_bound)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight calls (up to %.0fs)", SHUTDOWN_GRACE_SECONDS)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_SECONDS)
        # After server.stop, so that no report can add a refusal count now.
        await asyncio.gather(ticks, keeper.close())
        await batcher.close()
        db.close()
        _handle_signals(loop, None)
        log.info("controller stopped")


def _handle_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None] | None) -> None:
    """SIGTERM and SIGINT call ``handler``; None: back to the defaults."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if handler is None:
                loop.remove_signal_handler(sig)
            else:
                loop.add_signal_handler(sig, handler)


def _releases(data_dir: DataDir, db: StoreThread, key: Ed25519PublicKey | None) -> Releases:
    artifacts = ArtifactStore(data_dir.artifacts)
    artifacts.sweep()  # uploads a crash broke off
    return Releases(db, artifacts, key)


def _next_port(address: str) -> str:
    host, port = split_address(address)
    return join_address(host, port + 1 if port else 0)


def _listen(
    server: grpc.aio.Server,
    ca: CertificateAuthority,
    pair: tuple[bytes, bytes],
    listen: str,
    enroll_listen: str,
) -> tuple[str, str]:
    """Bind the mutual-TLS and the enrollment listeners; their addresses."""
    mtls = grpc.ssl_server_credentials(
        [pair], root_certificates=ca.cert_pem, require_client_auth=True
    )
    enroll = grpc.ssl_server_credentials([pair], root_certificates=None, require_client_auth=False)
    return _bind(server, listen, mtls), _bind(server, enroll_listen, enroll)


def _advertised(bound: str, advertise: str) -> str:
    """The address clients should use for a bound listener: a wildcard bind
    is reached through the advertised host name."""
    host, port = split_address(bound)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        host, _ = split_address(advertise)
    return join_address(host, port)
