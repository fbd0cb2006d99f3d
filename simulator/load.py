"""`fleetpatch-sim load`: many simulated agents against a real controller,
over real gRPC with mutual TLS, to measure what it serves (issue 17).

The agents are enrolled for real (a key and a CSR each, a token made with
the admin certificate of the data dir), spread over several processes, and
connect gradually over the ramp with jitter, as a fleet coming up does.
Each then checks in on its own schedule (``--interval`` with jitter; 0:
back to back, to find the most the controller serves), hash-only as a
steady fleet does, with a full inventory now and then (``--change-rate``);
an order it is given is carried out in a simulated few seconds and
reported, succeeded or (``--failure-rate``) failed.

It prints check-ins per second, latency percentiles, errors by cause (the
status code and who ended the call) and, when the controller runs on this
machine, its CPU and memory, and its CPU seconds per 1,000 check-ins
(every process listening on the controller addresses: several replicas
comma-separated in ``--controller`` share the agents). With
``--bare`` the same agents, identities and messages then run against a bare
grpc.aio server with the same TLS in the same run (simulator/bare.py), and
the ratio is printed: what fleetpatch's own work costs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import multiprocessing
import multiprocessing.pool
import multiprocessing.synchronize
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.inventory import inventory_hash
from fleetpatch.overload import retry_after
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from agent.link.backoff import overload_delay
from agent.link.watch import nudge_delay
from simulator.errors import LoadFailed

T = TypeVar("T")
Stop = multiprocessing.synchronize.Event  # set by the parent: the workers stop and report
Identity = tuple[bytes, bytes]  # key PEM, certificate PEM
SAMPLE = 50_000  # latencies kept per process (a uniform sample beyond)


@dataclass(frozen=True)
class Plan:
    address: str  # the controller's mutual-TLS address
    enroll_address: str
    ca: bytes
    agents: int = 1000
    processes: int = 2
    seconds: float = 30.0
    ramp: float = 10.0
    interval: float = 0.0  # between one agent's check-ins; 0: back to back
    jitter: float = 0.2
    change_rate: float = 0.01
    failure_rate: float = 0.02
    packages: int = 300
    concurrency: int = 0  # check-ins in flight per process at most; 0: no bound
    push: bool = False  # each agent keeps a Watch stream open and checks in when nudged


@dataclass
class Tally:
    """One process's counts for one run; merged by `merge`."""

    checkins: int = 0
    total: int = 0  # check-ins answered from the start, ramp included (for CPU per check-in)
    inventories: int = 0
    orders: int = 0
    reports: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies seen, for the sample
    seconds: float = 0.0  # of the measured window
    shed: int = 0  # check-ins the controller shed with a retry delay (then waited out)
    reports_shed: int = 0  # report calls shed with a retry delay (sent again later)
    details: dict[str, str] = field(default_factory=dict)  # an example message per error
    streams: int = 0  # Watch streams the controller opened (--push)
    nudges: int = 0  # nudges received
    nudged: list[float] = field(default_factory=list)  # wall-clock ends of nudged check-ins
    nudge_times: list[float] = field(default_factory=list)  # wall-clock arrivals of nudges

    def failed(self, exc: grpc.aio.AioRpcError, measured: bool, rng: random.Random) -> float:
        """Count a failed check-in; how long to wait before the next. Shed
        with a retry delay: it is waited out, as an agent does. Answered
        UNAVAILABLE with a retry delay (the controller's database is down):
        an error, waited out as an agent does (between once and twice the
        delay), not retried at once as a lost connection is."""
        delay = shed_delay(exc)
        if delay is not None:
            self.shed += measured
            return delay
        if measured:
            self.error(exc)
        asked = overload_delay(unavailable_delay(exc), rng)
        return asked if asked is not None else rng.uniform(0.5, 1.5)

    def error(self, exc: grpc.aio.AioRpcError, call: str = "") -> None:
        """Count an error under its cause, with an example of its message."""
        name = f"{call} {cause(exc)}".strip()
        self.errors[name] += 1
        self.details.setdefault(name, str(exc.details())[:200])

    def latency(self, took: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(took)
        elif (slot := rng.randrange(self.seen)) < SAMPLE:
            self.latencies[slot] = took


def shed_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """The retry delay of a call the controller shed for load
    (RESOURCE_EXHAUSTED with one); None for any other failure."""
    if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    return retry_after(exc.trailing_metadata())


def unavailable_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """The retry delay of a call the controller answered UNAVAILABLE (its
    database cannot be reached); None for any other failure, a connection
    that failed or was lost among them."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return None
    return retry_after(exc.trailing_metadata())


CALL_TIMEOUT = 60.0  # the generator's deadline for a check-in or a report
LOCAL_CANCEL = "Locally cancelled"  # grpc.aio's details when this side cancels


def cause(exc: grpc.aio.AioRpcError) -> str:
    """The status code of a failed call and who ended it, as counted: a
    CANCELLED the server sent (its gRPC core cancels calls that wait past
    its backlog of calls not yet taken up: `grpc.server.max_pending_requests`)
    is not one this generator made, nor a deadline of its own."""
    code = exc.code()
    details = str(exc.details() or "")
    if code is grpc.StatusCode.CANCELLED:
        return (
            "CANCELLED (by this generator)"
            if details.startswith(LOCAL_CANCEL)
            else "CANCELLED (by the server)"
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"DEADLINE_EXCEEDED (the generator's {CALL_TIMEOUT:.0f} s deadline)"
    if code is grpc.StatusCode.UNAVAILABLE:
        if unavailable_delay(exc) is not None:
            return "UNAVAILABLE (the database down: answered with a retry delay, waited out)"
        return "UNAVAILABLE (connection failed or lost)"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED (shed without a retry delay)"
    return str(code.name)


@dataclass(frozen=True)
class Result:
    target: str
    agents: int
    seconds: float
    checkins_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    inventories: int
    orders: int
    reports: int
    errors: dict[str, int]
    shed: int = 0
    error_examples: dict[str, str] = field(default_factory=dict)
    reports_shed: int = 0  # report calls shed with a retry delay (sent again later)
    controller_cpu_percent: float | None = None  # of one core, over the window
    controller_rss_mib: float | None = None
    streams: int = 0  # --push: Watch streams opened
    nudges: int = 0
    # --push: when each nudged check-in was answered (seconds since the
    # epoch, this machine's clock), for the time from approval to check-in.
    nudged_checkins: list[float] = field(default_factory=list)
    nudges_received: list[float] = field(default_factory=list)  # when each nudge arrived
    # Check-ins answered over the whole run (ramp included), and the CPU
    # seconds the server's processes (all replicas) and, when given, the
    # database server's spent over the same run: the cost per 1,000.
    checkins_total: int = 0
    controller_cpu_seconds: float | None = None
    cpu_seconds_per_1000: float | None = None
    database_cpu_seconds_per_1000: float | None = None
    processes: int = 1  # server processes measured (replicas)
    interrupted: bool = False  # stopped by Ctrl-C: the figures of the window until then


def merge(
    target: str,
    plan: Plan,
    tallies: Sequence[Tally],
    usage: Measured | None,
    database: Measured | None = None,
    interrupted: bool = False,
) -> Result:
    """The processes' tallies as one result."""
    latencies = sorted(t for tally in tallies for t in tally.latencies)
    # Interrupted during the ramp, nothing was measured: no rate, not a made-up one.
    seconds = max(max((t.seconds for t in tallies), default=0.0), 0.0)
    checkins = sum(t.checkins for t in tallies)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    total = sum(t.total for t in tallies)

    def per_1000(measured: Measured | None) -> float | None:
        if measured is None or not total:
            return None
        return round(1000 * measured.cpu_seconds / total, 3)

    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for t in tallies:
        errors.update(t.errors)
        examples.update(t.details)
    return Result(
        target, plan.agents, round(seconds, 1), round(checkins / seconds, 1) if seconds else 0.0,
        round(pct(0.5), 2), round(pct(0.9), 2), round(pct(0.99), 2),
        sum(t.inventories for t in tallies), sum(t.orders for t in tallies),
        sum(t.reports for t in tallies), {k: v for k, v in errors.items() if v},
        sum(t.shed for t in tallies), examples, sum(t.reports_shed for t in tallies),
        controller_cpu_percent=None if usage is None else round(usage.cpu_percent, 1),
        controller_rss_mib=None if usage is None else round(usage.rss_mib, 1),
        streams=sum(t.streams for t in tallies), nudges=sum(t.nudges for t in tallies),
        nudged_checkins=sorted(t for tally in tallies for t in tally.nudged),
        nudges_received=sorted(t for tally in tallies for t in tally.nudge_times),
        checkins_total=total,
        controller_cpu_seconds=None if usage is None else round(usage.cpu_seconds, 2),
        cpu_seconds_per_1000=per_1000(usage), database_cpu_seconds_per_1000=per_1000(database),
        processes=1 if usage is None else usage.processes, interrupted=interrupted,
    )  # fmt: skip


# -- enrollment -----------------------------------------------------------------------


def enroll(plan: Plan, token: str, count: int, seed: int) -> list[Identity]:
    """Enroll ``count`` agents for real: a key each, a CSR, the Enroll RPC.
    Raises LoadFailed (one line, picklable: this runs in a worker) when the
    controller refuses or cannot be reached."""
    try:
        return _enroll(plan, token, count, seed)
    except grpc.RpcError as exc:
        from controller.cli.admin_client import exit_code_for  # only when it failed

        code: grpc.StatusCode = exc.code()
        details = " ".join(str(exc.details() or code.name).split())[:300]
        raise LoadFailed(
            f"enrolling simulated agents at {plan.enroll_address} failed: {code.name}: {details}",
            exit_code_for(code),
        ) from None


def _enroll(plan: Plan, token: str, count: int, seed: int) -> list[Identity]:
    creds = grpc.ssl_channel_credentials(root_certificates=plan.ca)
    found: list[Identity] = []
    with grpc.secure_channel(plan.enroll_address, creds) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for n in range(count):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(
                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"load-{seed}-{n}")])
                )
                .sign(key, hashes.SHA256())
            )
            request = agent_pb2.EnrollRequest(
                token=token, csr_pem=csr.public_bytes(serialization.Encoding.PEM),
                labels={"load": "sim"},
            )  # fmt: skip
            reply = _retrying(functools.partial(stub.Enroll, request, timeout=60))
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )  # fmt: skip
            found.append((key_pem, bytes(reply.certificate_pem)))
    return found


