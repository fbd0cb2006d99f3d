"""How fast the simulator rehearses a big fleet, against the naive way.

    .venv/bin/python -m benchmarks.sim_fleet [--hosts 100000] [--baseline-hosts 1000] [--json]

1. The full run: examples/scenarios/fleet-100k.toml, 100,000 hosts in three
   regions and four rings, a simulated week, as `fleetpatch-sim run` does it
   (hosts sleep until the scheduler's ``Wait.until``; waiting rooms are
   probed when the counts change). Prints wall and CPU time, hosts simulated
   per wall second, events and scheduler decisions, and whether the
   scenario's expected outcome was met.
2. The baseline, in the same run: the same scenario on a smaller fleet
   (``--baseline-hosts``), once event-driven and once naive: every host not
   yet assigned checks in and asks `decide` at every check-in, as hosts do on
   a real controller. Both must reach the same outcome (they do: the
   benchmark fails otherwise); the naive time is also scaled to the full
   fleet (check-ins grow with hosts), as an estimate.

Exit code 1 when the full run misses its expected outcome, takes 60 s or
more, or the two baseline runs disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

from benchmarks.options import at_least
from simulator.expect import check
from simulator.outcome import Outcome
from simulator.rehearsal import scenario_simulation
from simulator.scenario import Scenario, load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "examples" / "scenarios" / "fleet-100k.toml"
BUDGET_SECONDS = 60.0


def rehearse(sc: Scenario, hosts: int, naive: bool = False) -> tuple[Outcome, float, float]:
    """Run ``sc`` on ``hosts`` hosts; returns the outcome, wall and CPU seconds
    (fleet generation included: it is part of a rehearsal)."""
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = scenario_simulation(sc, hosts=hosts, every_check_in=naive).run()
    return outcome, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=at_least(1), default=100_000)
    parser.add_argument("--baseline-hosts", type=at_least(1), default=1_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sc = load_scenario(SCENARIO)

    full, wall, cpu = rehearse(sc, args.hosts)
    misses = check(sc.expect, full) if args.hosts == sc.fleet.hosts else []
    days = full.simulated / timedelta(days=1)
    fast, fast_wall, _ = rehearse(sc, args.baseline_hosts)
    slow, slow_wall, _ = rehearse(sc, args.baseline_hosts, naive=True)
    same = dataclasses.replace(fast, events=0, decisions=0) == dataclasses.replace(
        slow, events=0, decisions=0
    )
    figures = {
        "full": {
            "hosts": args.hosts,
            "targeted": full.targeted,
            "simulated_days": round(days, 3),
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "hosts_per_wall_second": round(args.hosts / wall),
            "host_days_per_wall_second": round(args.hosts * days / wall),
            "events": full.events,
            "decisions": full.decisions,
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "state": full.state,
            "expected_met": not misses,
            "misses": misses,
        },
        "baseline": {
            "hosts": args.baseline_hosts,
            "event_driven_seconds": round(fast_wall, 2),
            "event_driven_decisions": fast.decisions,
            "naive_seconds": round(slow_wall, 2),
            "naive_decisions": slow.decisions,
            "speedup": round(slow_wall / fast_wall, 1),
            "same_outcome": same,
            "naive_seconds_at_full_size_estimate": round(
                slow_wall * args.hosts / args.baseline_hosts
            ),
        },
    }
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        f, b = figures["full"], figures["baseline"]
        print(f"full run: {f['hosts']:,} hosts ({f['targeted']:,} targeted), "
              f"{f['simulated_days']} simulated days, outcome {f['state']}, expected "
              f"{'met' if f['expected_met'] else 'NOT met: ' + '; '.join(misses)}")  # fmt: skip
        print(f"  wall {f['wall_seconds']} s (cpu {f['cpu_seconds']} s), "
              f"{f['hosts_per_wall_second']:,} hosts per wall second, "
              f"{f['host_days_per_wall_second']:,} host-days per wall second")  # fmt: skip
        print(f"  {f['events']:,} events, {f['decisions']:,} scheduler decisions, "
              f"max RSS {f['max_rss_mib']} MiB")  # fmt: skip
        print(f"baseline on {b['hosts']:,} hosts: event-driven {b['event_driven_seconds']} s "
              f"({b['event_driven_decisions']:,} decisions), naive (every host asks at every "
              f"check-in) {b['naive_seconds']} s ({b['naive_decisions']:,} decisions): "
              f"{b['speedup']}x; same outcome: {b['same_outcome']}")  # fmt: skip
        print(f"  naive at {args.hosts:,} hosts, estimated: "
              f"{b['naive_seconds_at_full_size_estimate']:,} s")  # fmt: skip
    ok = not misses and wall < BUDGET_SECONDS and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
