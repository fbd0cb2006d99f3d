"""Push for urgent work (issue 17 part 3), measured with `fleetpatch-sim
load --push` against real controllers over real mutual TLS:

1. Idle memory per stream: a fresh controller with N simulated agents
   connected and idle (one check-in each, next one 10 minutes away), then a
   fresh one with the same N agents that also keep a Watch stream open.
   (RSS with streams - RSS without) / N is what a stream costs on top of
   the connection the agent keeps anyway.
2. Approval to check-in: in the second run, an emergency campaign for all
   of them is approved; each agent is nudged (in turn: the controller
   paces its nudges to what it serves) and checks in within the spread
   asked for: p50/p99 from the approval to each
   nudge's arrival, and to each nudged check-in's answer (which carries
   the order: signed and recorded by the controller), and how many of the
   N checked in. Timed from the start of the admin CLI that approves
   (conservative: its own start-up is in it), and from the approval the
   controller recorded (its audit record: what push itself takes).
3. Check-in throughput with N idle streams open vs none: busy agents
   checking in back to back, alone, then beside the N idle agents with
   their streams open, on one fresh controller; and the controller's CPU
   seconds per 1,000 of those check-ins in each run (a cost of the idle
   streams on the controller shows there; the generator's processes
   holding the idle agents take their share of the cores apart from it).

On this shared 2-core machine the load generator shares the cores with the
controller; the figures are for this machine. Each step says on stderr
when it starts (the whole takes a few minutes for 3,000 streams, 15-20
for 10,000).

    .venv/bin/python -m benchmarks.push [--streams 3000] [--busy 200] [--json]

Exit codes: 0 done, 1 the load tool or a controller failed, 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

if not __package__:  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import options
from benchmarks.campaign_load import fleetpatch, say
from benchmarks.checkin_load import BIN, init_controller, serve, stop
from tests.support.controller import free_port
from tests.support.waiting import stop_group

EMERGENCY = """
[campaign]
name = "push-benchmark"
emergency = true

[patch]
packages = [{ name = "pkg1", min_version = "9" }]

