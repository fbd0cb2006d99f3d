"""Check-ins per second of a real controller under `fleetpatch-sim load`,
against a bare grpc.aio server with the same TLS and messages in the same
run (issue 17): the ratio is what fleetpatch's own work costs.

A fresh controller (SQLite, group commit) is started on loopback; the load
tool enrolls --agents agents for real over --processes processes, ramps
them up, has them check in back to back for --seconds, then does the same
against the bare server. On this 2-core machine the load generator shares
the cores with the server it measures: the figures are per machine, a
floor for a controller on a box of its own.

    .venv/bin/python -m benchmarks.load [--agents 1000] [--processes 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.checkin_load import BIN, init_controller, serve
from tests.support.controller import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--ramp", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetpatch-load-") as tmp:
        data = Path(tmp) / "ctl"
        init_controller(data, free_port())
        proc = serve(data, timeout=30)
        try:
            done = subprocess.run(
                [str(BIN / "fleetpatch-sim"), "load", "--data-dir", str(data),
                 "--agents", str(args.agents), "--processes", str(args.processes),
                 "--seconds", str(args.seconds), "--ramp", str(args.ramp), "--bare"],
                check=False, text=True,
            )  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
