"""How much memory and CPU a real, idle `fleetpatch-agent run` takes.

A real controller (`fleetpatch controller init` + `serve`) and a real agent
(`fleetpatch-agent enroll` + `run`) on loopback, driven only through the
public commands, each in a temp dir of its own. The agent checks in every
`--interval` seconds; the script samples its /proc files:

- RSS (VmRSS) and its unique part (RssAnon + RssFile shared by no one,
  from smaps_rollup's Private_*), after the first check-ins and at the end;
- CPU time (utime + stime) over `--checkins` check-ins, as a share of one
  core, and per check-in, scaled to the production 5-minute interval
  (the budget: 0.1 % of a core);
- what a one-shot command costs against the daemon (`status --json`).

Run it twice in one go to compare a baseline with a change (the figures
are printed as one JSON object per agent command line given):

    .venv/bin/python benchmarks/agent_footprint.py [--interval 5] [--checkins 12]
        [--agent fleetpatch-agent] [--baseline-agent OTHER_COMMAND]

With --floor it also measures the least any agent on grpcio can take here:
a bare client (`--bare-client`: this script, as the agent command) that
enrolls like the agent, then only opens the same mutual-TLS channel, keeps
a Watch stream and sends an empty check-in at each interval; then the same
bare client with the daemon's lean imports, no OpenSSL and no grpc.aio
(`agent.leanimports.lean_imports`; `--bare-client --lean`).

With --apply it measures the agent while it applies a real patch instead:
the `make demo` setup with one host (a sandboxed copy of this machine, so
nothing here is changed; root and namespaces needed), a campaign from
fp-demo 1.0 to 1.1 applied by real apt, and the agent's peak RSS (VmHWM)
over the whole campaign; apt and dpkg are its children, not counted.

Budgets (issue 18): idle RSS <= 40 MiB, <= 0.1 % of a core at 5-minute
check-ins, <= 120 MiB while applying a patch.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.options import at_least

IDLE_RSS_BUDGET_MIB = 40.0
APPLY_RSS_BUDGET_MIB = 120.0
CPU_BUDGET_PERCENT = 0.1
PRODUCTION_INTERVAL = 300.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port with its neighbour (the enrollment port, port + 1) free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free neighbouring ports")


def command(name: str) -> list[str]:
    """A console script: beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"agent_footprint: error: {name} is not installed")
    return [found]


