"""Which of several controller revisions serves more check-ins, measured
in alternated rounds against the same simulated fleet: the same agents,
enrolled once, identities and messages, each revision in turn on one data
dir (and, with --bare, the bare grpc.aio server of `fleetpatch-sim load
--bare`). On a shared 2-core machine one run's figure moves by 10-20 %
from minute to minute; alternating the revisions within one run, several
rounds, is what tells a 5 % change from the machine's drift. Every other
round runs them in reverse order (A B, B A, A B...), so that none is
always first after the enrollment or always after the same one.

    .venv/bin/python -m benchmarks.load_ab [--rev REV]... [--bare] [--rounds 3]
        [--seconds 15] [--ramp 5] [--agents 1000] [--processes 2] [--concurrency 64]
        [--threads] [--store sqlite|postgresql]

Each --rev is a git revision of this repository, checked out in a
temporary worktree, or "." for the working tree as it is (the default:
HEAD against "."). The revisions share one data dir, initialised and
migrated by the working tree: they must read the same schema. Its
controller.toml keeps only the addresses, the check-in timing and the
store's URL, so each revision runs with its own defaults. With --store
postgresql that store is a throwaway PostgreSQL cluster started here
(durable, as benchmarks.load's), and each round also prints the
PostgreSQL server's CPU per 1,000 check-ins (its backends included). The
load is `fleetpatch-sim load`'s (simulator/load.py, from the working tree):
back-to-back check-ins, a full inventory in 1 % of them, orders carried
out. Printed: each round's check-ins per second and the server's CPU
seconds (user + system, from /proc) per 1,000 check-ins, then each
variant's mean against the first's, and with --bare each one's rate
against the bare server's, overall and by round. With --threads, also
that CPU per check-in split by the server's threads (/proc/PID/task):
the event loop's ("main"), the controller's store thread ("store"),
gRPC's own.

Exit codes: 0 done, 1 a server or the load failed, 2 bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fleetpatch.v1 import admin_pb2
from google.protobuf.duration_pb2 import Duration

from benchmarks import options
from benchmarks.checkin_load import BIN, init_controller, serve, set_store, stop
from benchmarks.load import database
from controller.cli.admin_client import AdminClient
from controller.datadir import DataDir
from simulator import load
from simulator.cli import MAX_AGENTS, MAX_PROCESSES
from tests.support.controller import free_port

ROOT = Path(__file__).resolve().parents[1]
BARE = "bare"
# Starts `controller serve` through controller.cli.main.main, which every
# revision has (the console script's entry point moved over time).
SERVE = "import sys; from controller.cli.main import main; sys.argv[0] = 'fleetpatch'; main()"


@dataclass
class Variant:
    name: str  # the --rev as given, or "bare"
    tree: Path | None  # source tree; None: the bare server
    rounds: list[tuple[float, float | None]]  # (check-ins/s, CPU s per 1,000)


@contextlib.contextmanager
def trees(revs: list[str], tmp: Path) -> Iterator[list[Path]]:
    """A source tree per revision: the working tree for ".", else a
    temporary worktree, removed afterwards."""
    made: list[Path] = []
    try:
        paths = []
        for n, rev in enumerate(revs):
            if rev == ".":
                paths.append(ROOT)
                continue
            path = tmp / f"rev-{n}"
            added = subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(path), rev],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if added.returncode:
                print(f"benchmarks.load_ab: --rev {rev}: {added.stderr.strip()}", file=sys.stderr)
                raise SystemExit(2)
            made.append(path)
            paths.append(path)
        yield paths
    finally:
        for path in made:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                           check=False)  # fmt: skip


def python_in(tree: Path, code: str, *args: str) -> dict[str, Any]:
    """Popen arguments that run ``code`` with the modules of ``tree``.
    `python -c` puts the current directory first on sys.path, ahead of
    PYTHONPATH: started from the working tree, every revision would import
    the working tree's code. -P (Python 3.11) leaves it out, and the tree
    is also the current directory, so either way its modules come first."""
    return {
        "args": [str(BIN / "python"), "-P", "-c", code, *args],
        "env": {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'proto'}"},
        "cwd": tree,
    }


def start(tree: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`controller serve` of ``data`` with the code of ``tree``."""
    log = data.parent / f"serve-{tree.name}.log"
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            **python_in(tree, SERVE, "controller", "serve", "--data-dir", str(data),
                        "--log-level", "warning"),
            stdout=subprocess.DEVNULL, stderr=stderr, process_group=0,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            recorded = json.loads((data / "endpoints.json").read_text())
            if recorded["pid"] == proc.pid:
                return proc, str(recorded["address"])
        time.sleep(0.05)
    proc.kill()
    said = log.read_text(errors="replace").strip().splitlines()
    raise SystemExit(
        f"benchmarks.load_ab: the controller of {tree} did not start"
        + (f": {said[-1]}" if said else "")
    )