def _retrying(call: Callable[[], T]) -> T:
    """A call retried while the controller sheds load (RESOURCE_EXHAUSTED)."""
    for attempt in range(20):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == 19:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _enroll_worker(plan: Plan, token: str, count: int, seed: int) -> list[Identity]:
    return enroll(plan, token, count, seed)


# -- load -----------------------------------------------------------------------------


class _Agent:
    """One simulated agent: its channel, inventory and pending reports."""

    def __init__(
        self,
        addresses: Sequence[str],
        ca: bytes,
        identity: Identity,
        packages: int,
        rng: random.Random,
    ) -> None:
        key, cert = identity
        self.addresses = list(addresses)  # replicas, this agent's first one first
        self._creds = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
        self.retired: list[grpc.aio.Channel] = []  # closed at the end (a Watch may use one)
        self._connect()
        self.packages = [(f"pkg{i}", f"1.{rng.randrange(9)}-1", "amd64") for i in range(packages)]
        self.facts = types_pb2.HostFacts(
            hostname=f"load-{rng.randrange(1 << 30)}", os_id="debian", os_version="12",
            os_codename="bookworm", package_manager="apt", agent_version="0.1.0",
        )  # fmt: skip
        self.sent = ""  # the inventory hash the controller acknowledged
        self.pending: list[tuple[float, types_pb2.ProgressReport]] = []  # (due, final report)
        self.highest = 0  # the highest order sequence received, sent at each check-in
        self.wake = asyncio.Event()  # set by a nudge (--push)
        self.nudged = False  # the next check-in answers a nudge

    def _connect(self) -> None:
        self.channel = grpc.aio.secure_channel(self.addresses[0], self._creds)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)

    def fail_over(self) -> None:
        """The replica cannot be reached: the next one, as an agent does."""
        if len(self.addresses) > 1:
            self.addresses.append(self.addresses.pop(0))
            self.retired.append(self.channel)
            self._connect()

    def request(self, change: bool, rng: random.Random) -> agent_pb2.CheckInRequest:
        if change:
            n = rng.randrange(len(self.packages))
            name, version, arch = self.packages[n]
            self.packages[n] = (name, version + "+1", arch)
        digest = inventory_hash(self.packages)
        request = agent_pb2.CheckInRequest(
            facts=self.facts, inventory_hash=digest, highest_sequence=self.highest
        )
        if digest != self.sent:
            request.inventory.packages.extend(
                types_pb2.Package(name=n, version=v, arch=a) for n, v, a in self.packages
            )
        return request

    def take(
        self, envelope: types_pb2.SignedEnvelope, plan: Plan, tally: Tally, rng: random.Random
    ) -> None:
        """An order given: taken once (the next check-in says its sequence
        was received), its final report sent when its simulated work ends."""
        sequence, done = finished(envelope, plan, rng)
        if sequence > self.highest:
            self.highest = sequence
            tally.orders += 1
            self.pending.append(done)