def memory(pid: int) -> dict[str, float]:
    """RSS and unique memory (MiB) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile"))
    }
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    private = sum(
        int(line.split()[1])
        for line in rollup.splitlines()
        if line.startswith(("Private_Clean:", "Private_Dirty:"))
    )
    return {
        "rss_mib": fields["VmRSS"] / 1024,
        "anon_mib": fields["RssAnon"] / 1024,
        "file_mib": fields["RssFile"] / 1024,
        "peak_rss_mib": fields["VmHWM"] / 1024,
        "unique_mib": private / 1024,
    }


def _largest(pid: int, count: int = 12) -> list[str]:
    """The mappings with the most resident memory (for finding what to cut)."""
    sizes: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(head[1])
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:count]
    return [f"{kib / 1024:.1f} MiB {Path(path).name}" for path, kib in top]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(after[11]) + int(after[12])) / ticks  # utime, stime


def evict_libraries(agent: list[str]) -> None:
    """Put the shared objects of the agent's venv (and this script's) out
    of the page cache: every agent starts from the state after a boot or
    after the package's install, whose postinst does the same. Else the
    figure depends on when the venv was made: a library pip wrote minutes
    ago sits in the cache in large folios that the kernel maps whole
    (grpcio's: 14.8 MiB resident instead of 12.3). Clean pages only, and
    only of files no process maps."""
    roots = {Path(sys.prefix)}
    for word in agent:
        path = Path(word)
        if path.is_absolute() and path.is_file():
            roots.update(parent for parent in path.parents if (parent / "pyvenv.cfg").is_file())
    for root in roots:
        for library in root.glob("lib/python3*/site-packages/**/*.so*"):
            if not library.is_file():
                continue
            fd = os.open(library, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(agent: list[str], interval: int, checkins: int) -> dict[str, object]:
    fleetpatch = command("fleetpatch")
    evict_libraries(agent)
    with tempfile.TemporaryDirectory(prefix="fp-footprint-") as tmp:
        data, state = Path(tmp, "controller"), Path(tmp, "agent")
        port = free_port()
        env = {**os.environ, "FLEETPATCH_DATA_DIR": str(data)}
        compiling = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [*fleetpatch, "controller", "init", "--hostname", "localhost",
             "--listen", f"127.0.0.1:{port}", "--checkin-interval", f"{interval}s"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with Path(tmp, "controller.log").open("wb") as log:
            controller = subprocess.Popen(
                [*fleetpatch, "controller", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 60
            while not (data / "endpoints.json").exists():
                if controller.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(Path(tmp, "controller.log").read_text())
                time.sleep(0.2)
            token = subprocess.run(
                [*fleetpatch, "token", "create", "--region", "bench", "--ring", "0"],
                env=env, check=True, capture_output=True, text=True, timeout=120,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            subprocess.run(
                [*agent, "enroll", "--state-dir", str(state), "--controller",
                 f"localhost:{port}", "--token", token, "--ca-cert", str(data / "ca.pem")],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            # Once, so that its modules' bytecode is compiled, as the
            # packages compile it when installed (else the first start
            # compiles, and keeps about 0.7 MiB more).
            subprocess.run(
                [*agent, "run", "--once", "--state-dir", str(state)],
                env=compiling, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            with Path(tmp, "agent.log").open("wb") as agent_log:
                proc = subprocess.Popen(
                    [*agent, "run", "--state-dir", str(state)],
                    stdout=agent_log, stderr=subprocess.STDOUT, env=compiling,
                )  # fmt: skip
            try:
                result = _sample(proc, interval, checkins, agent, state, Path(tmp, "agent.log"))
                if os.environ.get("FOOTPRINT_MAPS"):
                    result["largest_mappings"] = _largest(proc.pid)
                return result
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        finally:
            controller.send_signal(signal.SIGTERM)
            controller.wait(timeout=60)


def _sample(
    proc: subprocess.Popen[bytes],
    interval: int,
    checkins: int,
    agent: list[str],
    state: Path,
    log: Path,
) -> dict[str, object]:
    # Settle: the first check-in sends the whole inventory; idle is after.
    time.sleep(interval * 2 + 2)
    if proc.poll() is not None:
        raise SystemExit(f"the agent exited {proc.returncode}:\n{log.read_text()}")
    settled = memory(proc.pid)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(interval * checkins)
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    idle = memory(proc.pid)
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    per_checkin = (cpu1 - cpu0) / max(1, round((t1 - t0) / interval))
    status = subprocess.Popen(
        [*agent, "status", "--json", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, _, usage = os.wait4(status.pid, 0)
    status.returncode = 0  # reaped above
    one_shot = usage.ru_maxrss / 1024
    at_production = per_checkin / PRODUCTION_INTERVAL * 100
    return {
        "agent": " ".join(agent),
        # agent.daemon.run_optimized: where the interpreter allows it
        "under_python_OO": b"-OO" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0"),
        "rss_mib_after_first_checkins": round(settled["rss_mib"], 1),
        "rss_mib_idle": round(idle["rss_mib"], 1),
        "unique_mib_idle": round(idle["unique_mib"], 1),
        "anon_mib_idle": round(idle["anon_mib"], 1),
        "file_mib_idle": round(idle["file_mib"], 1),
        "peak_rss_mib": round(idle["peak_rss_mib"], 1),
        "cpu_percent_at_interval": round(share, 3),
        "interval_s": interval,
        "cpu_s_per_checkin": round(per_checkin, 4),
        "cpu_percent_at_5min_checkins": round(at_production, 4),
        "status_json_peak_rss_mib": round(one_shot, 1),
        "idle_rss_within_budget": idle["rss_mib"] <= IDLE_RSS_BUDGET_MIB,
        "cpu_within_budget": at_production <= CPU_BUDGET_PERCENT,
    }


def measure_apply() -> dict[str, object]:
    """The agent's peak RSS over a campaign it applies with real apt (see
    the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.e2e.harness import E2EFleet, campaign_text
    from tests.support.sandbox import sandbox_available

    reason = sandbox_available()
    if reason is not None:
        raise SystemExit(f"agent_footprint: error: --apply needs a host sandbox: {reason}")
    with tempfile.TemporaryDirectory(prefix="fp-footprint-apply-") as tmp:
        fleet = E2EFleet(Path(tmp))
        try:
            host = fleet.add_host("bench-0", "eu", 0)
            fleet.start_agents()
            campaign_id = fleet.create_campaign(campaign_text())
            fleet.controller.admin("campaign", "approve", campaign_id)
            peak, state, deadline = 0.0, "", time.monotonic() + 300
            while state not in ("completed", "halted") and time.monotonic() < deadline:
                for pid in host.sandbox.pids():
                    try:
                        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        # python [-OO] .../fleetpatch-agent run
                        if any(word.endswith(b"/fleetpatch-agent") for word in argv[1:3]):
                            peak = max(peak, memory(pid)["peak_rss_mib"])
                    except (OSError, KeyError):
                        continue
                state = str(fleet.campaign(campaign_id)["state"])
                time.sleep(0.5)
            return {
                "campaign": state,
                "fp_demo_installed": host.installed(),
                "agent_peak_rss_mib_while_applying": round(peak, 1),
                "apply_rss_within_budget": 0 < peak <= APPLY_RSS_BUDGET_MIB,
            }
        finally:
            fleet.close()


def bare_client(argv: list[str]) -> int:
    """The --floor agent: `enroll` and the rest are the real agent's; `run
    --state-dir DIR` only keeps the channel, a Watch stream and empty
    check-ins (the figures' floor, not an agent); with --lean
    first, it imports grpc and hashlib as the daemon does."""
    if argv[:1] == ["--lean"]:
        from agent.leanimports import lean_imports  # the daemon's, and nothing else of the agent

        lean_imports()
        argv = argv[1:]
    if argv[:1] != ["run"]:
        from agent.daemon import main as agent_main

        sys.argv = ["fleetpatch-agent", *argv]
        agent_main()
        return 0
    import threading

    import grpc
    from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

    state = Path(argv[argv.index("--state-dir") + 1])
    config = (state / "agent.toml").read_text()
    address = config.split('address = "', 1)[1].split('"', 1)[0]
    files = [(state / name).read_bytes() for name in ("ca.pem", "key.pem", "cert.pem")]
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(*files))
    stub = agent_pb2_grpc.AgentServiceStub(channel)

    def watch() -> None:
        for _ in stub.Watch(agent_pb2.WatchRequest()):
            pass

    if "--once" not in argv:
        threading.Thread(target=watch, daemon=True).start()
    while True:
        try:
            answer = stub.CheckIn(agent_pb2.CheckInRequest(), timeout=30)
        except grpc.RpcError as exc:
            say(f"bare client: {exc}")
            answer = agent_pb2.CheckInResponse()
        if "--once" in argv:
            return 0
        time.sleep(answer.next_checkin.seconds or 5)


