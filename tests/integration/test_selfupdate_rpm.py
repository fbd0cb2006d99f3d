"""Agent self-update on a dnf host, for real: the runner's agent-update steps
with the real dnf backend, whose rpm and dnf commands run in the RPM sandbox
(tests.support.dnfrepo), on stand-in agent RPMs built here with rpmbuild
and signed with `fleetpatch release sign`'s own code. The agent was
installed from a file: no repository and no dnf cache has it, so every
rollback here uses the package the agent kept.

What stands in: the transport (the fetch copies the released file), the
health checks, and the watchdog's timer (its restore command, the real
`SystemdWatchdog.restore_argv`, is run in the sandbox when the test says the
timer fired). The real agent RPM under rpm -U both ways is
tests/integration/test_packaging_rpm.py.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import ControllerUnavailable
from agent.orders.handover import HandOver
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.orders.selfupdate import KEPT_DIR, SystemdWatchdog, unit_name
from agent.orders.states import State
from tests.integration.test_dnf_backend import RpmHost, rpm_host  # noqa: F401 - the fixture
from tests.support.dnfrepo import RpmSpec
from tests.support.fakes import FakeProber
from tests.support.orders import sign, trusted
from tests.support.releases import agent_rpm, agent_update_order, release_key, signed_release
from tests.unit.test_runner import Clock
from tests.unit.test_selfupdate import FakeWatchdog

pytestmark = pytest.mark.root

HOST = "h-00000000000000bb"
AGENT = "fleetpatch-agent"


class Host:
    """One dnf host running stand-in agents, and its controller's releases."""

    def __init__(self, machine: RpmHost, tmp: Path) -> None:
        self.rpm_host, self.tmp = machine, tmp
        self.cache = machine.cache  # bound at the same path in the sandbox
        self.journal = Journal.open(tmp / "journal.db")
        self.key = release_key(tmp / "keys")
        self.policy = Policy(release_key=self.key.with_suffix(".pub"))
        self.order_key = Ed25519PrivateKey.generate()
        self.watchdog = FakeWatchdog()
        self.served: dict[bytes, Path] = {}
        self.unreachable = ""
        self.clock = Clock()
        self.sequence = 0

    def fetch(self, sha256: bytes, dest: Path, size: int) -> None:
        shutil.copyfile(self.served[sha256], dest)

    def reach(self) -> None:
        if self.unreachable:
            raise ControllerUnavailable(self.unreachable)

    def runner(self, version: str) -> Runner:
        return Runner(
            self.journal, self.rpm_host.dnf, FakeProber(), self.policy, [], self.cache,
            clock=self.clock, sleep=self.clock.sleep, retry_interval=5, fetch=self.fetch,
            reach=self.reach, watchdog=self.watchdog, running_version=version,
        )  # fmt: skip

    def release(self, version: str) -> Path:
        rpm = agent_rpm(self.tmp / f"release-{version}", version)
        signed_release([rpm], self.key)
        self.served[hashlib.sha256(rpm.read_bytes()).digest()] = rpm
        return rpm

    def order(self, runner: Runner, rpm: Path) -> str:
        self.sequence += 1
        envelope = sign(agent_update_order(HOST, self.sequence, rpm), self.order_key)
        return runner.receive(envelope, trusted(self.order_key), HOST).order_id

    def installed(self) -> str | None:
        return self.rpm_host.version(AGENT)

    def detail(self, order_id: str) -> str:
        record = self.journal.order(order_id)
        assert record is not None
        return record.detail


@pytest.fixture
def host(rpm_host, tmp_path):  # noqa: F811 - the imported fixture
    found = Host(rpm_host, tmp_path)
    first = RpmSpec(AGENT, "0.1.0", files={"/opt/fleetpatch-test/VERSION": "0.1.0\n"})
    rpm_host.install_file(first, tmp_path)  # by hand, from a file
    yield found
    found.journal.close()


