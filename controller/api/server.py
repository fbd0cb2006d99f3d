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
import resource
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fleetpatch.v1 import admin_pb2, agent_pb2, vulns_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller import gcpolicy
from controller.api import convert, lenient, limits
from controller.api.auditkeeping import AuditKeeper
from controller.api.push import Watchers
from controller.api.servicers import AdminService, AgentService, Revocations
from controller.api.vulnservice import VulnService
from controller.checkpoint import Checkpoints
from controller.datadir import DataDir, Settings, join_address, split_address
from controller.errors import ControllerUnavailable, DataDirError, UsageError
from controller.fleet import carotation, lineage, servercert
from controller.fleet.bootstrap import register_owner
from controller.fleet.signing import load_signing_keys, mark_in_use
from controller.metrics import listener as metrics_listener
from controller.metrics.collector import LoadFigures, Snapshot, StateCollector
from controller.metrics.instruments import Metrics
from controller.metrics.presence import Presence
from controller.model import HostStatus
from controller.notify.webhooks import Deliveries, Webhook
from controller.periodic import every
from controller.releases.artifacts import ArtifactStore
from controller.releases.publishing import Releases, load_release_key
from controller.rollout.engine import CampaignEngine
from controller.store import open_store
from controller.store.heartbeats import Heartbeats
from controller.store.thread import CheckInBatcher, StoreThread
from controller.vulns.match import Matcher

_T = TypeVar("_T")
log = logging.getLogger(__name__)

SERVICES = ("fleetpatch.v1.AgentService", "fleetpatch.v1.AdminService", "fleetpatch.v1.VulnService")
SHUTDOWN_GRACE_SECONDS = 10.0
CERTIFICATE_CHECK_SECONDS = 86_400.0  # what ends soon is said once a day
# Open files kept back from the connection cap for the database, logs,
# artifacts and the files a release upload writes.
RESERVED_FILES = 256
_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    # A peer that connects and never completes TLS is dropped after 10 s;
    # a connection with no call for 10 minutes is closed (agents reconnect
    # when they next check in, at no cost worth keeping a file open for).
    ("grpc.server_handshake_timeout_ms", 10_000),
    ("grpc.max_connection_idle_ms", 10 * 60_000),
    # Keepalive both ways: we ping quiet peers, and a peer that pings us
    # more often than every 30 s without calls is cut off after 2 strikes.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ("grpc.http2.max_ping_strikes", 2),
    # Calls one connection may have open at once: an agent needs two.
    ("grpc.max_concurrent_streams", 32),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.so_reuseport", 0),
    *limits.PENDING_OPTIONS,
]


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (systemd gives
    services 1,024 soft, which a few hundred idle connections exhaust);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def server_options(files: int) -> list[tuple[str, int]]:
    """The gRPC server's options when it may hold ``files`` files open: the
    connection cap keeps RESERVED_FILES back, so a flood of connections is
    refused at accept rather than starving the database of descriptors."""
    cap = max(64, files - RESERVED_FILES)
    return [*_OPTIONS, ("grpc.max_allowed_incoming_connections", cap)]


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


async def _register_legacy_owner(data_dir: DataDir, db: StoreThread) -> None:
    """A data dir made before admins had roles has one admin certificate
    and no admins recorded: its admin becomes an owner, so that the
    upgrade locks nobody out."""
    if await db.call(lambda s: s.admin_count()) or not data_dir.admin_cert.is_file():
        return
    pem = data_dir.read(data_dir.admin_cert)
    why = "upgrade: the data dir's admin.pem"
    owner = await db.call(lambda s: register_owner(s, pem, datetime.now(UTC), why))
    log.warning("no admins were recorded: %s (admin.pem) is now an owner", owner.name)


