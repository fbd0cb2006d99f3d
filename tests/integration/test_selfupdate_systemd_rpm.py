"""An agent installed from an .rpm file updates itself through campaigns,
under a real systemd, with the real packages: the RPM side of
test_selfupdate_systemd.py.

systemd runs as PID 1 of a container (SystemdContainer) on the RPM sandbox
(tests.support.dnfrepo: this Debian machine underneath, with an rpmdb and a
dnf repository of its own, a stand-in base package providing python(abi),
systemd and /bin/sh). The controller is the packaged one (its .deb); the
agent is the agent RPM installed with `rpm -U FILE`, as by hand: no
repository or cache has it, and nothing kept a copy. os-release there says
Debian, so the agent is told it is a dnf host (`[agent] package_manager`,
in /etc/fleetpatch/agent.toml).

1. With a host check that only this version passes, a campaign updates the
   agent to the next: the old agent keeps a copy of itself (rebuilt from
   its installed files: there is no other), installs the next .rpm with
   dnf, systemd restarts it, the new version fails its check and
   reinstalls the rebuilt copy; the restored agent reports REVERTED.
2. Without that check, a campaign to the version after succeeds (the copy
   rebuilt again), and the watchdog is cleared.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fleetpatch.agentrelease import Family

from tests.integration.test_selfupdate_systemd import (
    AGENT,
    CAMPAIGN,
    _count,
    _last_order,
    _watchdogs,
    serve_and_enroll,
)
from tests.support.dnfrepo import LocalRpmRepo, RpmSpec, dnfrepo_available, make_rpm_host
from tests.support.packages import (
    DEB_MOUNT,
    BuiltDebs,
    SystemdContainer,
    agent_rpm,
    build_script,
    built_debs,
    inside,
    next_version,
    packaging_available,
    session_debs_root,
    systemd_container_available,
)
from tests.support.sandbox import HostSandbox
from tests.support.waiting import scaled, wait_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(scaled(1500))]

SETTINGS = """\
[agent]
package_manager = "dnf"
retry_interval = "1s"
"""
# Passes for the version installed first only: its next release breaks
# something on this host.
CHECK = """
[[checks]]
name = "agent-is-{version}"
kind = "command"
argv = ["/opt/fleetpatch/agent/bin/python", "-c", \
"import fleetpatch, sys; sys.exit(fleetpatch.__version__ != '{version}')"]
"""


@pytest.fixture
def rpm_container(make_sandbox, tmp_path):
    reason = systemd_container_available() or packaging_available() or dnfrepo_available()
    if reason is not None:
        pytest.skip(reason)
    sandbox: HostSandbox = make_sandbox(machine_id=uuid.uuid4().hex)
    sandbox.bind(session_debs_root(), DEB_MOUNT)
    built_debs()
    v2 = next_version(build_script().project_version())
    for version in (None, v2, next_version(v2)):
        agent_rpm(version)
    repo = LocalRpmRepo(tmp_path / "repo")
    make_rpm_host(sandbox, repo)
    repo.add(RpmSpec("fp-base", "1", provides=("python(abi) = 3.11", "systemd", "/bin/sh")))
    sandbox.run(["dnf", "-y", "install", "fp-base"], timeout=600)
    booted = SystemdContainer(sandbox, tmp_path / "console.log")
    yield booted
    booted.stop()


def _installed(c: SystemdContainer) -> str:
    return c.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "fleetpatch-agent"]).stdout


def _campaign(c: SystemdContainer, name: str, version: str) -> str:
    spec = session_debs_root() / f"campaign-{uuid.uuid4().hex}.toml"
    spec.write_text(CAMPAIGN.format(name=name, version=version, rollback_after="3m"))
    created = c.run(["fleetpatch", "campaign", "create", inside(spec)])
    campaign_id = created.stdout.strip().splitlines()[-1]
    c.run(["fleetpatch", "campaign", "approve", campaign_id])
    return campaign_id


def _settings(c: SystemdContainer, text: str) -> None:
    c.run(["sh", "-c", f"cat > /etc/fleetpatch/agent.toml <<'EOF'\n{text}EOF\n"])


def _install_and_enroll(c: SystemdContainer, debs: BuiltDebs, rpm1: Path, v1: str) -> None:
    """The controller's .deb, the agent's .rpm from a file, the release key
    pinned, this host's settings; the controller serving, the agent
    enrolled and checked in."""
    assert debs.public_key is not None
    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    c.run(["dpkg", "-i", inside(debs.controller)])
    c.run(["rpm", "-U", inside(rpm1)], timeout=600)  # by hand, from a file
    c.run(["install", "-m", "0644", inside(debs.public_key), "/etc/fleetpatch/release.pub"])
    _settings(c, SETTINGS + CHECK.format(version=v1))
    serve_and_enroll(c, v1)


def test_an_rpm_agent_from_a_file_rolls_back_to_a_rebuilt_copy_then_updates(rpm_container):
    c = rpm_container
    debs = built_debs()
    v1 = build_script().project_version()
    v2 = next_version(v1)
    v3 = next_version(v2)
    rpm1, rpm2, rpm3 = agent_rpm(), agent_rpm(v2), agent_rpm(v3)

    _install_and_enroll(c, debs, rpm1, v1)
    facts = c.hosts()[0]["facts"]
    assert isinstance(facts, dict)
    assert facts["package_manager"] == "dnf"
    for rpm in (rpm2, rpm3):
        c.run(["fleetpatch", "release", "publish", inside(rpm)])
    listed = json.loads(c.run(["fleetpatch", "release", "list", "--json"]).stdout)
    assert {r["family"] for r in listed} == {"rpm"}

    # 1. The next version fails the host's check: back to the rebuilt copy.
    first = _campaign(c, "agents-first", v2)
    wait_until("the failed update is reverted", lambda: _count(c, first, "reverted") == 1,
               timeout=400)  # fmt: skip
    assert _installed(c) == f"{Family.RPM.package_version(v1)}-1"
    wait_until("the restored agent checks in", lambda: c.reported_agent_version() == v1)
    order = _last_order(c)
    assert order["state"] == "REVERTED", order
    assert "agent-is-" in json.dumps(order)
    changed = c.run(["rpm", "-V", "fleetpatch-agent"], check=False).stdout.split()
    assert changed[-1:] in ([], ["/etc/fleetpatch/agent.toml"]), changed
    wait_until("the spent watchdog is cleared", lambda: _watchdogs(c) == "", timeout=60)
    # What it rolled back to was rebuilt here, not the file it came from.
    kept = c.run(["sh", "-c", f"ls /var/lib/fleetpatch/agent/cache/*/{rpm1.name}"]).stdout.split()
    assert len(kept) == 1, kept
    assert c.run(["cmp", "-s", kept[0], inside(rpm1)], check=False).returncode == 1
    assert "digests OK" in c.run(["rpm", "-K", "--nosignature", kept[0]]).stdout

    # 2. Without the check, the version after that takes over.
    _settings(c, SETTINGS)
    c.run(["systemctl", "restart", AGENT])
    second = _campaign(c, "agents-second", v3)
    wait_until("the update succeeds", lambda: _count(c, second, "succeeded") == 1, timeout=300)
    assert _installed(c) == f"{Family.RPM.package_version(v3)}-1"
    wait_until("the new agent checks in", lambda: c.reported_agent_version() == v3)
    assert _last_order(c)["state"] == "SUCCEEDED"
    assert _watchdogs(c) == "", "the watchdog is disarmed and cleared"
    assert c.show(AGENT, "ActiveState")["ActiveState"] == "active"