def finished(
    envelope: types_pb2.SignedEnvelope, plan: Plan, rng: random.Random
) -> tuple[int, tuple[float, types_pb2.ProgressReport]]:
    """The order's sequence; when the simulated work on it ends, and
    its final report."""
    order = types_pb2.WorkOrder.FromString(envelope.payload)
    outcome = "FAILED" if rng.random() < plan.failure_rate else "SUCCEEDED"
    final = types_pb2.ProgressReport(
        idempotency_key=f"{order.order_id}-{outcome}", order_id=order.order_id, step=outcome,
        final=True, outcome=outcome, detail="simulated", sequence=order.sequence,
        campaign_id=order.campaign_id,
    )  # fmt: skip
    return order.sequence, (time.monotonic() + rng.uniform(1.0, 5.0), final)


async def _watch(agent: _Agent, tally: Tally, rng: random.Random, stop_at: float) -> None:
    """Keep the agent's Watch stream open (on its one connection) until
    ``stop_at``; a nudge wakes its check-in after a jittered delay within
    the spread asked for, the agent's (`nudge_delay`)."""
    while time.monotonic() < stop_at:
        call = agent.stub.Watch(agent_pb2.WatchRequest())
        try:
            await call.initial_metadata()
            tally.streams += 1
            async for nudge in call:
                tally.nudges += 1
                tally.nudge_times.append(time.time())
                await asyncio.sleep(nudge_delay(nudge, rng))
                agent.nudged = True
                agent.wake.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return
            tally.error(exc, "watch")
        await asyncio.sleep(rng.uniform(1.0, 5.0))