[rollout]
rings = [{ ring = 0, concurrency = "100%" }]
"""


class Load:
    """`fleetpatch-sim load` in the background; knows when its agents are
    enrolled (they then connect over the ramp)."""

    def __init__(self, data: Path, agents: int, *options: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "fleetpatch-sim"), "load", "--data-dir", str(data),
             "--agents", str(agents), "--json", "--concurrency", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its worker processes go with it (`stop`)
        )  # fmt: skip
        self.enrolled = threading.Event()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("enrolled "):
                self.enrolled.set()

    def wait_enrolled(self, timeout: float = 600) -> None:
        """Until the agents are enrolled; SystemExit (the load's own words)
        at once when it ended before, after ``timeout`` when it hangs."""
        deadline = time.monotonic() + timeout
        while not self.enrolled.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the load did not enroll its agents: {self._said()}")

    def _said(self) -> str:
        """The load's last words (its error line), once its stderr is read."""
        self.proc.wait()
        self._reader.join(timeout=5)  # it ends at the end of the load's stderr
        lines = [line.strip() for line in self.stderr if line.strip()]
        return lines[-1] if lines else f"exit {self.proc.returncode}"

    def stop(self) -> None:
        """End the load and its worker processes (a SIGTERM to the load
        alone leaves its workers running out their time, loading the next
        run's cores)."""
        stop_group(self.proc)

    def result(self) -> dict[str, object]:
        out, _ = self.proc.communicate(timeout=900)
        if self.proc.returncode != 0:
            raise SystemExit(f"the load failed: {self._said()}")
        run: dict[str, object] = json.loads(out)["runs"][0]
        return run


def rss_mib(pid: int, samples: int = 5) -> float:
    """The median of a few RSS samples a second apart."""
    found = []
    for _ in range(samples):
        found.append(psutil.Process(pid).memory_info().rss / 2**20)
        time.sleep(1)
    return sorted(found)[len(found) // 2]


def controller(tmp: Path, name: str) -> tuple[Path, subprocess.Popen[bytes]]:
    data = tmp / name
    init_controller(data, free_port(), interval="10m")
    return data, serve(data, timeout=30)


def idle_rss(tmp: Path, streams: int, ramp: float, push: bool) -> tuple[float, float, dict]:  # type: ignore[type-arg]
    """RSS of a fresh controller with ``streams`` idle agents connected
    (with their Watch streams when ``push``); with push, also approve an
    emergency campaign and time it. Returns (RSS MiB, approval wall time, load result)."""
    data, proc = controller(tmp, f"ctl-{'push' if push else 'plain'}")
    say(f"{streams} idle agents connecting over {ramp:g} s, {'with' if push else 'without'} "
        "a Watch stream each, to a fresh controller")  # fmt: skip
    try:
        before = psutil.Process(proc.pid).memory_info().rss / 2**20
        settle = ramp + 15
        load = Load(data, streams, "--interval", "600", "--ramp", str(ramp), "--seconds",
                    str(settle + 30), *(["--push"] if push else []))  # fmt: skip
        try:
            load.wait_enrolled()
            time.sleep(settle)
            rss = rss_mib(proc.pid)
            approved = 0.0
            if push:
                spec = tmp / "emergency.toml"
                spec.write_text(EMERGENCY)
                created = fleetpatch("campaign", "create", str(spec), "--data-dir", str(data))
                campaign_id = created.strip().splitlines()[-1]
                say(f"approving an emergency campaign for the {streams} agents")
                approved = time.time()  # before the CLI starts: a conservative start
                fleetpatch("campaign", "approve", campaign_id, "--data-dir", str(data))
            result = load.result()
            if push:
                result["approved_by_controller"] = approval_recorded(data, approved)
        finally:
            load.stop()
        result["rss_before_mib"] = round(before, 1)
        return rss, approved, result
    finally:
        stop(proc)


def approval_recorded(data: Path, since: float) -> float:
    """When the controller approved the campaign (its audit record), as a
    Unix time: the start of what push itself takes, past the admin CLI's
    own start-up."""
    start = datetime.fromtimestamp(since - 5, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    exported = fleetpatch("audit", "export", "--json", "--since", start, "--data-dir", str(data))
    for record in json.loads(exported):
        if record["action"] == "campaign.approve" and record["outcome"] != "refused":
            return datetime.fromisoformat(record["at"]).timestamp()
    raise SystemExit("the controller's audit trail has no approval of the campaign")


def throughput(
    tmp: Path, streams: int, busy: int, seconds: float, ramp: float
) -> tuple[dict[str, object], dict[str, object]]:
    """The runs of ``busy`` back-to-back agents on one fresh controller,
    alone and then beside ``streams`` idle agents with streams open: their
    check-ins/s and the controller's CPU seconds per 1,000 of them (what
    tells a cost of the streams on the controller from the generator's
    share of the cores)."""
    data, proc = controller(tmp, "ctl-throughput")
    try:
        options = ("--interval", "0", "--seconds", str(seconds), "--ramp", "3")
        say(f"{busy} agents checking in back to back for {seconds:g} s, alone")
        alone = Load(data, busy, *options).result()
        say(f"the same beside {streams} idle agents with their streams open")
        idle = Load(data, streams, "--interval", "600", "--push", "--ramp", str(ramp),
                    "--seconds", str(ramp + seconds + 120))  # fmt: skip
        idle.wait_enrolled()
        time.sleep(ramp + 10)
        try:
            beside = Load(data, busy, *options).result()
        finally:
            idle.stop()
        return alone, beside
    finally:
        stop(proc)


def _ratio(part: object, whole: object) -> float | None:
    if not isinstance(part, int | float) or not isinstance(whole, int | float) or not whole:
        return None
    return round(part / whole, 3)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit codes: 0 done, 1 the load tool or a controller failed, 2 bad options.",
    )
    parser.add_argument(
        "--streams", type=options.at_least(1), default=3000, help="idle agents with streams"
    )
    parser.add_argument(
        "--busy", type=options.at_least(1), default=200, help="back-to-back agents for part 3"
    )
    parser.add_argument(  # the load tool measures for a second at least
        "--seconds",
        type=options.seconds(1, above=False),
        default=20,
        help="measured seconds of part 3",
    )
    parser.add_argument(
        "--ramp",
        type=options.seconds(above=False),
        default=30,
        help="seconds the idle agents connect over",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="fleetpatch-push-") as name:
        tmp = Path(name)
        plain, _, plain_run = idle_rss(tmp, args.streams, args.ramp, push=False)
        pushed, approved, push_run = idle_rss(tmp, args.streams, args.ramp, push=True)
        recorded = float(push_run["approved_by_controller"])
        nudged = sorted(t - approved for t in push_run["nudged_checkins"])
        served = sorted(t - recorded for t in push_run["nudged_checkins"])
        arrived = sorted(t - approved for t in push_run["nudges_received"])
        alone, beside = throughput(tmp, args.streams, args.busy, args.seconds, args.ramp)
    doc = {
        "streams": args.streams,
        "streams_opened": push_run["streams"],
        "rss_mib_connected_no_streams": plain,
        "rss_mib_connected_with_streams": pushed,
        "kib_per_stream": round((pushed - plain) * 1024 / args.streams, 1),
        "nudges": push_run["nudges"],
        "nudged_checkins": len(nudged),
        "approval_to_nudge_p50_s": round(pct(arrived, 0.5), 2),
        "approval_to_nudge_p99_s": round(pct(arrived, 0.99), 2),
        "approval_to_checkin_p50_s": round(pct(nudged, 0.5), 2),
        "approval_to_checkin_p99_s": round(pct(nudged, 0.99), 2),
        "approval_to_checkin_max_s": round(nudged[-1], 2) if nudged else None,
        "admin_cli_to_approval_s": round(recorded - approved, 2),
        "recorded_approval_to_checkin_p50_s": round(pct(served, 0.5), 2),
        "recorded_approval_to_checkin_p99_s": round(pct(served, 0.99), 2),
        "busy_checkins_per_s_alone": alone["checkins_per_second"],
        "busy_checkins_per_s_beside_idle_streams": beside["checkins_per_second"],
        "throughput_ratio": _ratio(beside["checkins_per_second"], alone["checkins_per_second"]),
        "controller_cpu_s_per_1000_alone": alone["cpu_seconds_per_1000"],
        "controller_cpu_s_per_1000_beside_idle_streams": beside["cpu_seconds_per_1000"],
        "errors": {"plain": plain_run["errors"], "push": push_run["errors"]},
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        print(f"{key:<42} {value}")


if __name__ == "__main__":
    main()
