"""The host sandbox isolates for real, so later tests can trust it.

Each test runs real programs (apt-get, dpkg, the project's venv python) in
a throwaway copy-on-write copy of this machine and checks, from outside,
that the machine itself did not change. Skipped, with the reason, where
sandboxes cannot work (not root, no namespaces, overlay refused).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.debrepo import (
    DebSpec,
    apt_get,
    dpkg_status,
    exit_script,
    use_repo,
)
from tests.support.waiting import scaled

pytestmark = pytest.mark.root

REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo(version: str) -> DebSpec:
    return DebSpec(
        "fp-demo",
        version,
        files={"/usr/share/fp-demo/VERSION": f"{version}\n"},
        description=f"fleetpatch sandbox demo {version}",
    )


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _last_arg(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")[-1]
    except OSError:
        return b""


def test_writes_stay_in_the_sandbox(host_sandbox):
    sb = host_sandbox
    probe = f"/etc/fp-probe-{uuid.uuid4().hex}"
    sb.run(["tee", probe], input="sandboxed\n")
    sb.run(["rm", "/etc/debian_version"])
    sb.path("/etc/fp-from-test").write_text("written by the test\n")
    private_tmp = f"/tmp/fp-private-{uuid.uuid4().hex}"
    sb.run(["touch", private_tmp])

    assert sb.path(probe).read_text() == "sandboxed\n"
    assert sb.run(["cat", "/etc/fp-from-test"]).stdout == "written by the test\n"
    assert sb.run(["test", "-e", "/etc/debian_version"], check=False).returncode == 1
    assert not Path(probe).exists()
    assert not Path("/etc/fp-from-test").exists()
    assert Path("/etc/debian_version").exists()
    assert not Path(private_tmp).exists()
    changes = sb.upper_changes()
    assert changes[probe] == "written"
    assert changes["/etc/fp-from-test"] == "written"
    assert changes["/etc/debian_version"] == "deleted"
    assert private_tmp not in changes  # /tmp is a private tmpfs, not the overlay


def test_apt_installs_and_upgrades_from_the_local_repo_only(host_sandbox, deb_repo):
    sb = host_sandbox
    machine_sources = sorted(Path("/etc/apt").rglob("*"))
    deb_repo.add(_demo("1.0"), _demo("1.1"))
    use_repo(sb, deb_repo)
    policy = sb.run(["apt-cache", "policy"]).stdout
    assert "file:/srv/fleetpatch-apt" in policy
    assert "http" not in policy  # the machine's sources are gone, in here

    apt_get(sb, "install", "fp-demo=1.0")
    assert dpkg_status("fp-demo", sb) == ("ii", "1.0")
    apt_get(sb, "install", "--only-upgrade", "fp-demo")
    assert dpkg_status("fp-demo", sb) == ("ii", "1.1")
    assert sb.path("/usr/share/fp-demo/VERSION").read_text() == "1.1\n"
    assert "/usr/share/fp-demo/VERSION" in sb.upper_changes()

    assert dpkg_status("fp-demo") is None  # the machine's dpkg never saw it
    assert not Path("/usr/share/fp-demo").exists()
    assert sorted(Path("/etc/apt").rglob("*")) == machine_sources


def test_failing_postinst_leaves_the_package_half_configured(host_sandbox, deb_repo):
    sb = host_sandbox
    deb_repo.add(
        DebSpec(
            "fp-broken",
            "1.0",
            files={"/usr/share/fp-broken/README": "broken\n"},
            scripts={"postinst": exit_script(1)},
        )
    )
    use_repo(sb, deb_repo)
    result = apt_get(sb, "install", "fp-broken", check=False)
    assert result.returncode != 0
    assert "failing on purpose" in result.stdout + result.stderr
    status = dpkg_status("fp-broken", sb)
    assert status == ("iF", "1.0")  # installed, half-configured: not "ii"
    assert dpkg_status("fp-broken") is None


def test_two_sandboxes_are_isolated_from_each_other(make_sandbox):
    a = make_sandbox(hostname="fp-host-a", machine_id="a" * 32)
    b = make_sandbox(hostname="fp-host-b", machine_id="b" * 32)
    for sb, name in ((a, "a"), (b, "b")):
        sb.run(["tee", "/etc/fp-who"], input=name)
        sb.run(["touch", f"/tmp/only-{name}"])
    a.spawn(["sleep", "300"])
    _wait_for(lambda: len(a.pids()) == 1)

    assert a.run(["cat", "/etc/fp-who"]).stdout == "a"
    assert b.run(["cat", "/etc/fp-who"]).stdout == "b"
    assert b.run(["test", "-e", "/tmp/only-a"], check=False).returncode == 1
    assert a.run(["hostname"]).stdout.strip() == "fp-host-a"
    assert b.run(["hostname"]).stdout.strip() == "fp-host-b"
    assert b.run(["cat", "/etc/machine-id"]).stdout.strip() == "b" * 32
    assert b.pids() == []  # a's process is not in b's PID namespace
    inside_b = b.run(["ps", "-e", "-o", "comm="]).stdout.split()
    assert "sleep" not in inside_b
    assert socket.gethostname() not in {"fp-host-a", "fp-host-b"}
    assert not Path("/etc/fp-who").exists()


def test_background_processes_die_with_the_sandbox(make_sandbox):
    sb = make_sandbox()
    # kill_all: everything but PID 1 dies, the sandbox stays usable.
    sb.spawn(["sleep", "301"])
    _wait_for(lambda: len(sb.pids()) == 1)
    sb.kill_all()
    assert sb.pids() == []
    sb.run(["true"])

    # A plain daemon, and one that left our process group and ignores SIGTERM.
    daemon = sb.spawn(["sleep", "302"])
    detach = ["setsid", "-f", "sh", "-c", "trap '' TERM; exec sleep 303"]
    detached = sb.spawn(detach, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert detached.wait(timeout=10) == 0
    _wait_for(lambda: {b"302", b"303"} <= {_last_arg(p) for p in sb.pids()})
    pids = sb.pids()
    mnt_ns = os.readlink(f"/proc/{sb.pid}/ns/mnt")
    state = sb.state_dir

    sb.stop()
    assert daemon.returncode is not None
    for pid in pids:
        assert _last_arg(pid) not in {b"302", b"303"}
    holders = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns/mnt") == mnt_ns:
                holders.append(entry.name)
        except OSError:
            pass
    assert holders == []  # the mount namespace, and its overlay, are gone
    assert not state.exists()


def test_a_timed_out_command_is_killed_with_its_children(host_sandbox):
    with pytest.raises(subprocess.TimeoutExpired):
        host_sandbox.run(["sh", "-c", "sleep 304 & sleep 305; wait"], timeout=0.5)
    _wait_for(lambda: host_sandbox.pids() == [])


NESTED = """
import sys
from tests.support.sandbox import HostSandbox