async def _pause(agent: _Agent, seconds: float) -> None:
    """Sleep until the agent's next check-in is due, or a nudge comes."""
    agent.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.wake.wait(), seconds)


async def _report(agent: _Agent, tally: Tally) -> None:
    """Send the reports that are due, between check-ins as an agent
    does (the controller serves a host one call at a time)."""
    due = [r for at, r in agent.pending if at <= time.monotonic()]
    if not due:
        return
    for final in due:
        final.at.GetCurrentTime()
    try:
        reports = agent_pb2.ReportProgressRequest(reports=due)
        await agent.stub.ReportProgress(reports, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        if shed_delay(exc) is not None:
            tally.reports_shed += 1  # kept, sent again after the next check-in, as an agent does
        else:
            tally.error(exc, "report")
        return
    tally.reports += len(due)
    agent.pending = [(at, r) for at, r in agent.pending if r not in due]


def _from(addresses: Sequence[str], n: int) -> list[str]:
    """``addresses`` starting from the ``n``-th (round the list)."""
    k = n % len(addresses)
    return [*addresses[k:], *addresses[:k]]


async def _run_agents(
    plan: Plan, identities: Sequence[Identity], address: str, seed: int, stop: Stop | None = None
) -> Tally:
    """One process's agents for the whole run, or until ``stop`` is set:
    then their calls are cancelled and what was counted until then is
    returned."""
    rng = random.Random(seed)
    tally = Tally()
    start = time.monotonic()
    measure_from = start + plan.ramp
    stop_at = measure_from + plan.seconds
    # Several replicas (comma-separated): the agents are spread over them,
    # each moving to the next when its own cannot be reached.
    addresses = [a for a in address.split(",") if a]
    agents = [
        _Agent(_from(addresses, n), plan.ca, identity, plan.packages, rng)
        for n, identity in enumerate(identities)
    ]

    # Bounded, the load is a steady number of calls in flight (a measure of
    # throughput); unbounded, every agent is always asking (a herd).
    slots: contextlib.AbstractAsyncContextManager[object] = (
        asyncio.Semaphore(plan.concurrency) if plan.concurrency else contextlib.nullcontext()
    )

    async def one(agent: _Agent) -> None:
        await asyncio.sleep(rng.uniform(0, plan.ramp))  # connect gradually, with jitter
        watching: asyncio.Future[None] | None = None
        try:
            while time.monotonic() < stop_at:
                await _report(agent, tally)
                request = agent.request(rng.random() < plan.change_rate and bool(agent.sent), rng)
                try:
                    async with slots:
                        began = time.perf_counter()
                        answer = await agent.stub.CheckIn(request, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    unreachable = (
                        exc.code() is grpc.StatusCode.UNAVAILABLE and unavailable_delay(exc) is None
                    )  # not a replica saying its database is down: the others share it
                    await asyncio.sleep(tally.failed(exc, time.monotonic() >= measure_from, rng))
                    if unreachable:
                        agent.fail_over()
                    continue
                took = time.perf_counter() - began
                tally.total += 1
                agent.sent = answer.known_inventory_hash
                if plan.push and watching is None:  # after the first check-in, as the agent
                    watching = asyncio.ensure_future(_watch(agent, tally, rng, stop_at))
                if agent.nudged:
                    agent.nudged = False
                    tally.nudged.append(time.time())
                if time.monotonic() >= measure_from:
                    tally.checkins += 1
                    tally.inventories += request.HasField("inventory")
                    tally.latency(took, rng)
                if answer.HasField("work_order"):
                    agent.take(answer.work_order, plan, tally, rng)
                if plan.interval:
                    due = plan.interval * rng.uniform(1 - plan.jitter, 1 + plan.jitter)
                    await _pause(agent, min(due, max(0.0, stop_at - time.monotonic())))
        finally:
            if watching is not None:
                watching.cancel()

    await _all_of([asyncio.ensure_future(one(a)) for a in agents], stop)
    tally.seconds = min(time.monotonic(), stop_at) - measure_from
    for agent in agents:
        for channel in (agent.channel, *agent.retired):
            await channel.close(None)
    return tally


STOP_POLL_SECONDS = 0.1  # how soon a worker sees the parent's stop


async def _all_of(agents: Sequence[asyncio.Future[None]], stop: Stop | None) -> None:
    """Wait for every agent, or cancel them all once ``stop`` is set. An
    agent's own failure is the run's, at once."""
    pending = set(agents)
    while pending and not (stop is not None and stop.is_set()):
        done, pending = await asyncio.wait(
            pending, timeout=STOP_POLL_SECONDS, return_when=asyncio.FIRST_EXCEPTION
        )
        if any(not agent.cancelled() and agent.exception() for agent in done):
            break
    for agent in pending:
        agent.cancel()
    if pending:
        await asyncio.wait(pending)
    for agent in agents:
        if not agent.cancelled():
            agent.result()


_worker_stop: list[Stop] = []  # in a worker: the parent's stop, from _worker_started


# After the parent told its workers to stop: how long their figures may take
# (they stop within a tenth of a second; one killed by a service manager
# never answers, and the pool would wait for its figures for ever).
STOP_WAIT_SECONDS = 15.0
# A second Ctrl-C or SIGTERM within this long of the first is the same one
# sent twice (`timeout` signals the command, then its process group), not a
# second one, which abandons the figures.
SAME_SIGNAL_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # prctl(2)


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started within ignore SIGINT from their first instruction
    (an ignored signal stays ignored across exec, and Python then installs
    no handler of its own): a worker still importing when Ctrl-C comes
    would otherwise print a traceback. The parent ignores it for as long as
    the processes take to start (milliseconds)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_started(stop: Stop, parent: int) -> None:
    """A worker leaves what is sent to the parent's process group (a
    terminal's Ctrl-C, `timeout`'s SIGTERM) to the parent, which stops it
    through ``stop``: its figures are then returned, where a worker killed
    mid-run would leave the pool waiting for them for ever. Out of that
    group, it ends with its parent however the parent ends (SIGKILL
    included): an orphan could wait for ever on a lock its dead sibling
    held, holding the parent's stdout open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    if os.getppid() != parent:  # it died before that was set
        os._exit(0)
    _worker_stop[:] = [stop]


def _load_worker(plan: Plan, identities: Sequence[Identity], address: str, seed: int) -> Tally:
    stop = _worker_stop[0] if _worker_stop else None
    return asyncio.run(_run_agents(plan, identities, address, seed, stop))


def run(
    plan: Plan, identities: Sequence[Identity], address: str, seed: int
) -> tuple[list[Tally], bool]:
    """The load over ``plan.processes`` processes, each with its share, and
    whether Ctrl-C (or SIGTERM) cut it short: then the processes are
    stopped and their figures until then returned."""
    shares = [identities[k :: plan.processes] for k in range(plan.processes)]
    context = multiprocessing.get_context("spawn")
    with _children_ignore_ctrl_c():
        stop = context.Event()
        pool = context.Pool(plan.processes, _worker_started, (stop, os.getpid()))
    with pool:
        pending = pool.starmap_async(
            _load_worker,
            [(plan, share, address, seed + k) for k, share in enumerate(shares) if share],
        )
        try:
            return pending.get(), False
        except KeyboardInterrupt:
            stop.set()
        return _stopped(pending), True


def _stopped(pending: multiprocessing.pool.ApplyResult[list[Tally]]) -> list[Tally]:
    """The figures of workers told to stop. A second Ctrl-C abandons them
    (the pool then ends its workers); so do workers that do not answer
    within STOP_WAIT_SECONDS."""
    since = time.monotonic()
    while True:
        try:
            return pending.get(timeout=STOP_WAIT_SECONDS)
        except KeyboardInterrupt:
            if time.monotonic() - since > SAME_SIGNAL_SECONDS:
                raise
        except multiprocessing.TimeoutError:
            raise LoadFailed(
                f"stopped; the load's processes did not hand their figures back within "
                f"{STOP_WAIT_SECONDS:.0f}s",
                130,
            ) from None


def enroll_all(plan: Plan, token: str, seed: int) -> list[Identity]:
    counts = [plan.agents // plan.processes + (k < plan.agents % plan.processes)
              for k in range(plan.processes)]  # fmt: skip
    context = multiprocessing.get_context("spawn")
    # Ctrl-C is the parent's alone: the workers are ended with the pool.
    with _children_ignore_ctrl_c():
        pool = context.Pool(plan.processes, _worker_started, (context.Event(), os.getpid()))
    with pool:
        parts = pool.starmap(
            _enroll_worker, [(plan, token, n, seed * 1000 + k) for k, n in enumerate(counts) if n]
        )
    return [i for part in parts for i in part]


# -- the controller's resource use ------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What `Usage` saw of a set of local processes over a window."""

    cpu_seconds: float  # user + system, from /proc, children included
    cpu_percent: float  # of one core
    rss_mib: float
    processes: int


class Usage:
    """CPU and RSS of local processes (each with its children: PostgreSQL's
    backends are its postmaster's) over a window, from /proc."""

    def __init__(self, pids: int | Sequence[int] | None) -> None:
        wanted = [pids] if isinstance(pids, int) else list(pids or [])
        self._procs: list[psutil.Process] = []
        for pid in wanted:
            with contextlib.suppress(psutil.Error):
                self._procs.append(psutil.Process(pid))
        self._cpu = self._cpu_now()
        self._at = time.monotonic()

    def _tree(self) -> list[psutil.Process]:
        found = []
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                found.extend([proc, *proc.children(recursive=True)])
        return found

    def _cpu_now(self) -> dict[int, float]:
        spent = {}
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                spent[proc.pid] = float(times.user + times.system)
        return spent

    def done(self) -> Measured | None:
        """What the processes used since this was made; None when there are
        none, or none is alive any more (a controller killed mid-run: its
        use is not known, and 0 would read as a figure)."""
        if not any(_alive(proc) for proc in self._procs):
            return None
        now = self._cpu_now()
        # A process that came during the window counts from zero; one that
        # went before its end is lost (the figure is then a floor).
        spent = sum(cpu - self._cpu.get(pid, 0.0) for pid, cpu in now.items())
        rss = 0.0
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss / 2**20
        seconds = max(time.monotonic() - self._at, 1e-9)
        return Measured(spent, 100 * spent / seconds, rss, len(self._procs))


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listening(addresses: Sequence[str]) -> list[int]:
    """The local processes listening on these HOST:PORT addresses (the
    controller replicas started here); [] when it cannot be told."""
    ports = {int(a.rpartition(":")[2]) for a in addresses if a.rpartition(":")[2].isdigit()}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []
    return sorted({
        c.pid for c in connections
        if c.status == psutil.CONN_LISTEN and c.pid and c.laddr and c.laddr.port in ports
        and c.pid != os.getpid()
    })  # fmt: skip


# -- the bare server --------------------------------------------------------------------


def start_bare(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """simulator/bare.py on a free loopback port with the controller's TLS.
    Raises LoadFailed, with the server's own last word, when it does not
    start (a data dir without the server's key, say)."""
    with tempfile.TemporaryFile("w+") as said:  # a file: a pipe unread would fill
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.bare", "--data-dir", str(data_dir),
             "--until-stdin-closes"],
            stdin=subprocess.PIPE,  # closed when this process ends, however it ends
            stdout=subprocess.PIPE, stderr=said, text=True,
            cwd=str(Path(__file__).resolve().parents[1]),
            process_group=0,  # a terminal's Ctrl-C stops the load, which then ends this server
        )  # fmt: skip
        try:
            line = proc.stdout.readline().strip() if proc.stdout is not None else ""
        except BaseException:  # Ctrl-C while it starts: not left running
            proc.kill()
            proc.wait()
            raise
        if not line:
            proc.kill()
            proc.wait()
            said.seek(0)
            words = [text.strip() for text in said.read().splitlines() if text.strip()]
            raise LoadFailed(f"--bare: the bare server did not start: {(words or ['?'])[-1]}")
    return proc, line


def as_json(results: Sequence[Result]) -> str:
    doc: dict[str, object] = {"runs": [asdict(r) for r in results]}
    if len(results) == 2 and results[1].checkins_per_second:
        doc["ratio"] = round(results[0].checkins_per_second / results[1].checkins_per_second, 3)
        ours, bare = results[0].cpu_seconds_per_1000, results[1].cpu_seconds_per_1000
        if ours and bare:
            doc["cpu_ratio"] = round(ours / bare, 3)
    return json.dumps(doc, indent=2, sort_keys=True)


def table(results: Sequence[Result]) -> str:
    wide = max([34, *(len(r.target) for r in results)])  # several replicas make a long one
    lines = [f"{'target':<{wide}} {'agents':>7} {'check-ins/s':>12} {'p50 ms':>8} {'p90 ms':>8} "
             f"{'p99 ms':>8} {'errors':>7} {'ctl CPU %':>10} {'ctl RSS MiB':>12} "
             f"{'CPU s/1k':>9} {'db s/1k':>8}"]  # fmt: skip
    for r in results:
        cpu = "-" if r.controller_cpu_percent is None else f"{r.controller_cpu_percent:.0f}"
        rss = "-" if r.controller_rss_mib is None else f"{r.controller_rss_mib:.0f}"
        per = "-" if r.cpu_seconds_per_1000 is None else f"{r.cpu_seconds_per_1000:.3f}"
        db = "-" if r.database_cpu_seconds_per_1000 is None else (
            f"{r.database_cpu_seconds_per_1000:.3f}"
        )  # fmt: skip
        lines.append(
            f"{r.target:<{wide}} {r.agents:>7} {r.checkins_per_second:>12,.0f} {r.p50_ms:>8.1f} "
            f"{r.p90_ms:>8.1f} {r.p99_ms:>8.1f} {sum(r.errors.values()):>7} {cpu:>10} {rss:>12} "
            f"{per:>9} {db:>8}"
        )
    if len(results) == 2 and results[1].checkins_per_second:
        ratio = results[0].checkins_per_second / results[1].checkins_per_second
        lines.append(f"controller / bare server: {100 * ratio:.0f} %")
        ours, bare = results[0].cpu_seconds_per_1000, results[1].cpu_seconds_per_1000
        if ours and bare:
            lines.append(
                f"CPU per 1,000 check-ins: controller {ours:.3f} s ({results[0].processes} "
                f"process(es)), bare {bare:.3f} s: {ours / bare:.2f}x"
            )
    for r in results:
        if r.interrupted:
            lines.append(f"{r.target}: interrupted after {r.seconds:.0f} s measured")
        if r.streams or r.nudges:
            lines.append(f"{r.target}: {r.streams} Watch streams opened, {r.nudges} nudges, "
                         f"{len(r.nudged_checkins)} nudged check-ins")  # fmt: skip
        if r.shed:
            lines.append(f"{r.target}: {r.shed} check-ins shed with a retry delay (waited out)")
        if r.reports_shed:
            lines.append(f"{r.target}: {r.reports_shed} report calls shed with a retry delay "
                         "(sent again later)")  # fmt: skip
        for name, n in sorted(r.errors.items()):
            lines.append(f"{r.target}: {n} x {name}: {r.error_examples.get(name, '')}")
    return "\n".join(lines)


def pid_of(data_dir: Path) -> int | None:
    """The controller's pid when `serve` of this data dir runs here."""
    try:
        pid = int(json.loads((data_dir / "endpoints.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if psutil.pid_exists(pid) and pid != os.getpid() else None