def test_an_rpm_agent_updates_itself_and_the_next_failed_update_is_rolled_back(host, tmp_path):
    # The operator keeps the installed package where the agent looks for it
    # (an agent from a file is in no repository: without it, no update).
    first = agent_rpm(tmp_path / "by-hand", "0.1.0")
    (host.cache / KEPT_DIR).mkdir(mode=0o700)
    shutil.copyfile(first, host.cache / KEPT_DIR / first.name)

    rpm2 = host.release("0.2.0")
    order_id = host.order(host.runner("0.1.0"), rpm2)
    with pytest.raises(HandOver, match=r"fleetpatch-agent 0\.2\.0 is installed"):
        host.runner("0.1.0").run(order_id)
    assert host.installed() == "0.2.0-1"
    restore = host.watchdog.armed[unit_name(order_id)][0]
    assert restore.name == first.name
    assert restore.is_file()
    assert host.runner("0.2.0").resume() == [(order_id, State.SUCCEEDED)]
    assert [p.name for p in (host.cache / KEPT_DIR).iterdir()] == [rpm2.name]

    # 0.3.0 cannot reach the controller: it reverts itself, with dnf, to
    # the 0.2.0 package kept when 0.2.0 took over (no repository has it).
    rpm3 = host.release("0.3.0")
    order_id = host.order(host.runner("0.2.0"), rpm3)
    with pytest.raises(HandOver):
        host.runner("0.2.0").run(order_id)
    assert host.installed() == "0.3.0-1"
    host.unreachable = "cannot reach the controller at ctl:8443: connection refused"
    new = host.runner("0.3.0")
    assert new.resume() == [(order_id, State.REVERTED)]
    assert host.installed() == "0.2.0-1"
    assert new.handover_due() == "fleetpatch-agent 0.2.0 is installed; this agent (0.3.0) exits"
    assert host.rpm_host.sandbox.run(["cat", "/opt/fleetpatch-test/VERSION"]).stdout == "0.2.0\n"


def test_the_watchdog_restores_the_kept_rpm_when_the_new_agent_never_starts(host, tmp_path):
    first = agent_rpm(tmp_path / "by-hand", "0.1.0")
    (host.cache / KEPT_DIR).mkdir(mode=0o700)
    shutil.copyfile(first, host.cache / KEPT_DIR / first.name)
    rpm2 = host.release("0.2.0")
    order_id = host.order(host.runner("0.1.0"), rpm2)
    with pytest.raises(HandOver):
        host.runner("0.1.0").run(order_id)
    assert host.installed() == "0.2.0-1"

    # The timer fires: its command, run as systemd would, outside the agent.
    restore = host.watchdog.armed[unit_name(order_id)][0]
    argv = SystemdWatchdog(rpm=shutil.which("rpm") or "rpm").restore_argv(restore)
    assert argv[1:4] == ["-U", "--oldpackage", "--replacepkgs"]
    host.rpm_host.sandbox.run(argv)
    assert host.installed() == "0.1.0-1"
    host.rpm_host.sandbox.run(argv)  # a retry after it worked changes nothing, fails nothing
    assert host.installed() == "0.1.0-1"

    assert host.runner("0.1.0").resume() == [(order_id, State.REVERTED)]
    assert "fleetpatch-agent 0.2.0 did not take over; 0.1.0 is installed" in host.detail(order_id)
    assert not (host.cache / KEPT_DIR / rpm2.name).exists()


def test_the_first_update_of_an_agent_from_a_file_rolls_back_to_a_rebuilt_copy(host):
    """Nothing kept, no repository, no cache: the copy to roll back to is
    rebuilt from the installed files (agent.backends.rpmrepack), and the
    watchdog's restore installs it with rpm."""
    rpm2 = host.release("0.2.0")
    order_id = host.order(host.runner("0.1.0"), rpm2)
    with pytest.raises(HandOver):
        host.runner("0.1.0").run(order_id)
    assert host.installed() == "0.2.0-1"
    restore = host.watchdog.armed[unit_name(order_id)][0]
    assert restore.name == "fleetpatch-agent-0.1.0-1.noarch.rpm"
    argv = SystemdWatchdog(rpm=shutil.which("rpm") or "rpm").restore_argv(restore)
    host.rpm_host.sandbox.run(argv)  # the timer fires: the new agent never started
    assert host.installed() == "0.1.0-1"
    assert host.rpm_host.sandbox.run(["cat", "/opt/fleetpatch-test/VERSION"]).stdout == "0.1.0\n"
    verified = host.rpm_host.sandbox.run(["rpm", "-V", AGENT], check=False)
    assert verified.returncode == 0, verified.stdout
    assert host.runner("0.1.0").resume() == [(order_id, State.REVERTED)]


def test_without_any_copy_an_agent_from_a_file_is_not_touched(host):
    # Its installed file is no longer what rpm installed: no rebuild either.
    host.rpm_host.sandbox.run(["sh", "-c", "rm /opt/fleetpatch-test/VERSION && "
                               "mkdir /opt/fleetpatch-test/VERSION"])  # fmt: skip
    rpm2 = host.release("0.2.0")
    order_id = host.order(host.runner("0.1.0"), rpm2)
    assert host.runner("0.1.0").run(order_id) == State.FAILED
    assert "no revertable copy" in host.detail(order_id)
    assert "no repository offers it" in host.detail(order_id)
    assert "cannot be rebuilt from its installed files" in host.detail(order_id)
    assert host.installed() == "0.1.0-1"
    assert host.watchdog.armed == {}
