"""`make demo`: the mission, for real, on this machine.

A local apt repository holds fp-demo 1.0 and 1.1; 1.1 breaks on hosts
flagged broken. A real controller (mutual TLS, SQLite) and six real agents,
each in its own host sandbox (mount and PID namespaces, an overlay of /,
chroot), in two regions and three rings. A campaign to 1.1: ring 0
succeeds; ring 1 holds the broken host, which verifies, fails, reverts to
1.0 by itself and reports; the failure budget halts the campaign before
ring 2. Then the audit trail is verified. Everything is cleaned up, even on
Ctrl-C.

Without root or namespaces it says so in one line and rehearses the
shipped simulator scenario instead, so it still shows something true.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import E2EFleet, campaign_text  # noqa: E402
from tests.support.debrepo import debrepo_available  # noqa: E402
from tests.support.sandbox import sandbox_available  # noqa: E402

HOSTS = [("web-eu-0", "eu", 0), ("web-us-0", "us", 0), ("web-eu-1", "eu", 1),
         ("web-us-1", "us", 1), ("web-eu-2", "eu", 2), ("web-us-2", "us", 2)]  # fmt: skip
BROKEN = "web-eu-1"
SCENARIO = ROOT / "examples" / "scenarios" / "canary-regression.toml"


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def story(work: Path) -> None:
    say("building a local apt repository: fp-demo 1.0 and 1.1")
    fleet = E2EFleet(work)
    try:
        say(f"controller serving on {fleet.controller.address} (mutual TLS; SQLite in {work.name})")
        for name, region, ring in HOSTS:
            host = fleet.add_host(name, region, ring)
            say(f"host {name}: own sandbox, fp-demo 1.0 installed, enrolled as {host.host_id} "
                f"(region {region}, ring {ring})")  # fmt: skip
        next(h for h in fleet.hosts if h.name == BROKEN).break_it()
        say(f"host {BROKEN}: flagged broken, fp-demo 1.1 will refuse to start there")
        fleet.start_agents()
        say("six agents running (`fleetpatch-agent run`, one process per host)")
        campaign_id = fleet.create_campaign(campaign_text())
        fleet.controller.admin("campaign", "approve", campaign_id)
        say(f"campaign {campaign_id} to fp-demo 1.1 approved: rings 0, 1, 2; failure budget 0")
        watch(fleet, campaign_id)
        print()
        print(fleet.controller.admin("campaign", "show", campaign_id).stdout)
        for host in fleet.hosts:
            print(f"  {host.name:9} ring {host.ring}  fp-demo {host.installed()}")
        broken = next(h for h in fleet.hosts if h.name == BROKEN)
        order = broken.status()["orders"][0]
        print(f"\n{BROKEN}'s own journal (fleetpatch-agent status):")
        for step in order["steps"]:
            print(f"  {step['state']:<10} {step['detail'] or ''}".rstrip())
        print()
        say(fleet.controller.admin("audit", "verify").stdout.strip())
    finally:
        say("stopping agents, controller and sandboxes")
        fleet.close()


def watch(fleet: E2EFleet, campaign_id: str) -> None:
    seen: dict[tuple[int, str, str], int] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        doc = fleet.campaign(campaign_id)
        for cell in doc["cells"]:
            for key in ("in_flight", "succeeded", "reverted", "failed", "timed_out"):
                where = (cell["ring"], cell["region"], key)
                if cell[key] != seen.get(where, 0) and cell[key]:
                    say(
                        f"ring {cell['ring']} {cell['region']}: {cell[key]} {key.replace('_', ' ')}"
                    )
                seen[where] = cell[key]
        if doc["state"] in ("halted", "completed"):
            reason = f": {doc['halt_reason']}" if doc["halt_reason"] else ""
            say(f"campaign {doc['state']}{reason}")
            return
        time.sleep(0.5)
    raise SystemExit("demo: the campaign did not finish in 4 minutes")


def main() -> None:
    reason = sandbox_available() or debrepo_available()
    if reason is not None:
        print(f"demo: a real fleet needs root and Linux namespaces ({reason}); "
              "rehearsing the shipped scenario in the simulator instead")  # fmt: skip
        sim = Path(sys.executable).parent / "fleetpatch-sim"
        sys.exit(subprocess.run([str(sim), "run", str(SCENARIO)], check=False).returncode)
    with tempfile.TemporaryDirectory(prefix="fleetpatch-demo-") as tmp:
        story(Path(tmp))
    print("\ndemo complete: a real controller, real agents in six sandboxed hosts, real apt.")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("\ndemo: interrupted; everything it started has been stopped")
