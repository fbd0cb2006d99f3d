"""Agents update themselves through a campaign, under a real systemd, with
the real packages: the seed's "patch the agents first".

systemd runs as PID 1 of a container on a copy-on-write root
(SystemdContainer); the controller and the agent are the packaged ones,
installed with dpkg and run by their units. The release key that signed
the packages is pinned at /etc/fleetpatch/release.pub.

1. A campaign updates the agent from this version to the next: the old
   agent installs it, systemd restarts the agent, the new version finishes
   the order (SUCCEEDED) and the rollback watchdog is gone.
2. A broken release (the next version again, relabelled and with an agent
   that exits at once, signed with the same key) cannot take over: the
   watchdog, a transient systemd timer, reinstalls the kept copy; the
   restored agent reports the order REVERTED and the campaign halts.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from fleetpatch.debversion import debian_version

from controller.releases import signed as release
from controller.releases.signed import sign_artifacts
from tests.support.controller import free_port
from tests.support.packages import (
    BuiltDebs,
    SystemdContainer,
    built_debs,
    inside,
    next_version,
    session_debs_root,
    session_release_key,
)
from tests.support.waiting import scaled, wait_until

# A whole fleet's life under a real systemd: minutes on an idle machine, more
# on a busy one; the suite's default per-test limit (300 s) is too short.
pytestmark = pytest.mark.timeout(scaled(1200))

AGENT = "fleetpatch-agent.service"
CONTROLLER = "fleetpatch-controller.service"
CAMPAIGN = """\
[campaign]
name = "{name}"

[agent_update]
version = "{version}"
rollback_after = "{rollback_after}"

[verify]
timeout = "20s"

[rollout]
rings = [{{ ring = 0, concurrency = "100%", gate = {{ min_success = 1.0, failure_budget = 0 }} }}]
"""


# Holds a dpkg lock file as dpkg does (an fcntl write lock) for some seconds.
LOCK_HOLDER = """\
import fcntl, sys, time
with open(sys.argv[1], "w") as lock:
    fcntl.lockf(lock, fcntl.LOCK_EX)
    time.sleep(float(sys.argv[2]))
"""


def broken_release(base: BuiltDebs, version: str) -> Path:
    """The agent package of ``base`` relabelled ``version``, with an agent
    that exits 1 at once, signed with the session's release key: a release
    that passes every check and cannot start."""
    out = session_debs_root() / f"broken-{version}"
    deb = out / f"fleetpatch-agent_{debian_version(version)}_{base.agent.name.split('_')[2]}"
    if deb.is_file():
        return deb
    tree = out / "tree"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-R", str(base.agent), str(tree)], check=True, timeout=300)
    control = tree / "DEBIAN" / "control"
    control.write_text(
        control.read_text().replace(
            f"Version: {base.deb_version}\n", f"Version: {debian_version(version)}\n"
        )
    )
    entry = tree / "opt/fleetpatch/agent/bin/fleetpatch-agent"
    entry.unlink()
    entry.write_text("#!/bin/sh\necho 'fleetpatch test: a release that cannot start' >&2\nexit 1\n")
    entry.chmod(0o755)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(deb)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    sign_artifacts([deb], session_release_key())
    return deb


def _campaign(c: SystemdContainer, name: str, version: str, rollback_after: str) -> str:
    spec = session_debs_root() / f"campaign-{uuid.uuid4().hex}.toml"
    spec.write_text(CAMPAIGN.format(name=name, version=version, rollback_after=rollback_after))
    created = c.run(["fleetpatch", "campaign", "create", inside(spec)])
    campaign_id = created.stdout.strip().splitlines()[-1]
    c.run(["fleetpatch", "campaign", "approve", campaign_id])
    return campaign_id


def _show(c: SystemdContainer, campaign_id: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        c.run(["fleetpatch", "campaign", "show", campaign_id, "--json"]).stdout
    )
    return doc


def _count(c: SystemdContainer, campaign_id: str, outcome: str) -> int:
    cells = _show(c, campaign_id)["cells"]
    assert isinstance(cells, list)
    return sum(int(cell[outcome]) for cell in cells)


def _installed(c: SystemdContainer) -> str:
    return c.run(["dpkg-query", "-W", "-f", "${Version}", "fleetpatch-agent"]).stdout


def _watchdogs(c: SystemdContainer) -> str:
    listed = c.run(["systemctl", "list-units", "--all", "--no-legend", "--plain",
                    "fleetpatch-agent-rollback-*"])  # fmt: skip
    return listed.stdout.strip()


def _restores(c: SystemdContainer) -> str:
    """What the watchdog's restores logged (nothing before the first)."""
    argv = ["journalctl", "--no-pager", "-o", "cat", "-u", "fleetpatch-agent-rollback-*"]
    return c.run(argv, check=False).stdout


def _last_order(c: SystemdContainer) -> dict[str, object]:
    status = json.loads(c.run(["fleetpatch-agent", "status", "--json"]).stdout)
    order: dict[str, object] = status["orders"][0]
    return order