with HostSandbox(base_dir="/var/tmp") as inner:
    inner.run(["tee", "/etc/fp-inner"], input="inner")
    print(inner.upper_on_tmpfs, sorted(inner.upper_changes()))
"""


def test_a_sandbox_in_a_sandbox_puts_its_upper_on_tmpfs(host_sandbox):
    # Inside a sandbox, / and /var/tmp are an overlay, as in most containers:
    # an overlay refuses another overlay as upperdir, so the inner sandbox
    # must fall back to a tmpfs upper (its lower, an overlay, is fine).
    host_sandbox.path("/root/nested.py").write_text(NESTED)
    result = host_sandbox.run(
        [sys.executable, "/root/nested.py"],
        env={"PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.stdout.strip() == "True ['/etc/fp-inner']"
    assert not host_sandbox.path("/etc/fp-inner").exists()
    assert host_sandbox.run(["ls", "/var/tmp"]).stdout.count("fp-sandbox-") == 0


def test_the_project_venv_imports_agent_inside(host_sandbox):
    result = host_sandbox.run(
        [sys.executable, "-c", "import agent, sys; print(agent.__file__); print(sys.prefix)"]
    )
    agent_file, prefix = result.stdout.split()
    assert agent_file == str(REPO_ROOT / "agent" / "__init__.py")
    assert prefix == sys.prefix


def test_private_network_has_only_loopback(host_sandbox, make_sandbox):
    isolated = make_sandbox(private_network=True)
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('unreachable')\n"
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        # The default sandbox shares the machine's network (agents reach a
        # controller on 127.0.0.1); the private one does not.
        shared = host_sandbox.run([sys.executable, "-I", "-c", probe, port])
        private = isolated.run([sys.executable, "-I", "-c", probe, port])
    assert shared.stdout.strip() == "reached"
    assert private.stdout.strip() == "unreachable"
    devices = isolated.run(["cat", "/proc/net/dev"]).stdout.splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]
    own = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "socket.create_connection(s.getsockname(), timeout=5).close(); print('lo up')\n"
    )
    assert isolated.run([sys.executable, "-I", "-c", own]).stdout.strip() == "lo up"


def test_the_package_state_stays_as_the_run_began(host_sandbox):
    """A package installed on the machine while the tests run must not change
    what a sandbox's dpkg sees (it did: three apt tests failed that way)."""
    probe = Path("/var/lib/dpkg/info/fp-sandbox-probe.list")
    probe.write_text("/usr/share/fp-sandbox-probe\n")
    try:
        assert not host_sandbox.path(str(probe)).exists()
        assert host_sandbox.run(["ls", "/var/lib/dpkg/info"]).stdout.count("fp-sandbox-probe") == 0
    finally:
        probe.unlink()
    host_sandbox.run(["sh", "-c", "echo x > /var/lib/dpkg/info/fp-written.list"])
    assert host_sandbox.upper_changes()["/var/lib/dpkg/info/fp-written.list"] == "written"
    assert not Path("/var/lib/dpkg/info/fp-written.list").exists()
