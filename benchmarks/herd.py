"""A fleet meeting its controller again after an outage.

N hosts (real identities, real mutual TLS on loopback, real SQLite) check
in on the controller's interval. The controller is stopped for a while,
then started again, and every host reconnects within the first 10 s after
the restart, a quarter of them with a full inventory: the herd. From then
on each host follows the agent's own retry policy
(`agent.link.backoff.retry_delay`: as long as an overloaded controller
asks, else full-jitter backoff capped at the interval).

Printed: how long until every host had checked in again (target: within
two check-in intervals, none lost), the answers by status, and how many
the controller shed; against a baseline in the same run: the same fleet
reconnecting spread over the interval, as agents whose backoff reached
its cap do.

    .venv/bin/python benchmarks/herd.py [--hosts 2000] [--interval 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from fleetpatch.inventory import inventory_hash
from fleetpatch.overload import retry_after
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.link.backoff import retry_delay
from agent.statedir import Timing
from benchmarks.checkin_load import PACKAGES, enroll_all, host_channel, init_controller, serve, stop
from benchmarks.options import at_least, seconds

HERD_SECONDS = 10.0
MAX_RETRY = Timing().max_retry_delay.total_seconds()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Herd:
    """What the hosts saw after the restart."""

    restarted_at: float = 0.0
    back: dict[int, float] = field(default_factory=dict)  # host -> seconds to its check-in
    answers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


def requests() -> tuple[agent_pb2.CheckInRequest, agent_pb2.CheckInRequest]:
    full = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="herd", os_id="debian"),
        inventory_hash=inventory_hash(PACKAGES),
        inventory=types_pb2.Inventory(
            packages=[types_pb2.Package(name=n, version=v, arch=a) for n, v, a in PACKAGES]
        ),
    )
    return full, agent_pb2.CheckInRequest(facts=full.facts, inventory_hash=full.inventory_hash)


async def reconnect(
    index: int,
    stub: agent_pb2_grpc.AgentServiceAsyncStub,
    request: agent_pb2.CheckInRequest,
    first_try: float,
    interval: float,
    herd: Herd,
    rng: random.Random,
) -> None:
    """One host after the restart: first try at ``first_try`` seconds, then
    as the agent retries, until one check-in succeeds."""
    await asyncio.sleep(first_try)
    failures = 0
    while True:
        started = time.perf_counter()
        try:
            await stub.CheckIn(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            herd.answers[exc.code().name] += 1
            failures += 1
            hint = None
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                hint = retry_after(exc.trailing_metadata())
            delay = retry_delay(
                failures, rng, max_delay=MAX_RETRY, interval=interval, retry_after=hint
            )
            await asyncio.sleep(delay)
            continue
        herd.latencies.append(time.perf_counter() - started)
        herd.answers["OK"] += 1
        herd.back[index] = time.monotonic() - herd.restarted_at
        return


async def run_herd(
    port: int, ca: bytes, identities: list[tuple[bytes, bytes]], spread: float, interval: float
) -> Herd:
    rng = random.Random(7)
    channels = [host_channel(port, ca, identity) for identity in identities]
    stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in channels]
    full, steady = requests()
    herd = Herd(restarted_at=time.monotonic())
    await asyncio.gather(
        *(
            reconnect(
                i, stub, full if i % 4 == 0 else steady, rng.uniform(0, spread), interval, herd,
                random.Random(i),
            )
            for i, stub in enumerate(stubs)
        )
    )  # fmt: skip
    for channel in channels:
        await channel.close(None)
    return herd


async def first_contact(port: int, ca: bytes, identities: list[tuple[bytes, bytes]]) -> None:
    """Every host's first check-in (it activates the host), before the outage."""
    full, _ = requests()
    for start in range(0, len(identities), 200):
        channels = [host_channel(port, ca, i) for i in identities[start : start + 200]]
        await asyncio.gather(
            *(agent_pb2_grpc.AgentServiceStub(c).CheckIn(full, timeout=60) for c in channels)
        )
        for channel in channels:
            await channel.close(None)


def trial(args: argparse.Namespace, port: int, spread: float) -> Herd:
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-") as tmp:
        data = Path(tmp) / "ctl"
        init_controller(data, port, f"{args.interval:.0f}s")
        proc = serve(data, timeout=30)
        try:
            say(f"  enrolling {args.hosts} hosts")
            identities = enroll_all(data, port, args.hosts)
            ca = (data / "ca.pem").read_bytes()
            asyncio.run(first_contact(port, ca, identities))
        finally:
            stop(proc)
        say(f"  controller down for {args.outage:.0f}s, then back")
        time.sleep(args.outage)
        proc = serve(data, timeout=30)
        try:
            return asyncio.run(run_herd(port, ca, identities, spread, args.interval))
        finally:
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=at_least(1), default=2000)
    parser.add_argument("--interval", type=seconds(), default=30.0, help="check-in interval, s")
    parser.add_argument(
        "--outage", type=seconds(above=False), default=5.0, help="seconds the controller is down"
    )
    parser.add_argument(
        "--herd", type=seconds(), default=HERD_SECONDS, help="seconds over which the herd arrives"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.hosts * 2 + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.hosts * 2 + 256), hard))
    port = 20000 + os.getpid() % 20000
    rows = []
    for label, spread in (
        ("baseline: spread over the interval", args.interval),
        (f"herd: all within {args.herd:g}s", args.herd),
    ):
        say(label)
        rows.append((label, trial(args, port, spread)))
        port += 2
    print(f"{args.hosts} hosts, check-in interval {args.interval:.0f}s")
    print(f"{'run':36} {'back':>6} {'last s':>7} {'p50 ms':>7} {'p99 ms':>7}  answers")
    for label, herd in rows:
        lat = sorted(herd.latencies)
        p50, p99 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000
        answers = ", ".join(f"{n} {code}" for code, n in herd.answers.most_common())
        print(f"{label:36} {len(herd.back):6d} {max(herd.back.values()):7.1f} {p50:7.1f} "
              f"{p99:7.1f}  {answers}")  # fmt: skip
    herd = rows[-1][1]
    lost = args.hosts - len(herd.back)
    last = max(herd.back.values())
    print(f"herd: every host back after {last:.1f}s = {last / args.interval:.2f} intervals "
          f"(target 2), {lost} lost")  # fmt: skip


if __name__ == "__main__":
    main()
