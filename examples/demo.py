"""`make demo`: a controller and three agents on this machine, for real.

Makes a controller in a temp dir (CA, keys, SQLite), serves it on loopback
with mutual TLS, enrolls three agents in two regions and three rings, has
each check in with this machine's real facts and package list, prints the
fleet, and shuts everything down cleanly, even on Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
AGENTS = [("web-1", "eu-west", 0, "role=web"), ("web-2", "eu-west", 1, "role=web"),
          ("db-1", "us-east", 2, "role=db")]  # fmt: skip


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str | Path, quiet: bool = False) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"demo: {Path(str(argv[0])).name} failed: {done.stderr.strip()}")
    if not quiet and done.stdout.strip():
        print(done.stdout.rstrip(), flush=True)
    return done.stdout


def free_port() -> int:
    """A free port whose successor (the enrollment listener) is free too."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def wait_for(path: Path, pid: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit("demo: the controller exited early")
        try:
            if json.loads(path.read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    sys.exit("demo: the controller did not start")


def main() -> None:
    fp, agent = BIN / "fleetpatch", BIN / "fleetpatch-agent"
    with tempfile.TemporaryDirectory(prefix="fleetpatch-demo-") as tmp:
        work = Path(tmp)
        data = work / "controller"
        port = free_port()
        address = f"127.0.0.1:{port}"
        step(f"fleetpatch controller init --data-dir {data} --hostname localhost")
        run(fp, "controller", "init", "--data-dir", data, "--hostname", "localhost",
            "--listen", address, "--checkin-interval", "1m")  # fmt: skip

        step(
            f"fleetpatch controller serve --listen {address}"
            "   (mutual TLS; enrollment on the next port)"
        )
        log = (work / "controller.log").open("w")
        server = subprocess.Popen(
            [str(fp), "controller", "serve", "--data-dir", str(data)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(data / "endpoints.json", server.pid, server)
            for name, region, ring, label in AGENTS:
                step(f"enroll agent {name}: region {region}, ring {ring}, label {label}")
                token = run(fp, "token", "create", "--data-dir", data, "--region", region,
                            "--ring", str(ring), "--uses", "1", "--ttl", "10m",
                            quiet=True).split()[-1]  # fmt: skip
                print(f"    token {token[:16]}...  (one use, 10 minutes)")
                state = work / name
                run(agent, "enroll", "--controller", address, "--token", token, "--ca-cert",
                    data / "ca.pem", "--state-dir", state, "--label", label)  # fmt: skip
                run(agent, "run", "--once", "--state-dir", state)

            step("second check-in: the inventory is unchanged, so only its hash travels")
            run(agent, "run", "--once", "--state-dir", work / AGENTS[0][0])

            step("fleetpatch hosts list")
            run(fp, "hosts", "list", "--data-dir", data)
        finally:
            step("stopping the controller (SIGTERM: in-flight calls finish, check-ins flushed)")
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=30)
            log.close()
            print(f"    controller exited with {code}")
    print("\ndemo complete: every step above ran the real CLIs over real mutual TLS.")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("\ndemo: interrupted; everything it started has been stopped")