def own_defaults(data: Path) -> None:
    """Cut controller.toml down to the addresses, check-in timing and the
    store's URL, so that each revision runs with its own defaults for the
    rest: a setting the working tree's template adds is an unknown key to
    an older one."""
    config = data / "controller.toml"
    doc = tomllib.loads(config.read_text())
    kept = [
        ("server", doc["server"]),
        ("checkin", {k: doc["checkin"][k] for k in ("interval", "jitter")}),
    ]
    if doc["store"]["url"]:
        kept.append(("store", {"url": doc["store"]["url"]}))
    config.write_text(
        "".join(
            f"[{table}]\n"
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
            for table, values in kept
        )
    )


def enrolled(
    data: Path, args: argparse.Namespace, url: str = ""
) -> tuple[load.Plan, list[load.Identity]]:
    """Initialise the data dir with the working tree (its store at ``url``,
    "" for SQLite) and enroll the agents."""
    init_controller(data, free_port())
    if url:
        set_store(data, url)
    own_defaults(data)
    first = serve(data, timeout=60)
    try:
        directory = DataDir(data)
        with AdminClient(directory, None) as admin:
            ttl = Duration()
            ttl.FromTimedelta(timedelta(hours=2))
            token = admin.create_token(admin_pb2.CreateTokenRequest(
                region="load", ring=0, uses=args.agents, ttl=ttl, labels={"load": "sim"},
            )).secret  # fmt: skip
            address = admin.address
        recorded = directory.recorded_endpoints()
        if recorded is None or not recorded[1]:
            raise SystemExit(f"benchmarks.load_ab: {directory.endpoints} names no enrollment port")
        plan = load.Plan(
            address, recorded[1], directory.read(directory.ca_cert),
            args.agents, args.processes, args.seconds, args.ramp, concurrency=args.concurrency,
        )  # fmt: skip
        return plan, load.enroll_all(plan, token, seed=1)
    finally:
        stop(first)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) that ``pid``'s live threads have spent,
    summed by name: "main" for its first thread, else the name the OS
    knows (gRPC's event_engine, the controller's store, "python" for
    Python threads that have none). A thread that ends is no longer
    listed: short-lived ones are not counted."""
    spent: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = "main" if tid == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return spent


def per_checkin(before: dict[str, float], after: dict[str, float], cpu_per_1000: float) -> str:
    """Each thread's share of the process's CPU as milliseconds per check-in
    (of ``cpu_per_1000`` CPU seconds per 1,000), the largest first."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    total = sum(spent.values()) or 1.0
    shares = sorted(spent.items(), key=lambda item: -item[1])
    return ", ".join(
        f"{name} {cpu_per_1000 * used / total:.3f}" for name, used in shares if used > 0
    )


