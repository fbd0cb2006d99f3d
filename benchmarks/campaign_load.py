"""Check-in throughput of a real controller with and without a campaign
running, at several fleet sizes, and how long `campaign show` takes.

For each fleet size: a fresh controller (real mutual TLS on loopback, real
SQLite, group commit on) enrolls --hosts real identities through the Enroll
RPC; it is stopped, the store is topped up to the fleet size with seeded
host rows (active, seen just now, spread over three regions and rings 0-2),
and it is started again. Then, as checkin_load.py does, the real identities
check in hash-only as fast as the controller answers, twice: with no
campaign (idle), and with a campaign over every host approved and running
at steady state (a window open now, ring 0 with 5 hosts in flight that
never report, everyone else waiting on the concurrency budget or the ring
gate). Last, it times GetCampaign, the RPC behind `campaign show ID --json`,
over one admin mTLS channel (median of 20 calls, CLI start-up excluded; one
CLI call is timed too, on stderr).

    .venv/bin/python -m benchmarks.campaign_load [--fleet 1000,10000,100000] [--hosts 1000]
        [--seconds 10] [--concurrency 64]
    .venv/bin/python benchmarks/campaign_load.py ...   # the same

About a minute per fleet size up to 10,000 at --seconds 10; longer at
100,000 when the controller slows down under the campaign.

Prints a table per fleet size (check-ins/s idle and running, their ratio,
p99s, `campaign show` ms) and whether each size met "running >= 90% of
idle" and "show < 100 ms"; progress and phase timings go to stderr. On a
2-core machine the load generator shares the cores with the controller, so
the figures are a floor for a controller on its own box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.checkin_load import (
    BIN,
    PACKAGES,
    enroll_all,
    load,
    serve,
    start_controller,
    stop,
)
from benchmarks.options import at_least, seconds

# The real identities are enrolled in ("eu", ring 0) by enroll_all; the
# seeded hosts are spread over these regions and rings, ring 0 (canaries)
# small, ring 2 (everything else) large.
REGIONS = ("eu", "us", "ap")
RING_SHARES = ((0, 0.02), (1, 0.18), (2, 0.80))
SHOW_CALLS = 20

CAMPAIGN = """\
# campaign_load.py: a week-long rollout at steady state. Ring 0 has a handful
# of hosts in flight (they never report: the benchmark hosts only check in),
# the rest of ring 0 waits on its concurrency budget, rings 1 and 2 on the
# ring gate.
[campaign]
name = "bench-steady"
description = "campaign_load benchmark"

[patch]
packages = ["{package}"]

[rollout]
region_order = "parallel"
report_timeout = "6h"

[[rollout.rings]]
ring = 0
concurrency = 5

[[rollout.rings]]
ring = 1

[[rollout.rings]]
ring = 2

[windows]
timezone = "UTC"
weekly = ["Mon-Sun 00:00-23:59"]
"""

HOST_COLUMNS = (
    "host_id", "region", "ring", "labels", "status", "token_id", "enrolled_at", "last_seen",
    "facts", "health", "inventory_hash", "package_count", "cert_serial", "cert_expires_at",
)  # fmt: skip


@dataclass
class Result:
    fleet: int
    idle: tuple[float, float, float] | None  # check-ins/s, p50 ms, p99 ms; None: the run failed
    running: tuple[float, float, float] | None
    show_ms: float | None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.monotonic()
    say(f"    {name} ...")
    yield
    say(f"    {name}: {time.monotonic() - started:.1f}s")


def seed_hosts(db_path: Path, extra: int) -> None:
    """Insert ``extra`` active host rows shaped like a real enrolled one, in
    one transaction. The controller must be stopped."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        real = conn.execute("SELECT * FROM hosts ORDER BY enrolled_at LIMIT 1").fetchone()
        if real is None:
            raise SystemExit(f"{db_path}: no enrolled host to copy")
        taken = {row[0] for row in conn.execute("SELECT host_id FROM hosts")}
        facts = json.loads(real["facts"])
        facts.update(hostname="bench", os_id="debian")  # what the load's check-ins report
        facts_json = json.dumps(facts)
        now = time.time()
        rows = []
        rings = [ring for ring, share in RING_SHARES for _ in range(round(share * 100))]
        for i in range(extra):
            host_id = "h-" + secrets.token_hex(8)
            while host_id in taken:
                host_id = "h-" + secrets.token_hex(8)
            taken.add(host_id)
            rows.append((
                host_id, REGIONS[i % len(REGIONS)], rings[i % len(rings)], real["labels"],
                "active", real["token_id"], now, now, facts_json, real["health"], "", 0,
                secrets.token_hex(16), real["cert_expires_at"],
            ))  # fmt: skip
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO hosts ({', '.join(HOST_COLUMNS)})"  # noqa: S608 - fixed column names
            f" VALUES ({', '.join('?' * len(HOST_COLUMNS))})",
            rows,
        )
        conn.execute("COMMIT")
        total = conn.execute("SELECT count(*) FROM hosts").fetchone()[0]
    finally:
        conn.close()
    say(f"    store now holds {total:,} hosts")


