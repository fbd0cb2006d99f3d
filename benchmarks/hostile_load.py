"""A hostile host and a flood of idle connections against a real controller.

Two experiments, each on a fresh controller (real mutual TLS on loopback,
real SQLite), each beside a baseline measured in the same run:

1. One greedy host sends six parallel check-ins, again and again, while 200
   hosts check in normally (each once a second). Twice: with 30 MiB
   requests (over the controller's 16 MiB cap) and with 50,000-package
   inventories just under it (accepted, checked and stored). Printed: the
   controller's RSS idle, at its peak and 5 s after, the normal hosts' p50
   and p99 latency against the same 200 hosts with nobody greedy, and what
   the greedy host got back.
   Target: RSS within +200 MB of idle and back to it; p99 under 1 s.
2. 2,000 bare TCP connections that never start TLS are held open; then a
   new host enrolls and checks in. Printed: how long each took, against
   the same calls with no connections open. Target: under 2 s.

    .venv/bin/python benchmarks/hostile_load.py [--hosts 200] [--seconds 15]
        [--idle 2000]

On a 2-core machine the load generator shares the cores with the
controller, so the latencies are a ceiling for a controller on its own box.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from fleetpatch.inventory import inventory_hash
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.checkin_load import PACKAGES, enroll_all, host_channel, start_controller
from benchmarks.options import at_least, seconds

MiB = 1024 * 1024
GREEDY_PARALLEL = 6


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def controller(port: int) -> Iterator[tuple[Path, psutil.Process]]:
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-") as tmp:
        data = Path(tmp) / "ctl"
        proc = start_controller(data, port, 1000)
        try:
            yield data, psutil.Process(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _request(packages: list[tuple[str, str, str]], full: bool) -> agent_pb2.CheckInRequest:
    request = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="bench", os_id="debian"),
        inventory_hash=inventory_hash(packages),
    )
    if full:
        request.inventory.CopyFrom(
            types_pb2.Inventory(
                packages=[types_pb2.Package(name=n, version=v, arch=a) for n, v, a in packages]
            )
        )
    return request


def greedy_request(size: int) -> agent_pb2.CheckInRequest:
    """A check-in of about ``size`` bytes: 50,000 packages (the most an
    inventory may list) with names and versions as long as it takes."""
    entries = 50_000
    room = max(8, (size // entries - 16) // 2)
    if room <= 200:
        packages = [(f"p{i:05d}-" + "n" * (room - 7), "1." + "v" * (room - 2), "amd64")
                    for i in range(entries)]  # fmt: skip
        return _request(packages, full=True)
    # Over the cap: the controller must refuse it before reading it; the
    # bytes only need to be a message of that size.
    request = _request([("bash", "5.2", "amd64")], full=True)
    request.facts.hostname = "h" * size
    return request


@dataclass
class Sampler:
    """The controller's RSS, sampled every 20 ms in the background."""

    process: psutil.Process
    peak: int = 0
    task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.peak = self.rss()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    greedy: Counter[str] = field(default_factory=Counter)
    idle_rss: int = 0
    peak_rss: int = 0
    after_rss: int = 0