# The one place the parts are put together, in their start-up order: split,
# that order would be spread over several functions.
async def serve(  # noqa: PLR0915
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
    authorities = carotation.load(data_dir)
    ca = authorities.current
    pair = (data_dir.read(data_dir.server_key), data_dir.read(data_dir.server_cert))
    certificates = servercert.ends(data_dir)
    servercert.check_not_ended(certificates, datetime.now(UTC))
    keys = load_signing_keys(data_dir)
    release_key = load_release_key(data_dir, settings.release_public_key)

    timeout = settings.store_timeout.total_seconds()
    # Off the event loop: Ctrl-C while PostgreSQL is slow to answer stops
    # serve at once, instead of after libpq's connect_timeout.
    store = await _in_daemon_thread(
        lambda: open_store(settings.store_url, data_dir.database, timeout)
    )
    # A database over the network can hang; a local SQLite file does not.
    db = StoreThread(store, timeout if store.shared else None)
    ours = lineage.of_data_dir(data_dir, authorities.trusted, keys.known_ids, keys.current_id)
    try:  # a replica whose CA or keys are not the fleet's must not serve it
        await db.call(lambda s: lineage.adopt(s, ours))
    except BaseException:
        db.close()
        raise
    # The old keys' grace runs from the first time the current one signs.
    mark_in_use(data_dir, keys.current_id, datetime.now(UTC))
    keys = load_signing_keys(data_dir)
    admission = limits.Admission()
    watchers = Watchers(admission)  # nudges paced to what is served
    revoked = Revocations(
        await db.call(lambda s: s.host_ids(HostStatus.REVOKED)), on_revoke=watchers.close
    )
    await _register_legacy_owner(data_dir, db)
    shared = await db.call(lambda s: s.shared)
    engine = CampaignEngine(db, keys.key, metrics=Metrics(Presence(settings.checkin_interval)))
    engine.on_nudge = watchers.nudge
    engine.metrics.certificate_ends.labels("server").set(certificates.server.timestamp())
    engine.metrics.certificate_ends.labels("ca").set(certificates.ca.timestamp())
    batcher = CheckInBatcher(db, settings.checkin_max_batch, engine.metrics)
    behind = settings.checkin_write_behind.total_seconds()
    heartbeats = (
        Heartbeats(db, behind, max_hosts=settings.checkin_held_hosts, as_json=convert.to_json)
        if behind and settings.checkin_held_hosts else None
    )  # fmt: skip
    if heartbeats is not None:
        held = heartbeats

        def revoked_now(host_id: str) -> None:
            watchers.close(host_id)
            held.forget(host_id)

        revoked.on_revoke = revoked_now
    await engine.start()
    releases = _releases(data_dir, db, release_key)
    keeper = AuditKeeper.create(db, settings, Checkpoints(keys.key, keys.trusted))
    files = raise_file_limit()
    server = grpc.aio.server(options=server_options(files))
    pending = await db.call(lambda s: s.host_ids(HostStatus.PENDING))
    agents = AgentService(
        db, batcher, ca, keys.published, settings, revoked, engine, releases, keys.chain,
        keys.withdrawn(settings.old_key_grace), refusals=keeper.refusals, pending=pending,
        authorities=authorities, watchers=watchers, admission=admission,
        greeting=key_revoked_greeting(keys.status.revoked.values(), settings.checkin_interval,
                                      datetime.now(UTC)),
        heartbeats=heartbeats,
    )  # fmt: skip
    admin = AdminService(
        db, revoked, engine, releases, keeper.checkpoints, authorities.issuing, settings,
        trusted_pem=authorities.trusted_pem, heartbeats=heartbeats,
    )  # fmt: skip
    if authorities.rotating:
        log.warning("CA rotation in progress: trusting %d CAs; renewals come from the new one "
                    "(`rotate-ca --retire-old` ends it)", len(authorities.trusted))  # fmt: skip
    matcher = Matcher(db)
    vulns = VulnService(db, engine, matcher, settings, admin.admin)
    health_servicer = _register(server, agents, admin, vulns)

    try:
        bound, enroll_bound = _listen(server, authorities.trusted_pem, pair, listen, enroll_listen)
        extras = await _extras(data_dir, settings, engine, db, admission, watchers, heartbeats)
        keeper.begin()
    except BaseException:
        db.close()
        raise

    stop = stop or asyncio.Event()
    left_behind: list[DataDirError] = []  # why this replica stopped by itself
    loop = asyncio.get_running_loop()
    _handle_signals(loop, stop.set)

    # Started: what is alive now lives as long as the process (gcpolicy).
    gcpolicy.tune()
    await server.start()
    batcher.start()
    if heartbeats is not None:
        heartbeats.start()
    background = asyncio.gather(
        engine.run_ticks(settings.campaign_tick.total_seconds(), stop),
        expire_pending(db, settings.pending_timeout, pending, stop, engine.metrics.presence),
        extras.deliveries.run(stop),
        match_vulns(matcher, settings.vuln_match_interval, stop),
        gcpolicy.refreeze_every(gcpolicy.REFREEZE_SECONDS, stop),
        warn_of_ends(certificates, stop),
        *(
            [follow_revocations(db, revoked, settings.campaign_tick.total_seconds(), stop),
             follow_lineage(db, ours, settings.campaign_tick.total_seconds(), stop, left_behind)]
            if shared else []
        ),
    )  # fmt: skip
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    data_dir.write_endpoints(
        _advertised(bound, settings.advertise), _advertised(enroll_bound, settings.advertise)
    )
    log.info(
        "controller serving on %s (enrollment on %s; %d open files allowed)",
        bound, enroll_bound, files,
    )  # fmt: skip
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight calls (up to %.0fs)", SHUTDOWN_GRACE_SECONDS)
        await health_servicer.enter_graceful_shutdown()
        watchers.close_all()  # idle streams would hold the grace period up
        await server.stop(SHUTDOWN_GRACE_SECONDS)
        # Each step on its own: one that fails (the database down, say)
        # must not skip the next, which may write what was acknowledged or
        # say that it could not. After server.stop, so that no report can
        # add a refusal count now.
        ended = await asyncio.gather(
            background, keeper.close(), asyncio.to_thread(extras.scrapes.close),
            return_exceptions=True,
        )  # fmt: skip
        for what, outcome in zip(
            ("background tasks", "audit keeping", "scrapes"), ended, strict=True
        ):
            _failed_to_stop(what, outcome)
        for what, step in (
            ("the campaign engine", engine.close),
            ("the check-in writer", batcher.close),
            *([("the check-ins written behind", heartbeats.close)] if heartbeats else []),
        ):
            try:
                await step()
            except Exception as exc:
                _failed_to_stop(what, exc)
        db.close()
        _handle_signals(loop, None)
        log.info("controller stopped")
    if left_behind:
        raise left_behind[0]


async def _in_daemon_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` on a thread of its own that does not keep the process alive:
    a caller cancelled (Ctrl-C) returns at once and the process may end
    while ``fn`` still waits (asyncio.to_thread's threads are waited for)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed to the caller, whatever it is
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="connect", daemon=True).start()
    return await future


def _failed_to_stop(what: str, outcome: object) -> None:
    """Say how ``what`` failed while the controller stopped, if it did."""
    if isinstance(outcome, ControllerUnavailable):  # the database is down: expected, one line
        log.warning("stopping %s: %s", what, outcome)
    elif isinstance(outcome, Exception):
        log.error("stopping %s failed", what, exc_info=outcome)


def key_revoked_greeting(
    revocations: Iterable[datetime],
    interval: timedelta,
    started: datetime,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[], str | None]:
    """Why a Watch stream is nudged as it opens, if it is. A signing key
    revoked less than a check-in interval before this start (`rotate-key
    --revoke-old` takes effect at a restart) must reach the hosts before
    their next check-in: streams opened within an interval of the start are
    nudged, paced with every other nudge (`Watchers.nudge`)."""
    newest = max(revocations, default=None)
    if newest is None or newest < started - interval:
        return lambda: None

    def greeting() -> str | None:
        if clock() - started > interval:
            return None
        return "key-revoked"

    return greeting


async def warn_of_ends(certificates: servercert.Ends, stop: asyncio.Event) -> None:
    """Say at start, and every day, what of the server certificate and the
    CA ends soon (the ones loaded: a certificate issued since is used from
    the next start)."""

    async def check() -> None:
        for line in certificates.warnings(datetime.now(UTC)):
            log.warning("%s", line)

    await every(CERTIFICATE_CHECK_SECONDS, stop, check, "checking the certificates' ends")


async def expire_pending(
    db: StoreThread,
    timeout: timedelta,
    pending: set[str],
    stop: asyncio.Event,
    presence: Presence | None = None,
) -> None:
    """Forget, now and then, hosts that enrolled but never made their first
    mutual-TLS call within ``timeout``, giving their token uses back."""

    async def expire() -> None:
        now = datetime.now(UTC)
        for host in await db.call(lambda s: s.expire_pending_hosts(now - timeout, now)):
            pending.discard(host.host_id)
            if presence is not None:
                presence.forgotten(host.host_id)
            log.warning(
                "host %s never checked in within %s of enrolling; forgotten, token use given back",
                host.host_id, timeout,
            )  # fmt: skip

    # At most a quarter of the timeout late.
    await every(min(60.0, timeout.total_seconds() / 4), stop, expire, "expiring pending hosts")


async def match_vulns(matcher: Matcher, interval: timedelta, stop: asyncio.Event) -> None:
    """Match hosts whose inventory or scan changed against the feeds every
    ``interval``, and at once when an import wakes the matcher."""
    while not stop.is_set():
        try:
            matched = await matcher.run_once()
        except ControllerUnavailable as exc:  # the database, say: one line, not a traceback
            log.warning("matching hosts against the vulnerability feeds failed: %s; trying again",
                        exc)  # fmt: skip
        except Exception:
            log.exception("matching hosts against the vulnerability feeds failed; trying again")
        else:
            if matched:
                log.info("matched %d hosts against the vulnerability feeds", matched)
        waking = asyncio.ensure_future(matcher.wait(interval.total_seconds()))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (waking, stopping):
            pending.cancel()


async def follow_revocations(
    db: StoreThread, revoked: Revocations, interval: float, stop: asyncio.Event
) -> None:
    """Replicas sharing a database: learn, every ``interval`` seconds, the
    hosts another replica revoked, so that none of their calls is served
    here for longer than that. (The whole revoked set: a time cursor would
    depend on the replicas' clocks agreeing.)"""

    async def follow() -> None:
        for host_id in sorted(await db.call(lambda s: s.host_ids(HostStatus.REVOKED))):
            if host_id not in revoked:
                log.info("host %s was revoked through another replica", host_id)
                revoked.add(host_id)

    await every(interval, stop, follow, "following revocations")


async def follow_lineage(
    db: StoreThread, ours: lineage.Lineage, interval: float, stop: asyncio.Event,
    left_behind: list[DataDirError],
) -> None:  # fmt: skip
    """Replicas sharing a database: every ``interval`` seconds, whether
    another replica now serves the fleet with a CA or signing key rotated
    on from this one's (started after a `rotate-key` or `rotate-ca` on its
    copy). Then this one stops, as it would refuse to start: it would sign
    orders with a key the fleet retired (refused by the agents once its
    grace ends, at once when revoked) and renew certificates from a CA the
    fleet is leaving. Its agents fail over to the replicas listed beside
    it. Why is put in ``left_behind`` and ``stop`` is set."""

    async def follow() -> None:
        recorded = await db.call(lambda s: s.recorded_lineage())
        try:
            lineage.reconcile(recorded, ours)
        except DataDirError as exc:
            log.error("%s; this replica stops serving", exc)
            left_behind.append(exc)
            stop.set()

    await every(interval, stop, follow, "following the fleet's keys")


# How long a scrape waits for the event loop to hand it the counts; a loop
# that busy fails the scrape (Prometheus shows the target down) rather than
# queue scrapes behind check-ins.
SCRAPE_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Extras:
    scrapes: metrics_listener.MetricsListener
    deliveries: Deliveries


async def _extras(
    data_dir: DataDir, settings: Settings, engine: CampaignEngine, db: StoreThread,
    admission: limits.Admission, watchers: Watchers, heartbeats: Heartbeats | None,
) -> _Extras:  # fmt: skip
    """What serves beside the gRPC listeners: the metrics listener and the
    webhook deliveries (each idle unless configured). Raises UsageError,
    before anything is served, for an address or a secret it cannot use."""
    hooks = [
        Webhook(hook.name, hook.url, _webhook_secret(data_dir, hook.secret_file))
        for hook in settings.webhooks
    ]
    for hook in hooks:
        problem = await asyncio.to_thread(reachable, hook.url)
        if problem:
            log.warning("webhook %s: %s cannot be reached now (%s); its events wait in the "
                        "outbox until it answers", hook.name, hook.url, problem)  # fmt: skip
    deliveries = Deliveries(db, hooks, leading=lambda: engine.leading is not False)
    scrapes = await _serve_metrics(
        settings.metrics_listen, engine, db, admission, watchers, heartbeats
    )
    return _Extras(scrapes, deliveries)


def reachable(url: str, timeout: float = 3.0) -> str:
    """Why a TCP connection to ``url``'s host and port fails ("" when it
    opens): told at start-up, so a mistyped receiver is seen at once."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


def _webhook_secret(data_dir: DataDir, path: Path) -> bytes:
    secret = data_dir.read(path).strip()
    if not secret:
        raise UsageError(f"{path}: the webhook secret is empty")
    return secret


def load_figures(
    admission: limits.Admission, watchers: Watchers, heartbeats: Heartbeats | None
) -> LoadFigures:
    """The load and push figures of a scrape (on the event loop)."""
    return LoadFigures(
        admission.shed, admission.capacity.per_second, len(watchers), watchers.nudged,
        watchers.waiting, 0 if heartbeats is None else heartbeats.answered,
    )  # fmt: skip


async def _serve_metrics(
    address: str, engine: CampaignEngine, db: StoreThread, admission: limits.Admission,
    watchers: Watchers, heartbeats: Heartbeats | None,
) -> metrics_listener.MetricsListener:  # fmt: skip
    """Start the metrics listener when configured (else one that serves
    nothing); raises UsageError when its address cannot be bound. The
    scrape thread reads the kept counts through the event loop, which
    owns them."""
    if not address:
        return metrics_listener.MetricsListener("", None, None)
    metrics = engine.metrics
    # The one full read of the hosts for metrics; from here on they are kept.
    metrics.presence.load(await db.call(lambda s: s.list_hosts(limit=10_000_000)))
    loop = asyncio.get_running_loop()

    async def snapshot() -> Snapshot:
        campaigns, states = engine.figures()
        presence = metrics.presence.figures(datetime.now(UTC))
        return Snapshot(campaigns, states, presence, load_figures(admission, watchers, heartbeats))

    def read() -> Snapshot:
        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(SCRAPE_TIMEOUT)

    metrics.registry.register(StateCollector(read))
    bound = metrics_listener.listen(address, metrics.registry)
    log.info("metrics on http://%s/metrics", bound.address)
    return bound


def _register(
    server: grpc.aio.Server, agents: AgentService, admin: AdminService, vulns: VulnService
) -> health.aio.HealthServicer:  # type: ignore[name-defined]
    """Add the services to ``server``; the health servicer, to set later."""
    lenient.add_servicer(server, agents, agent_pb2.DESCRIPTOR.services_by_name["AgentService"])
    lenient.add_servicer(server, admin, admin_pb2.DESCRIPTOR.services_by_name["AdminService"])
    lenient.add_servicer(server, vulns, vulns_pb2.DESCRIPTOR.services_by_name["VulnService"])
    # grpc-stubs predates the asyncio health servicer that grpcio-health-checking ships.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


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
    trusted_pem: bytes,
    pair: tuple[bytes, bytes],
    listen: str,
    enroll_listen: str,
) -> tuple[str, str]:
    """Bind the mutual-TLS and the enrollment listeners; their addresses.
    Client certificates are verified against ``trusted_pem`` (the CA, or
    both CAs during a rotation)."""
    mtls = grpc.ssl_server_credentials(
        [pair], root_certificates=trusted_pem, require_client_auth=True
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
