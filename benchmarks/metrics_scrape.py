"""How long a Prometheus scrape of a real controller takes with 100,000
hosts and 20 running campaigns, against recounting the fleet per scrape;
and whether scraping moves check-in latency.

A fresh controller (real mutual TLS on loopback, real SQLite) enrolls
--hosts real identities; it is stopped, the store is topped up to --fleet
hosts with seeded rows (campaign_load.seed_hosts: active, three regions,
rings 0-2), the metrics listener is switched on, and it is started again.
--campaigns campaigns over every host are created and approved. Then:

  scrape    GET /metrics over HTTP, --scrapes times: the figures come from
            the counts the controller keeps (controller/metrics).
  baseline  what a scrape would cost if it read the fleet instead: every
            host and every campaign's orders from a copy of the same
            store, counted with the full recount (controller.rollout.tally,
            the consistency check), as a naive exporter would.
  check-ins the real identities check in as fast as the controller answers
            for --seconds, without scrapes and then with a scrape every
            --interval seconds; p99 of both.

    .venv/bin/python -m benchmarks.metrics_scrape [--fleet 100000] [--campaigns 20]
        [--hosts 200] [--scrapes 50] [--seconds 10] [--interval 1]

Prints the figures and whether "scrape < 100 ms" and "check-in p99 within
20 % with scrapes" held; progress goes to stderr. Several minutes at the
defaults, most of them in approving the campaigns (each counts the fleet
once) and seeding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.campaign_load import CAMPAIGN, fleetpatch, phase, say, seed_hosts
from benchmarks.checkin_load import PACKAGES, enroll_all, load, serve, start_controller, stop
from benchmarks.options import at_least, seconds
from controller.campaigns import parse_campaign
from controller.rollout.tally import count
from controller.store import Store


def scrape(url: str) -> tuple[float, int]:
    """Seconds for one GET of the metrics, and the bytes it returned."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - http on loopback
        body = answer.read()
    return time.perf_counter() - started, len(body)


def recount(db_path: Path) -> float:
    """Seconds to count every campaign from the store, as a scrape would
    that read the fleet (on a copy: the controller keeps the original)."""
    copy = db_path.parent / "recount.db"
    shutil.copyfile(db_path, copy)
    store = Store.open(copy)
    try:
        started = time.perf_counter()
        hosts = store.list_hosts(limit=10_000_000)
        now = datetime.now(UTC)
        for record in store.list_campaigns():
            spec = parse_campaign(record.spec, record.campaign_id)
            count(spec, record, hosts, store.assignments(record.campaign_id), now)
        return time.perf_counter() - started
    finally:
        store.close()


def checkins(port: int, data: Path, identities: list[tuple[bytes, bytes]],
             args: argparse.Namespace, url: str | None) -> float:  # fmt: skip
    """p99 ms of check-ins for --seconds, with a scrape every --interval when ``url``."""
    stop_scraping = threading.Event()
    scrapes: list[float] = []

    def scraper() -> None:
        assert url is not None
        while not stop_scraping.wait(args.interval):
            scrapes.append(scrape(url)[0])

    thread = threading.Thread(target=scraper, daemon=True) if url else None
    if thread is not None:
        thread.start()
    try:
        done, lat = asyncio.run(
            load(port, (data / "ca.pem").read_bytes(), identities, args.seconds, args.concurrency)
        )
    finally:
        stop_scraping.set()
        if thread is not None:
            thread.join()
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)] * 1000
    extra = f", {len(scrapes)} scrapes meanwhile" if url else ""
    say(f"    {done / args.seconds:,.0f} check-ins/s, p99 {p99:.1f} ms{extra}")
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=at_least(1), default=100_000)
    parser.add_argument("--campaigns", type=at_least(1), default=20)
    parser.add_argument(
        "--hosts", type=at_least(1), default=200, help="real identities checking in"
    )
    parser.add_argument("--scrapes", type=at_least(1), default=50)
    parser.add_argument("--seconds", type=seconds(), default=10.0)
    parser.add_argument("--interval", type=seconds(), default=1.0, help="seconds between scrapes")
    parser.add_argument("--concurrency", type=at_least(1), default=32)
    args = parser.parse_args()
    port = 20000 + os.getpid() % 20000
    metrics_port = port + 7
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-") as tmp:
        data = Path(tmp) / "ctl"
        with phase(f"start a controller, enroll {args.hosts} hosts"):
            proc = start_controller(data, port, 1000)
            try:
                identities = enroll_all(data, port, args.hosts)
            finally:
                stop(proc)
        with phase(f"seed {args.fleet - args.hosts:,} more hosts"):
            seed_hosts(data / "controller.db", args.fleet - args.hosts)
        config = data / "controller.toml"
        config.write_text(
            config.read_text().replace('\nlisten = ""', f'\nlisten = "127.0.0.1:{metrics_port}"')
        )
        with phase("restart the controller with metrics on"):
            proc = serve(data, timeout=300)
        try:
            with phase(f"create and approve {args.campaigns} campaigns"):
                start_campaigns(data, args.campaigns)
            with phase(f"{args.scrapes} scrapes"):
                measured = [scrape(url) for _ in range(args.scrapes)]
            with phase("baseline: recount the fleet per scrape"):
                baseline = recount(data / "controller.db") * 1000
            with phase("check-ins without scrapes"):
                quiet = checkins(port, data, identities, args, None)
            with phase(f"check-ins with a scrape every {args.interval:g}s"):
                scraped = checkins(port, data, identities, args, url)
        finally:
            with phase("stop the controller"):
                stop(proc)
    report(args, measured, baseline, quiet, scraped)


def start_campaigns(data: Path, n: int) -> None:
    spec = data.parent / "campaign.toml"
    spec.write_text(CAMPAIGN.format(package=PACKAGES[0][0]))
    for _ in range(n):
        made = fleetpatch("campaign", "create", str(spec), "--data-dir", str(data))
        campaign_id = made.strip().splitlines()[-1]
        fleetpatch("campaign", "approve", campaign_id, "--data-dir", str(data))


def report(args: argparse.Namespace, measured: list[tuple[float, int]], baseline: float,
           quiet: float, scraped: float) -> None:  # fmt: skip
    times = sorted(took * 1000 for took, _ in measured)
    size = measured[-1][1]
    median, p99 = statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"fleet {args.fleet:,} hosts, {args.campaigns} running campaigns, {size:,} bytes")
    print(f"scrape:   median {median:.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms")
    print(f"baseline: recounting the fleet per scrape {baseline:,.0f} ms "
          f"({baseline / median:,.0f}x the kept counts)")  # fmt: skip
    print(f"check-in p99: {quiet:.1f} ms without scrapes, {scraped:.1f} ms with")
    print(f"scrape < 100 ms: {'yes' if p99 < 100 else 'NO'}; check-in p99 within 20 % with "
          f"scrapes: {'yes' if scraped <= quiet * 1.2 else 'NO'}")  # fmt: skip


if __name__ == "__main__":
    main()