def fleetpatch(*args: str) -> str:
    """Run the admin CLI; its stdout, or exit naming what it said."""
    done = subprocess.run(
        [str(BIN / "fleetpatch"), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(
            f"fleetpatch {' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def start_campaign(data: Path) -> str:
    spec = data.parent / "campaign.toml"
    spec.write_text(CAMPAIGN.format(package=PACKAGES[0][0]))
    campaign_id = fleetpatch("campaign", "create", str(spec), "--data-dir", str(data))
    campaign_id = campaign_id.strip().splitlines()[-1]
    fleetpatch("campaign", "approve", campaign_id, "--data-dir", str(data))
    return campaign_id


def measure(
    port: int, data: Path, identities: list[tuple[bytes, bytes]], args: argparse.Namespace
) -> tuple[float, float, float] | None:
    """Check-ins/s, p50 ms and p99 ms of the real identities checking in;
    None when a check-in failed (load gives each one 60 s, and first has
    every identity check in once with its full inventory, all at once)."""
    started = time.monotonic()
    try:
        done, lat = asyncio.run(
            load(port, (data / "ca.pem").read_bytes(), identities, args.seconds, args.concurrency)
        )
    except grpc.RpcError as exc:
        took = time.monotonic() - started
        say(f"    the load failed after {took:.0f}s: {exc.code().name} {exc.details()}")
        if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and took < 60 + args.seconds:
            say(f"    (the first contact of {len(identities)} check-ins did not all finish "
                f"within 60s: under {len(identities) / 60:.0f} check-ins/s)")  # fmt: skip
        return None
    lat.sort()
    rate, p50, p99 = done / args.seconds, statistics.median(lat), lat[int(len(lat) * 0.99)]
    say(f"    {rate:,.0f} check-ins/s, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {lat[-1] * 1000:.0f} ms")  # fmt: skip
    if lat[-1] > 0.1 * args.seconds:
        say(f"    (the slowest check-in overran the {args.seconds:.0f}s window by up to "
            f"{lat[-1]:.1f}s: check-ins/s is counted over the window)")  # fmt: skip
    return rate, p50 * 1000, p99 * 1000


def admin_stub(data: Path) -> tuple[grpc.Channel, admin_pb2_grpc.AdminServiceStub]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(data / "ca.pem").read_bytes(),
        private_key=(data / "admin.key").read_bytes(),
        certificate_chain=(data / "admin.pem").read_bytes(),
    )
    address = json.loads((data / "endpoints.json").read_text())["address"]
    channel = grpc.secure_channel(address, creds)
    return channel, admin_pb2_grpc.AdminServiceStub(channel)


def time_show(data: Path, campaign_id: str) -> float | None:
    """Median ms of GetCampaign (what `campaign show ID --json` calls)."""
    channel, stub = admin_stub(data)
    request = admin_pb2.CampaignRequest(campaign_id=campaign_id)
    times = []
    try:
        for _ in range(SHOW_CALLS):
            started = time.perf_counter()
            campaign = stub.GetCampaign(request, timeout=300).campaign
            times.append((time.perf_counter() - started) * 1000)
    except grpc.RpcError as exc:
        say(f"    GetCampaign failed: {exc.code().name} {exc.details()}")
        return None
    finally:
        channel.close()
    cells = list(campaign.cells)
    waiting: dict[str, int] = {}
    for cell in cells:
        for reason, n in cell.waiting_reasons.items():
            waiting[reason] = waiting.get(reason, 0) + n
    say(f"    campaign {campaign.state}: {sum(c.eligible for c in cells):,} eligible, "
        f"{sum(c.in_flight for c in cells)} in flight, waiting {waiting}")  # fmt: skip
    say(f"    GetCampaign x{SHOW_CALLS}: first {times[0]:.1f} ms, min {min(times):.1f} ms, "
        f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms")  # fmt: skip
    started = time.perf_counter()
    fleetpatch("campaign", "show", campaign_id, "--json", "--data-dir", str(data))
    say(f"    one `fleetpatch campaign show --json` process, start-up included: "
        f"{(time.perf_counter() - started) * 1000:.0f} ms")  # fmt: skip
    return statistics.median(times)


def run(fleet: int, port: int, args: argparse.Namespace) -> Result:
    result = Result(fleet, None, None, None)
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-") as tmp:
        data = Path(tmp) / "ctl"
        with phase(f"start a controller, enroll {args.hosts} hosts"):
            proc = start_controller(data, port, 1000)
            try:
                identities = enroll_all(data, port, args.hosts)
            finally:
                stop(proc)
        with phase(f"seed {max(fleet - args.hosts, 0):,} more hosts"):
            seed_hosts(data / "controller.db", max(fleet - args.hosts, 0))
        with phase("restart the controller"):
            proc = serve(data, timeout=120)
        try:
            with phase("idle check-ins"):
                result.idle = measure(port, data, identities, args)
            with phase("create and approve the campaign"):
                campaign_id = start_campaign(data)
            with phase("check-ins with the campaign running"):
                result.running = measure(port, data, identities, args)
            with phase("campaign show"):
                result.show_ms = time_show(data, campaign_id)
        finally:
            with phase("stop the controller"):
                stop(proc)
    return result


def report(results: list[Result]) -> None:
    def cell(value: float | None, spec: str) -> str:
        return "failed" if value is None else format(value, spec)

    def pick(measured: tuple[float, float, float] | None, i: int) -> float | None:
        return None if measured is None else measured[i]

    print(f"{'fleet':>8} {'idle/s':>8} {'running/s':>10} {'ratio %':>8} {'p99 idle ms':>12} "
          f"{'p99 run ms':>11} {'show ms':>8}")  # fmt: skip
    verdicts = []
    for r in results:
        idle, running = pick(r.idle, 0), pick(r.running, 0)
        ratio = None if idle is None or running is None else 100 * running / idle
        print(
            f"{r.fleet:>8,} {cell(idle, ',.0f'):>8} {cell(running, ',.0f'):>10} "
            f"{cell(ratio, '.0f'):>8} {cell(pick(r.idle, 2), '.1f'):>12} "
            f"{cell(pick(r.running, 2), '.1f'):>11} {cell(r.show_ms, '.1f'):>8}"
        )
        throughput = "yes" if ratio is not None and ratio >= 90 else "NO"
        show = "yes" if r.show_ms is not None and r.show_ms < 100 else "NO"
        verdicts.append(f"{r.fleet:,}: running >= 90% of idle {throughput}, show < 100 ms {show}")
    print("; ".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", default="1000,10000,100000",
                        help="comma-separated fleet sizes (default 1000,10000,100000)")  # fmt: skip
    parser.add_argument(
        "--hosts", type=at_least(1), default=1000, help="real identities checking in"
    )
    parser.add_argument("--seconds", type=seconds(), default=10.0)
    parser.add_argument("--concurrency", type=at_least(1), default=64)
    args = parser.parse_args()
    try:
        fleets = [int(f.replace("_", "")) for f in args.fleet.split(",") if f.strip()]
    except ValueError:
        parser.error(f"--fleet {args.fleet!r}: give sizes such as 1000,10000")
    if not fleets or min(fleets) < args.hosts:
        parser.error(f"every fleet size must be at least --hosts ({args.hosts})")
    now = time.gmtime()
    if now.tm_hour == 23 and now.tm_min >= 58:
        say("warning: the campaign's window closes at 23:59 UTC; results may show no orders")
    sizes = ", ".join(f"{f:,}" for f in fleets)
    say(f"{args.hosts} real hosts, {args.concurrency} concurrent check-ins, "
        f"{args.seconds:.0f}s per measurement, fleets {sizes}")  # fmt: skip
    base = 20000 + os.getpid() % 20000
    results = []
    for i, fleet in enumerate(fleets):
        say(f"fleet {fleet:,}:")
        started = time.monotonic()
        results.append(run(fleet, base + 2 * i, args))
        say(f"  fleet {fleet:,} done in {time.monotonic() - started:.0f}s")
    report(results)


if __name__ == "__main__":
    main()
