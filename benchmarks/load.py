"""Check-ins per second of a real controller under `fleetpatch-sim load`,
against a bare grpc.aio server with the same TLS and messages in the same
run (issue 17): the ratio is what fleetpatch's own work costs.

A fresh controller (SQLite, group commit) is started on loopback; the load
tool enrolls --agents agents for real over --processes processes, ramps
them up, has them check in back to back for --seconds, then does the same
against the bare server. On this 2-core machine the load generator shares
the cores with the server it measures: the figures are per machine, a
floor for a controller on a box of its own.

With --store postgresql the controller keeps its state in a throwaway
PostgreSQL cluster started here (durable: fsync and synchronous commit
on, unlike the tests' cluster), and --replicas N starts N controller
replicas on that one database (the second and later from the first's data
dir, as the README says), the agents spread over them. Besides
throughput, each run's cost per check-in: CPU seconds (user + system,
from /proc) of the controller processes per 1,000 check-ins answered,
against the bare server's, and the PostgreSQL server's (its backends
included) apart.

    .venv/bin/python -m benchmarks.load [--agents 1000] [--processes 2] [--seconds 20]
        [--store sqlite|postgresql] [--replicas 1] [--concurrency 64] [--json]

Exit codes: 0 done, 1 the load tool or a server failed, 2 bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import options
from benchmarks.checkin_load import BIN, init_controller, serve, set_store
from simulator.cli import MAX_AGENTS, MAX_PROCESSES
from tests.support.controller import free_port
from tests.support.postgres import PostgresServer, missing_reason


class DurablePostgres(PostgresServer):
    """The tests' throwaway cluster, but durable as a real one is (the
    tests turn fsync and synchronous commit off for speed)."""

    def resume(self) -> None:
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
            " -c max_connections=200"
        )
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-o", options, "-w", "-t", "60", "start"])  # fmt: skip

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def database(store: str) -> Iterator[tuple[str, int | None]]:
    """The store URL ("" for SQLite) and the database server's pid."""
    if store == "sqlite":
        yield "", None
        return
    reason = missing_reason()
    if reason is not None:
        raise SystemExit(f"benchmarks.load: --store postgresql: {reason}")
    server = DurablePostgres()
    try:
        server.start()
        server.execute("CREATE DATABASE \"fleetpatch\" TEMPLATE template0 LOCALE 'C'")
        yield server.url("fleetpatch"), server.postmaster_pid()
    finally:
        server.stop()


def replica(first: Path, data: Path, port: int) -> None:
    """A further replica as the README says: the first's data dir copied
    without its SQLite file and endpoints, listening on a port of its own."""
    shutil.copytree(first, data, ignore=shutil.ignore_patterns("controller.db*", "endpoints.json"))
    config = data / "controller.toml"
    text = config.read_text()
    listen = json.loads((first / "endpoints.json").read_text())["address"]
    config.write_text(text.replace(f'"{listen}"', f'"127.0.0.1:{port}"'))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 done, 1 the load tool or a server failed, 2 bad options.",
    )
    parser.add_argument("--agents", type=options.at_least(1, MAX_AGENTS), default=1000)
    parser.add_argument("--processes", type=options.at_least(1, MAX_PROCESSES), default=2)
    parser.add_argument("--seconds", type=options.seconds(1, above=False), default=20)
    parser.add_argument("--ramp", type=options.seconds(above=False), default=10)
    parser.add_argument(
        "--concurrency",
        type=options.at_least(0),
        default=64,
        help="check-ins in flight per load process; 0: no bound (a herd)",
    )
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--replicas",
        type=options.at_least(1),
        default=1,
        help="controller replicas on one database (--store postgresql)",
    )
    parser.add_argument("--json", action="store_true", help="the load tool's JSON")
    args = parser.parse_args()  # fmt: skip
    if args.replicas > 1 and args.store != "postgresql":
        parser.error("--replicas N > 1 needs --store postgresql (replicas share one database)")
    with tempfile.TemporaryDirectory(prefix="fleetpatch-load-") as tmp, database(args.store) as db:
        url, db_pid = db
        first = Path(tmp) / "ctl-1"
        init_controller(first, free_port())
        if url:
            set_store(first, url)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(serve(first, timeout=60))
            addresses = [json.loads((first / "endpoints.json").read_text())["address"]]
            for n in range(2, args.replicas + 1):
                data = Path(tmp) / f"ctl-{n}"
                port = free_port()
                replica(first, data, port)
                procs.append(serve(data, timeout=60))
                addresses.append(f"127.0.0.1:{port}")
            done = subprocess.run(
                [str(BIN / "fleetpatch-sim"), "load", "--data-dir", str(first),
                 "--controller", ",".join(addresses),
                 "--agents", str(args.agents), "--processes", str(args.processes),
                 "--seconds", str(args.seconds), "--ramp", str(args.ramp),
                 "--concurrency", str(args.concurrency), "--bare",
                 *(["--database-pid", str(db_pid)] if db_pid else []),
                 *(["--json"] if args.json else [])],
                check=False, text=True,
            )  # fmt: skip
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if not args.json:
        print(f"store: {args.store}, {args.replicas} controller process(es); "
              "this machine: 2 cores shared by the servers, the load generator and "
              "whatever else runs on it")  # fmt: skip
    sys.exit(1 if done.returncode else 0)


if __name__ == "__main__":
    main()