async def polite_and_greedy(
    port: int,
    ca: bytes,
    identities: list[tuple[bytes, bytes]],
    seconds: float,
    process: psutil.Process,
    greedy_size: int | None,
) -> Outcome:
    """Normal hosts check in once a second for ``seconds``; with
    ``greedy_size``, the first identity sends six parallel check-ins of
    that size all along."""
    outcome = Outcome()
    greedy_identity, *polite = identities
    channels = [host_channel(port, ca, identity) for identity in polite]
    stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in channels]
    full, steady = _request(PACKAGES, True), _request(PACKAGES, False)
    await asyncio.gather(*(stub.CheckIn(full, timeout=60) for stub in stubs))  # first contact
    await asyncio.sleep(1)
    sampler = Sampler(process)
    outcome.idle_rss = sampler.rss()
    sampler.start()
    stop_at = time.monotonic() + seconds

    async def polite_host(stub: agent_pb2_grpc.AgentServiceAsyncStub, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await stub.CheckIn(steady, timeout=60)
                outcome.latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                outcome.errors[exc.code().name] += 1
            await asyncio.sleep(1.0)

    # The greedy host is a process of its own: building and sending its
    # requests must not slow the loop that times the polite hosts.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        greedy = None
        if greedy_size is not None:
            greedy = asyncio.get_running_loop().run_in_executor(
                pool, run_greedy, port, ca, greedy_identity, greedy_size, stop_at
            )
        await asyncio.gather(*(polite_host(s, i / len(stubs)) for i, s in enumerate(stubs)))
        if greedy is not None:
            outcome.greedy = await greedy
    await asyncio.sleep(5)
    await sampler.stop()
    outcome.peak_rss = sampler.peak
    outcome.after_rss = sampler.rss()
    for channel in channels:
        await channel.close(None)
    return outcome


def run_greedy(
    port: int, ca: bytes, identity: tuple[bytes, bytes], size: int, stop_at: float
) -> Counter[str]:
    """Six parallel check-ins of ``size`` bytes from one host, again and
    again until ``stop_at`` (a monotonic time); what came back."""
    big = greedy_request(size)
    say(f"    greedy requests are {big.ByteSize() / MiB:.1f} MiB each")
    got: Counter[str] = Counter()

    async def send() -> None:
        channel = host_channel(port, ca, identity)
        stub = agent_pb2_grpc.AgentServiceStub(channel)

        async def one() -> None:
            while time.monotonic() < stop_at:
                try:
                    await stub.CheckIn(big, timeout=60)
                    got["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    got[exc.code().name] += 1

        await asyncio.gather(*(one() for _ in range(GREEDY_PARALLEL)))
        await channel.close(None)

    asyncio.run(send())
    return got


def experiment_greedy(args: argparse.Namespace, port: int) -> None:
    say(f"1. one greedy host, {GREEDY_PARALLEL} parallel check-ins, beside {args.hosts} hosts")
    rows = []
    for label, size in (
        ("baseline: nobody greedy", None),
        ("greedy, 30 MiB requests", 30 * MiB),
        ("greedy, 15 MiB requests", 15 * MiB),
    ):
        with controller(port) as (data, process):
            identities = enroll_all(data, port, args.hosts + 1)
            say(f"  {label}")
            outcome = asyncio.run(
                polite_and_greedy(
                    port, (data / "ca.pem").read_bytes(), identities, args.seconds, process, size
                )
            )
        rows.append((label, outcome))
        port += 2
    print(f"{'run':26} {'idle MB':>8} {'peak MB':>8} {'after MB':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'errors':>7}  greedy host got")  # fmt: skip
    for label, o in rows:
        lat = sorted(o.latencies)
        p50, p99 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000
        got = ", ".join(f"{n} {code}" for code, n in o.greedy.most_common()) or "-"
        print(f"{label:26} {o.idle_rss / 1e6:8.0f} {o.peak_rss / 1e6:8.0f} "
              f"{o.after_rss / 1e6:8.0f} {p50:7.1f} {p99:7.1f} {sum(o.errors.values()):7d}  "
              f"{got}")  # fmt: skip
    worst = max(o.peak_rss - o.idle_rss for _, o in rows[1:]) / 1e6
    print(f"greedy runs: peak at most +{worst:.0f} MB over idle (target +200 MB)")


def timed_calls(port: int, data: Path) -> tuple[float, float]:
    """Seconds for one enrollment, then for that host's first check-in."""
    started = time.perf_counter()
    [identity] = enroll_all(data, port, 1)
    enrolled = time.perf_counter() - started
    ca = (data / "ca.pem").read_bytes()
    key, cert = identity
    creds = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
    started = time.perf_counter()
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        agent_pb2_grpc.AgentServiceStub(channel).CheckIn(_request(PACKAGES, True), timeout=30)
    return enrolled, time.perf_counter() - started


def experiment_idle(args: argparse.Namespace, port: int) -> None:
    say(f"2. {args.idle} idle TCP connections held open")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle * 2 + 256), hard))
    with controller(port) as (data, _):
        base = timed_calls(port, data)
        idle = []
        try:
            for i in range(args.idle):
                target = port if i % 2 == 0 else port + 1  # both listeners
                idle.append(socket.create_connection(("127.0.0.1", target), timeout=10))
            loaded = timed_calls(port, data)
        finally:
            for conn in idle:
                conn.close()
    print(f"{'run':26} {'enroll s':>9} {'check-in s':>11}")
    print(f"{'baseline: none open':26} {base[0]:9.3f} {base[1]:11.3f}")
    print(f"{f'{args.idle} idle connections':26} {loaded[0]:9.3f} {loaded[1]:11.3f}")
    print(f"with idle connections: {max(loaded):.2f} s at most (target 2 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=at_least(1), default=200)
    parser.add_argument("--seconds", type=seconds(), default=15.0)
    parser.add_argument("--idle", type=at_least(1), default=2000)
    args = parser.parse_args()
    port = 20000 + os.getpid() % 20000
    experiment_greedy(args, port)
    print()
    experiment_idle(args, port + 10)


if __name__ == "__main__":
    main()
