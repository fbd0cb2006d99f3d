"""`fleetpatch audit export` and `audit verify` on a long audit trail.

A fresh controller data dir is filled with --records correctly chained
audit records (bulk SQLite inserts of rows hashed by the controller's own
`record_hash`, shaped like refusals and admin actions), then a real
controller (mutual TLS on loopback, the real SQLite file) is started and
the real CLI runs, as a user would:

- `fleetpatch audit export` (or `--json` with --json), its stdout read and
  counted by this script;
- `fleetpatch audit verify`.

Baseline, in the same run: the same rows read straight from the SQLite
file by this process and formatted as lines, no controller, no gRPC: what
the export costs over reading the file.

    .venv/bin/python -m benchmarks.audit_export [--records 10000000] [--json]
    .venv/bin/python benchmarks/audit_export.py ...   # the same

Prints, per step: seconds, records/s, and peak RSS of the controller and
of the CLI process (VmHWM; the controller's before the step too, so its
growth shows). About 1.5 minutes per million records on a 2-core machine,
filling included; the data dir (about 300 bytes a record) is removed at
the end.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.campaign_load import phase, say
from benchmarks.checkin_load import BIN, serve, stop
from benchmarks.options import at_least
from controller.audit import GENESIS, AuditEntry, record_hash

CHUNK = 100_000
DETAIL = "the signature by key 'a1b2c3d4e5f60718' does not match the payload"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Step:
    name: str
    seconds: float
    records: int
    client_rss_mib: float | None
    controller_rss_mib: tuple[float, float] | None  # peak before, peak after


def fill(db: Path, records: int) -> None:
    """Append ``records`` chained records after what the trail holds."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0], last[1]) if last else (0, GENESIS)
        end, started = seq + records, time.monotonic()
        while seq < end:
            rows = []
            for _ in range(min(CHUNK, end - seq)):
                seq += 1
                at = T0 + timedelta(milliseconds=seq)
                if seq % 10:
                    entry = AuditEntry(at, f"host:h-{seq % 5000:05d}", "order.refused",
                                       f"o-{seq:09d}", "refused", DETAIL)  # fmt: skip
                else:
                    entry = AuditEntry(at, "admin:alice", "campaign.approve", f"c-{seq}", "ok")
                digest = record_hash(seq, entry, prev)
                rows.append((seq, at.isoformat(), entry.actor, entry.action, entry.target,
                             entry.outcome, entry.detail, prev, digest))  # fmt: skip
                prev = digest
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            if seq % 1_000_000 == 0:
                rate = (seq - (end - records)) / (time.monotonic() - started)
                say(f"      {seq:,} records ({rate:,.0f}/s)")
    finally:
        conn.close()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


class PeakRss:
    """Samples a process's VmHWM until it exits. (wait4's ru_maxrss would
    not do: Linux carries the forking parent's high-water mark into the
    child across exec, and this script is bigger than the CLI.)"""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, peak_rss_mib(self.pid))
            except (OSError, RuntimeError):  # exited (a zombie has no VmHWM)
                return
            time.sleep(0.02)

    def result(self) -> float:
        self._thread.join()
        return self.peak


def run_cli(name: str, argv: list[str], controller: int, records: int) -> Step:
    """Run a CLI, counting its stdout lines; its time and peak RSS."""
    before = peak_rss_mib(controller)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines, tail = 0, b""
    while chunk := proc.stdout.read(1 << 20):
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[-300:]
    err = proc.stderr.read()
    proc.wait()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {err.decode().strip()}")
    say(f"      {lines:,} lines; last: {tail.decode(errors='replace').strip()[-120:]!r}")
    return Step(name, seconds, records, rss.result(), (before, peak_rss_mib(controller)))


def baseline(db: Path, records: int) -> Step:
    """The rows straight from SQLite, formatted as lines and dropped."""
    started = time.monotonic()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        count = 0
        with open(os.devnull, "w") as out:
            cur = conn.execute(
                "SELECT seq, at, actor, action, target, outcome, detail FROM audit ORDER BY seq"
            )
            while rows := cur.fetchmany(10_000):
                out.write("".join("  ".join(map(str, row)) + "\n" for row in rows))
                count += len(rows)
    finally:
        conn.close()
    assert count == records, (count, records)
    return Step("baseline: SQLite scan in-process", time.monotonic() - started, records, None, None)


def report(steps: list[Step]) -> None:
    print(f"{'step':<34} {'records':>12} {'seconds':>8} {'records/s':>10} "
          f"{'CLI peak MiB':>12} {'controller peak MiB before -> after':>36}")  # fmt: skip
    for s in steps:
        client = "-" if s.client_rss_mib is None else f"{s.client_rss_mib:.0f}"
        ctl = "-"
        if s.controller_rss_mib is not None:
            ctl = f"{s.controller_rss_mib[0]:.0f} -> {s.controller_rss_mib[1]:.0f}"
        print(f"{s.name:<34} {s.records:>12,} {s.seconds:>8.1f} {s.records / s.seconds:>10,.0f} "
              f"{client:>12} {ctl:>36}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=at_least(1), default=10_000_000,
                        help="audit records in the trail (default 10,000,000)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="time `audit export --json` too")
    parser.add_argument("--port", type=at_least(1, 65535), default=20000 + os.getpid() % 20000)
    args = parser.parse_args()
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-audit-") as tmp:
        data = Path(tmp) / "ctl"
        subprocess.run(
            [str(BIN / "fleetpatch"), "controller", "init", "--data-dir", str(data), "--hostname",
             "localhost", "--listen", f"127.0.0.1:{args.port}"],
            check=True, capture_output=True,
        )  # fmt: skip
        with phase("create the database (start and stop the controller)"):
            stop(serve(data, timeout=30))
        db = data / "controller.db"
        with phase(f"fill {args.records:,} chained records"):
            fill(db, args.records)
        say(f"    controller.db: {db.stat().st_size / 2**20:,.0f} MiB")
        total = sqlite3.connect(db).execute("SELECT count(*) FROM audit").fetchone()[0]
        with phase("baseline: read the rows straight from SQLite"):
            steps.append(baseline(db, total))
        with phase("start the controller"):
            proc = serve(data, timeout=120)
        try:
            runs = [["export"], *([["export", "--json"]] if args.json else []), ["verify"]]
            for run in runs:
                name = " ".join(["fleetpatch audit", *run])
                argv = [str(BIN / "fleetpatch"), "audit", *run, "--data-dir", str(data)]
                with phase(name):
                    steps.append(run_cli(name, argv, proc.pid, total))
        finally:
            with phase("stop the controller"):
                stop(proc)
    report(steps)


if __name__ == "__main__":
    main()