def main() -> int:
    if sys.argv[1:2] == ["--bare-client"]:
        return bare_client(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--interval", type=at_least(1), default=5, help="check-in interval, seconds"
    )
    parser.add_argument(
        "--checkins", type=at_least(1), default=12, help="check-ins to measure over"
    )
    parser.add_argument(
        "--agent", default="fleetpatch-agent", help="the agent command (default: the venv's)"
    )
    parser.add_argument(
        "--baseline-agent", help="a second agent command measured first, in the same run"
    )
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare grpcio client (see above)"
    )
    parser.add_argument(
        "--apply", action="store_true", help="measure a patch being applied instead (sandboxed)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("agent_footprint: error: the agent runs as root; run this as root", file=sys.stderr)
        return 2
    if args.apply:
        print(json.dumps(measure_apply()), flush=True)
        return 0
    agents = [args.baseline_agent, args.agent] if args.baseline_agent else [args.agent]
    if args.floor:
        bare = f"{sys.executable} {Path(__file__).resolve()} --bare-client"
        agents += [bare, f"{bare} --lean"]
    for agent in agents:
        argv = shlex.split(agent) if " " in agent else command(agent)
        say(f"measuring {' '.join(argv)}: {args.checkins} check-ins every {args.interval}s")
        print(json.dumps(measure(argv, args.interval, args.checkins)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
