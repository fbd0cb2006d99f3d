"""How long the apt backend takes to keep a copy of what a plan replaces.

The worst case for SNAPSHOT is a package whose installed version no
repository has any more: it must be rebuilt from the installed files with
dpkg-repack. Here every package must be: in a throwaway copy of this
machine (`tests.support.sandbox.HostSandbox`) with no apt sources and an
empty apt cache, the real `Apt.snapshot` keeps a checked .deb of N
installed packages (the first N by name, real Debian packages): with
dpkg-repack for each, one at a time (the baseline: how it was done
before), then with the agent's own repack one at a time, then as the agent
does it, several at a time.
Target: 90 packages, 50 of them repacked, in under 60 s; this repacks all
of them.

    .venv/bin/python -m benchmarks.snapshot [--packages 90]

Needs root, namespaces and dpkg-repack (`make deps` installs it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if not __package__:  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.backends.apt import SNAPSHOT_WORKERS
from benchmarks.options import at_least
from tests.support.sandbox import HostSandbox

# Run inside the sandbox by the project's own interpreter: snapshot the
# given packages with the given number of workers, print the seconds taken.
INSIDE = """
import json, sys, time
from pathlib import Path
from agent.backends import apt
from agent.backends.base import Change, Plan
names, workers = json.loads(sys.argv[1]), int(sys.argv[2])
if sys.argv[3] == "dpkg-repack":  # the way before: dpkg-repack for every package
    apt.repack.repack = lambda *args, **kwargs: None
backend = apt.Apt()
versions = backend.versions(names)
apt.SNAPSHOT_WORKERS = workers
plan = Plan(tuple(Change(n, "", versions[n], versions[n]) for n in names))
started = time.monotonic()
snapshot = backend.snapshot(plan, Path(f"/root/cache-{sys.argv[3]}-{workers}"))
print(json.dumps({"seconds": time.monotonic() - started, "saved": len(snapshot.saved)}))
"""


def installed(count: int) -> list[str]:
    """The first ``count`` installed packages by name (native, not the
    agent's own)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\\n"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    names = sorted(
        line.split()[1] for line in out.splitlines()
        if line.startswith("ii ") and not line.split()[1].startswith("fleetpatch")
    )  # fmt: skip
    return names[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=at_least(1), default=90)
    parser.add_argument(
        "--no-dpkg-repack", dest="dpkg_repack", action="store_false",
        help="skip the (slow) baseline of dpkg-repack for every package",
    )  # fmt: skip
    args = parser.parse_args()
    names = installed(args.packages)
    python = sys.executable
    with HostSandbox() as sandbox:
        sandbox.run(["sh", "-c", "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* "
                     "/var/cache/apt/archives/*.deb"])  # fmt: skip
        rows = []
        runs = [("dpkg-repack, one at a time", 1, "dpkg-repack")] if args.dpkg_repack else []
        runs += [("one at a time", 1, "agent"), ("as the agent does it", 0, "agent")]
        for label, workers, how in runs:
            n = workers or SNAPSHOT_WORKERS
            print(f"{label}: {len(names)} packages, {n} worker(s)", file=sys.stderr, flush=True)
            done = sandbox.run(
                [python, "-c", INSIDE, json.dumps(names), str(n), how],
                cwd=str(Path(__file__).resolve().parents[1]), timeout=3600,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((f"{label}, {n} worker(s)", result["seconds"], result["saved"]))
    print(f"{'run':36} {'packages':>9} {'seconds':>8}")
    for label, seconds, saved in rows:
        print(f"{label:36} {saved:9d} {seconds:8.1f}")
    print(f"speed-up over the first row: {rows[0][1] / rows[-1][1]:.2f}x; {rows[-1][1]:.1f}s for "
          f"{rows[-1][2]} repacked packages (target: 90, 50 repacked, under 60 s)")  # fmt: skip


if __name__ == "__main__":
    main()