def one_round(
    n: int,
    variants: list[Variant],
    data: Path,
    plan: load.Plan,
    identities: list[load.Identity],
    threads: bool = False,
    db_pid: int | None = None,
) -> tuple[int, bool]:
    """Each variant in turn under the load (in reverse order in even
    rounds); errors counted, and whether Ctrl-C cut the round short.
    ``threads``: each server thread's CPU per check-in printed too;
    ``db_pid``: the PostgreSQL server's, whose CPU is printed apart."""
    errors = 0
    for variant in variants if n % 2 else variants[::-1]:
        proc: subprocess.Popen[bytes] | subprocess.Popen[str]
        proc, target = load.start_bare(data) if variant.tree is None else start(variant.tree, data)
        try:
            usage, before = load.Usage(proc.pid), thread_cpu(proc.pid) if threads else {}
            db = load.Usage(db_pid) if db_pid is not None and variant.tree is not None else None
            tallies, interrupted = load.run(plan, identities, target, seed=1)
            measured = None if db is None else db.done()
            result = load.merge(variant.name, plan, tallies, usage.done(), measured, interrupted)
            after = thread_cpu(proc.pid) if threads else {}
        finally:
            stop(proc)
        errors += sum(result.errors.values())
        variant.rounds.append((result.checkins_per_second, result.cpu_seconds_per_1000))
        cpu = "-" if result.cpu_seconds_per_1000 is None else f"{result.cpu_seconds_per_1000:.3f}"
        spent = result.database_cpu_seconds_per_1000
        db_cpu = "" if spent is None else f" + db {spent:.3f}"
        print(f"round {n}  {variant.name:>12}  {result.checkins_per_second:8,.0f}/s"
              f"  CPU {cpu}{db_cpu} s/1k  p99 {result.p99_ms:6.1f} ms"
              f"  errors {sum(result.errors.values())}", flush=True)  # fmt: skip
        if threads and result.cpu_seconds_per_1000:
            split = per_checkin(before, after, result.cpu_seconds_per_1000)
            print(f"  threads, ms of CPU per check-in: {split}", flush=True)
        if interrupted:  # Ctrl-C: the figures until then
            return errors, True
    return errors, False


def summary(variants: list[Variant]) -> None:
    """Each variant's mean rate and CPU, against the first's; with the bare
    server among them, each one's rate against it too, overall and by
    round (the goal of issue 17 part 5 is that ratio)."""
    base = statistics.mean(rate for rate, _ in variants[0].rounds)
    print(f"{'variant':>12}  {'check-ins/s':>12}  {'of ' + variants[0].name:>12}  CPU s/1k")
    for variant in variants:
        rate = statistics.mean(r for r, _ in variant.rounds)
        cpus = [c for _, c in variant.rounds if c is not None]
        cpu = f"{statistics.mean(cpus):.3f}" if cpus else "-"
        print(f"{variant.name:>12}  {rate:12,.0f}  {100 * rate / base:11.0f} %  {cpu:>8}")
    bare = next((v for v in variants if v.tree is None), None)
    if bare is None:
        return
    bare_rate = statistics.mean(r for r, _ in bare.rounds)
    for variant in variants:
        if variant is bare:
            continue
        rate = statistics.mean(r for r, _ in variant.rounds)
        rounds = ", ".join(
            f"{100 * ours / theirs:.0f}"
            for (ours, _), (theirs, _) in zip(variant.rounds, bare.rounds, strict=False)
            if theirs
        )
        print(f"{variant.name:>12}  {100 * rate / bare_rate:.0f} % of the bare server"
              f" ({rounds} % by round)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 done, 1 a server or the load failed, 2 bad options.",
    )
    parser.add_argument("--rev", action="append", help='a git revision, or "." (repeatable)')
    parser.add_argument("--bare", action="store_true", help="the bare grpc.aio server too")
    parser.add_argument("--rounds", type=options.at_least(1), default=3)
    parser.add_argument("--seconds", type=options.seconds(1, above=False), default=15)
    parser.add_argument("--ramp", type=options.seconds(above=False), default=5)
    parser.add_argument("--agents", type=options.at_least(1, MAX_AGENTS), default=1000)
    parser.add_argument("--processes", type=options.at_least(1, MAX_PROCESSES), default=2)
    parser.add_argument("--concurrency", type=options.at_least(0), default=64)
    parser.add_argument(
        "--threads",
        action="store_true",
        help="also each server thread's CPU per check-in (main, store, gRPC's)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the controllers' store: SQLite, or a PostgreSQL cluster started here",
    )
    args = parser.parse_args()
    revs = args.rev or ["HEAD", "."]
    errors = 0
    with (
        tempfile.TemporaryDirectory(prefix="fleetpatch-ab-") as name,
        trees(revs, Path(name)) as paths,
        database(args.store) as (url, db_pid),
    ):
        data = Path(name) / "ctl"
        plan, identities = enrolled(data, args, url)
        variants = [Variant(rev, path, []) for rev, path in zip(revs, paths, strict=True)]
        if args.bare:
            variants.append(Variant(BARE, None, []))
        for n in range(1, args.rounds + 1):
            failed, interrupted = one_round(
                n, variants, data, plan, identities, args.threads, db_pid
            )
            errors += failed
            if interrupted:
                break
    summary([v for v in variants if v.rounds])
    sys.exit(1 if errors or interrupted else 0)


if __name__ == "__main__":
    main()