def _install_and_enroll(c: SystemdContainer, v1: BuiltDebs) -> None:
    """Both packages at v1, the release key pinned, the controller serving,
    the agent enrolled and checked in with the key reported pinned."""
    assert v1.public_key is not None
    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])  # a real host has none
    c.run(["dpkg", "-i", inside(v1.agent), inside(v1.controller)])
    c.run(["install", "-m", "0644", inside(v1.public_key), "/etc/fleetpatch/release.pub"])

    serve_and_enroll(c, v1.version)
    status = json.loads(c.run(["fleetpatch-agent", "status", "--json"]).stdout)
    pinned = release.fingerprint(release.load_public_key(v1.public_key))
    assert status["release_key"] == {"path": "/etc/fleetpatch/release.pub", "fingerprint": pinned}


def test_agents_update_themselves_and_a_release_that_cannot_start_is_rolled_back(container):
    c = container
    v1 = built_debs()
    v2 = built_debs(next_version(v1.version))
    v3 = next_version(v2.version)
    broken = broken_release(v2, v3)

    _install_and_enroll(c, v1)

    # 1. This version -> the next, through a campaign.
    c.run(["fleetpatch", "release", "publish", inside(v2.agent)])
    first = _campaign(c, "agents-first", v2.version, rollback_after="3m")
    wait_until("the update succeeds", lambda: _count(c, first, "succeeded") == 1, timeout=180)
    assert _installed(c) == v2.deb_version
    wait_until("the new agent checks in", lambda: c.reported_agent_version() == v2.version)
    order = _last_order(c)
    assert order["state"] == "SUCCEEDED"
    assert f"running fleetpatch-agent {v2.version}" in str(order["detail"])
    steps = [s["state"] for s in order["steps"]]  # type: ignore[attr-defined]
    assert steps.count("VERIFY") == 2, "entered by the old agent, then resumed by the new one"
    assert _watchdogs(c) == "", "the watchdog is disarmed and cleared"
    assert c.show(AGENT, "ActiveState")["ActiveState"] == "active"

    # 2. A signed release that cannot start: restored by the watchdog, which
    # waits out a dpkg lock held by someone else when it fires (it retries).
    c.run(["fleetpatch", "release", "publish", inside(broken)])
    second = _campaign(c, "agents-broken", v3, rollback_after="40s")
    wait_until("the broken release is installed",
               lambda: _installed(c) == debian_version(v3), timeout=120)  # fmt: skip
    # Held until the watchdog's first restore has met it (at most 10 minutes),
    # then let go, as dpkg lets go when it is done: the restore is retried.
    c.run(["systemd-run", "--unit=fp-test-dpkg-lock", "--", "/usr/bin/python3", "-c",
           LOCK_HOLDER, "/var/lib/dpkg/lock-frontend", "600"])  # fmt: skip
    wait_until("the watchdog's restore meets the lock",
               lambda: "frontend lock" in _restores(c), timeout=300)  # fmt: skip
    c.run(["systemctl", "stop", "fp-test-dpkg-lock"])
    wait_until("the broken update is reverted", lambda: _count(c, second, "reverted") == 1,
               timeout=300)  # fmt: skip
    restores = _restores(c)
    assert "frontend lock" in restores, f"the first restore met the lock:{restores}"
    assert _installed(c) == v2.deb_version
    wait_until("the restored agent checks in", lambda: c.reported_agent_version() == v2.version)
    order = _last_order(c)
    assert order["state"] == "REVERTED"
    assert f"fleetpatch-agent {debian_version(v3)} did not take over" in json.dumps(order)
    shown = _show(c, second)
    assert shown["state"] == "halted", "a reverted canary halts the rollout"
    wait_until("the spent watchdog is cleared", lambda: _watchdogs(c) == "", timeout=30)
    assert c.run(["fleetpatch", "audit", "verify"]).stdout.startswith("audit trail intact")


def serve_and_enroll(c: SystemdContainer, version: str) -> None:
    """Start the installed controller (ticking every second, hosts checking
    in every 2 s), enroll the installed agent and start it; until it has
    checked in with ``version``."""
    port = free_port()
    c.run(["runuser", "-u", "fleetpatch", "--", "fleetpatch", "controller", "init",
           "--hostname", "localhost", "--listen", f"127.0.0.1:{port}",
           "--checkin-interval", "2s"])  # fmt: skip
    config = "/var/lib/fleetpatch/controller/controller.toml"
    c.run(["sed", "-i", 's/^tick = .*/tick = "1s"/', config])
    c.run(["systemctl", "start", CONTROLLER])
    serving = ["fleetpatch", "hosts", "list"]
    wait_until("the controller serves", lambda: c.run(serving, check=False).returncode == 0)
    token = c.run(["fleetpatch", "token", "create", "--region", "eu-west", "--ring", "0"])
    c.run(["fleetpatch-agent", "enroll", "--controller", f"127.0.0.1:{port}",
           "--token", token.stdout.strip().splitlines()[-1],
           "--ca-cert", "/var/lib/fleetpatch/controller/ca.pem"])  # fmt: skip
    c.run(["systemctl", "start", AGENT])
    wait_until("the agent checks in", lambda: c.reported_agent_version() == version)
