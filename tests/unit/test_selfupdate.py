"""Agent self-update in the runner (agent.selfupdate), with real signed
releases and real .deb files (dpkg-deb reads them), a package manager in
memory, and a stand-in watchdog: the real one is a systemd timer, tested
under a booted systemd in tests/integration/test_selfupdate_systemd.py.

An update spans two processes: the old agent installs the new version and
hands over (HandOver: it exits); the new one, started by systemd, resumes
the order. Here each process is a Runner with its own running_version over
the same journal and package manager.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.backends.apt import deb_fields
from agent.backends.base import Change, Plan, Saved, Snapshot
from agent.backends.subp import Result
from agent.errors import AgentError, ControllerUnavailable
from agent.orders.handover import HandOver
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.orders.selfupdate import DPKG_WAIT_SECONDS, SystemdWatchdog, unit_name
from agent.orders.states import State, next_state
from agent.orders.workorder import OrderRefused, RefusalReason
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.orders import sign, trusted
from tests.support.releases import agent_deb, agent_update_order, release_key, signed_release
from tests.unit.test_runner import Clock

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (dpkg)"
)

HOST = "h-00000000000000aa"
AGENT = "fleetpatch-agent"


class DebBackend(FakeBackend):
    """The in-memory package manager, installing real .deb files by their
    control fields, and keeping a real file as the snapshot copy."""

    name = "apt"

    def install_files(self, paths):
        changes = []
        for path in paths:
            fields = deb_fields(path)
            name = fields["Package"]
            changes.append(Change(name, "all", self.installed.get(name, ""), fields["Version"]))
            self.installed[fields["Package"]] = fields["Version"]
        self.calls.append("install_files")
        return changes

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        self.calls.append("snapshot")
        cache.mkdir(parents=True, exist_ok=True)
        saved = []
        for c in plan.changes:
            kept = agent_deb(cache, c.old)
            saved.append(Saved(c.name, c.arch, c.old, str(kept)))
        return Snapshot(tuple(saved), ())


@dataclass
class FakeWatchdog:
    """Records what the systemd watchdog would be asked; `fires` makes
    disarm report that the restore had already started."""

    missing: str | None = None
    fires: bool = False
    armed: dict[str, tuple[Path, Path, timedelta]] = field(default_factory=dict)
    disarmed: list[str] = field(default_factory=list)

    def unavailable(self) -> str | None:
        return self.missing

    def arm(self, name: str, restore: Path, marker: Path, after: timedelta) -> None:
        self.armed[name] = (restore, marker, after)

    def disarm(self, name: str, marker: Path) -> bool:
        self.disarmed.append(name)
        return not self.fires


@dataclass
class Env:
    tmp: Path
    journal: Journal
    backend: DebBackend
    watchdog: FakeWatchdog
    policy: Policy
    order_key: Ed25519PrivateKey
    served: dict[bytes, Path] = field(default_factory=dict)
    unreachable: str | None = None
    clock: Clock = field(default_factory=Clock)
    fetched: int = 0

    def fetch(self, sha256: bytes, dest: Path, size: int) -> None:
        self.fetched += 1
        if sha256 not in self.served:
            raise AgentError("the controller answered NOT_FOUND: no such artifact")
        shutil.copyfile(self.served[sha256], dest)

    def reach(self) -> None:
        if self.unreachable:
            raise ControllerUnavailable(self.unreachable)

    def runner(self, version: str, prober: FakeProber | None = None, **kw) -> Runner:
        return Runner(
            self.journal, self.backend, prober or FakeProber(), kw.pop("policy", self.policy),
            [], self.tmp / "cache", clock=self.clock, sleep=self.clock.sleep,
            busy_timeout=timedelta(seconds=60), retry_interval=5, fetch=self.fetch,
            reach=self.reach, watchdog=self.watchdog, running_version=version, **kw,
        )  # fmt: skip

    def release(self, debian_version: str, name: str = AGENT, key: Path | None = None) -> Path:
        """A signed release holding one package; served by the controller."""
        out = self.tmp / f"release-{name}-{debian_version}"
        deb = agent_deb(out, debian_version, name)
        signed_release([deb], key or self.tmp / "keys" / "release.key")
        self.served[hashlib.sha256(deb.read_bytes()).digest()] = deb
        return deb

    def receive(self, runner: Runner, order) -> str:
        envelope = sign(order, self.order_key)
        return runner.receive(envelope, trusted(self.order_key), HOST).order_id


@pytest.fixture
def env(tmp_path):
    key = release_key(tmp_path / "keys")
    journal = Journal.open(tmp_path / "journal.db")
    policy = Policy(release_key=key.with_suffix(".pub"))
    yield Env(tmp_path, journal, DebBackend({AGENT: "0.1.0"}, {}), FakeWatchdog(), policy,
              Ed25519PrivateKey.generate())  # fmt: skip
    journal.close()


def _detail(env: Env, order_id: str) -> str:
    record = env.journal.order(order_id)
    assert record is not None
    return record.detail


# -- the update, across the two processes ------------------------------------------------


def test_the_old_agent_installs_and_hands_over_and_the_new_one_finishes(env):
    deb = env.release("0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(
        old, agent_update_order(HOST, 1, deb, rollback_after=timedelta(minutes=7))
    )

    with pytest.raises(HandOver, match=r"fleetpatch-agent 0\.2\.0 is installed"):
        old.run(order_id)
    assert env.journal.order(order_id).state == State.VERIFY
    assert env.backend.installed[AGENT] == "0.2.0"
    # Armed before the install, to restore the kept copy of what ran.
    ((name, (restore, marker, after)),) = env.watchdog.armed.items()
    assert name == unit_name(order_id)
    assert env.backend.calls.index("snapshot") < env.backend.calls.index("install_files")
    assert deb_fields(restore) == {"Package": AGENT, "Version": "0.1.0", "Architecture": "all"}
    assert after == timedelta(minutes=7)
    assert marker == env.tmp / "cache" / order_id / "taken-over"
    assert not marker.exists()
    assert env.watchdog.disarmed == []

    new = env.runner("0.2.0")
    assert new.resume() == [(order_id, State.SUCCEEDED)]
    assert env.watchdog.disarmed == [name]
    assert "running fleetpatch-agent 0.2.0: reached the controller, healthy" in _detail(
        env, order_id
    )
    assert new.handover_due() is None
    steps = [s.state for s in env.journal.steps(order_id)]
    assert steps == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY", "VERIFY", "SUCCEEDED",
    ]  # fmt: skip


def test_a_new_agent_that_never_took_over_is_restored_and_the_order_reverted(env):
    """The new version cannot start: the watchdog reinstalls the kept copy,
    systemd starts the old agent, which finds the order still in VERIFY."""
    deb = env.release("0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(old, agent_update_order(HOST, 1, deb))
    with pytest.raises(HandOver):
        old.run(order_id)

    env.backend.installed[AGENT] = "0.1.0"  # what the watchdog's dpkg -i did
    restored = env.runner("0.1.0")
    assert restored.resume() == [(order_id, State.REVERTED)]
    detail = _detail(env, order_id)
    assert "fleetpatch-agent 0.2.0 did not take over; 0.1.0 is installed" in detail
    assert env.watchdog.disarmed == [unit_name(order_id)]  # the spent watchdog, cleared
    assert restored.handover_due() is None


def test_a_new_agent_that_cannot_reach_the_controller_reverts_itself(env):
    deb = env.release("0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(
        old, agent_update_order(HOST, 1, deb, verify_timeout=timedelta(seconds=30))
    )
    with pytest.raises(HandOver):
        old.run(order_id)

    env.unreachable = "cannot reach the controller at ctl:8443: connection refused"
    new = env.runner("0.2.0")
    assert new.resume() == [(order_id, State.REVERTED)]
    assert env.backend.installed[AGENT] == "0.1.0"
    detail = next(s.detail for s in env.journal.steps(order_id) if s.state == "REVERT")
    assert "failed its checks within 30s: controller: cannot reach the controller" in detail
    assert env.watchdog.disarmed == [unit_name(order_id)]
    # The new process now runs code older than what is installed: it must go.
    assert new.handover_due() == "fleetpatch-agent 0.1.0 is installed; this agent (0.2.0) exits"


def test_an_unhealthy_new_agent_reverts(env):
    deb = env.release("0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(old, agent_update_order(HOST, 1, deb))
    with pytest.raises(HandOver):
        old.run(order_id)
    new = env.runner("0.2.0", prober=FakeProber([False]))
    assert new.resume() == [(order_id, State.REVERTED)]
    assert env.backend.installed[AGENT] == "0.1.0"


def test_a_watchdog_that_fired_at_the_last_moment_leaves_the_order_to_the_restored_agent(env):
    deb = env.release("0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(old, agent_update_order(HOST, 1, deb))
    with pytest.raises(HandOver):
        old.run(order_id)
    env.watchdog.fires = True
    with pytest.raises(HandOver, match="watchdog fired"):
        env.runner("0.2.0").resume()
    assert env.journal.order(order_id).state == State.VERIFY  # not SUCCEEDED

    env.backend.installed[AGENT] = "0.1.0"
    assert env.runner("0.1.0").resume() == [(order_id, State.REVERTED)]


def test_a_crash_during_the_install_resumes_into_verify(env):
    deb = env.release("0.2.0")
    runner = env.runner("0.1.0")
    order_id = env.receive(runner, agent_update_order(HOST, 1, deb))
    for _ in ("RECEIVED", "PRECHECK", "SNAPSHOT"):
        record = env.journal.order(order_id)
        outcome = runner._step(State(record.state), runner._order(record), record)
        runner._enter(
            runner._order(record), next_state(State(record.state), outcome.event), outcome
        )
    assert env.journal.order(order_id).state == State.APPLY
    env.backend.installed[AGENT] = "0.2.0"  # dpkg finished; the agent was killed before journaling
    with pytest.raises(HandOver):
        env.runner("0.1.0").resume()
    assert env.runner("0.2.0").resume() == [(order_id, State.SUCCEEDED)]


def test_an_agent_already_at_the_version_does_nothing(env):
    deb = env.release("0.1.0")
    runner = env.runner("0.1.0")
    order_id = env.receive(runner, agent_update_order(HOST, 1, deb))
    assert runner.run(order_id) == State.SUCCEEDED
    assert "already installed" in _detail(env, order_id)
    assert env.fetched == 0
    assert env.watchdog.armed == {}


# -- refused before anything is fetched or installed ---------------------------------


def _fails_untouched(env: Env, order, match: str, runner: Runner | None = None) -> None:
    runner = runner or env.runner("0.1.0")
    order_id = env.receive(runner, order)
    assert runner.run(order_id) == State.FAILED
    assert match in _detail(env, order_id)
    assert env.backend.installed[AGENT] == "0.1.0"
    assert "install_files" not in env.backend.calls
    assert env.watchdog.armed == {}


def test_a_release_signed_by_another_key_is_refused(env):
    other = release_key(env.tmp / "other-keys")
    deb = env.release("0.2.0", key=other)
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "is not signed by release key")
    assert env.fetched == 0


def test_an_order_whose_digest_is_not_the_signed_one_is_refused(env):
    deb = env.release("0.2.0")
    order = agent_update_order(HOST, 1, deb)
    order.agent_update.sha256 = bytes(32)
    _fails_untouched(env, order, "digest for fleetpatch-agent_0.2.0_all.deb is not the signed")


def test_a_manifest_edited_to_list_other_bytes_is_refused(env):
    deb = env.release("0.2.0")
    order = agent_update_order(HOST, 1, deb)
    order.agent_update.release_manifest = order.agent_update.release_manifest.replace(b"a", b"b")
    _fails_untouched(env, order, "is not signed by release key")


def test_a_signed_package_that_is_not_the_agent_is_refused(env):
    """The controller's package is signed by the same release key: it must
    not be installable as an agent update."""
    deb = env.release("0.2.0", name="fleetpatch-controller")
    order = agent_update_order(HOST, 1, deb)
    _fails_untouched(env, order, "is signed but is not fleetpatch-agent 0.2.0")
    assert not (env.tmp / "cache" / order.order_id / "release" / deb.name).exists()


def test_signed_bytes_that_are_no_package_are_refused(env):
    out = env.tmp / "release-garbage"
    out.mkdir()
    deb = out / "fleetpatch-agent_0.2.0_all.deb"
    deb.write_bytes(b"not an ar archive\n")
    signed_release([deb], env.tmp / "keys" / "release.key")
    env.served[hashlib.sha256(deb.read_bytes()).digest()] = deb
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "is signed but is not fleetpatch-agent")


def test_a_version_other_than_the_packages_is_refused(env):
    deb = env.release("0.2.0")
    _fails_untouched(env, agent_update_order(HOST, 1, deb, version="0.3.0"), "it says {'Version'")


def test_bytes_other_than_the_signed_ones_are_refused_by_the_fetch(env):
    deb = env.release("0.2.0")
    env.served.clear()
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "cannot fetch")


def test_a_downgrade_is_refused_unless_policy_allows_it(env):
    env.backend.installed[AGENT] = "0.3.0"
    deb = env.release("0.2.0")
    order = agent_update_order(HOST, 1, deb)
    runner = env.runner("0.3.0")
    order_id = env.receive(runner, order)
    assert runner.run(order_id) == State.FAILED
    assert "policy.allow_agent_downgrade is false" in _detail(env, order_id)

    allowed = Policy(release_key=env.policy.release_key, allow_agent_downgrade=True)
    runner = env.runner("0.3.0", policy=allowed)
    order_id = env.receive(runner, agent_update_order(HOST, 2, deb))
    with pytest.raises(HandOver):
        runner.run(order_id)
    assert env.backend.installed[AGENT] == "0.2.0"


def test_no_pinned_key_no_update(env):
    deb = env.release("0.2.0")
    unpinned = Policy(release_key=env.tmp / "nowhere.pub")
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "no release key is pinned on this host",
                     runner=env.runner("0.1.0", policy=unpinned))  # fmt: skip


def test_an_agent_not_installed_from_the_package_is_not_updated(env):
    del env.backend.installed[AGENT]
    deb = env.release("0.2.0")
    runner = env.runner("0.1.0")
    order_id = env.receive(runner, agent_update_order(HOST, 1, deb))
    assert runner.run(order_id) == State.FAILED
    assert "not installed from the fleetpatch-agent package" in _detail(env, order_id)


def test_without_a_watchdog_there_is_no_update(env):
    env.watchdog.missing = "systemd is not running this host"
    deb = env.release("0.2.0")
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "systemd is not running this host")


def test_an_unhealthy_host_is_not_updated(env):
    deb = env.release("0.2.0")
    _fails_untouched(env, agent_update_order(HOST, 1, deb), "host unhealthy before the update",
                     runner=env.runner("0.1.0", prober=FakeProber([False])))  # fmt: skip


def test_policy_can_forbid_agent_updates_and_protect_the_package(env):
    deb = env.release("0.2.0")
    for sequence, policy, why in (
        (1, Policy(allow_agent_update=False), "policy.allow_agent_update is false"),
        (2, Policy(never_touch=("fleetpatch-*",)), "fleetpatch-agent is protected"),
    ):
        runner = env.runner("0.1.0", policy=policy)
        with pytest.raises(OrderRefused, match=why) as refused:
            env.receive(runner, agent_update_order(HOST, sequence, deb))
        assert refused.value.reason is RefusalReason.POLICY


def test_an_agent_update_without_its_signature_is_malformed(env):
    deb = env.release("0.2.0")
    order = agent_update_order(HOST, 1, deb)
    order.agent_update.release_signature = b""
    with pytest.raises(OrderRefused, match="Ed25519 release signature") as refused:
        env.receive(env.runner("0.1.0"), order)
    assert refused.value.reason is RefusalReason.MALFORMED


# -- the systemd watchdog's commands -------------------------------------------------


class Recorder:
    def __init__(self, shows: list[str]) -> None:
        self.argvs: list[list[str]] = []
        self.shows = shows

    def __call__(self, argv, **kw) -> Result:
        self.argvs.append(list(argv))
        out = self.shows.pop(0) if argv[:2] == ["systemctl", "show"] else ""
        return Result(list(argv), 0, out, "")


def test_the_watchdog_is_a_timer_that_reinstalls_the_kept_copy_unless_the_marker_exists(tmp_path):
    run = Recorder([])
    SystemdWatchdog(run).arm("fp-rb-1", Path("/var/kept/a_0.1.0_all.deb"),
                             tmp_path / "taken-over", timedelta(minutes=10))  # fmt: skip
    *clears, armed = run.argvs
    assert [a[:2] for a in clears] == [["systemctl", "stop"], ["systemctl", "reset-failed"]]
    assert armed[0] == "systemd-run"
    assert "--unit=fp-rb-1" in armed
    assert "--on-active=600s" in armed
    assert f"--property=ConditionPathExists=!{tmp_path / 'taken-over'}" in armed
    assert "--property=RemainAfterExit=yes" in armed
    assert "--property=Restart=on-failure" in armed  # a held dpkg lock is waited out
    assert armed[armed.index("--") + 1 :] == [
        "/usr/bin/dpkg", "--force-confdef", "--force-confold", "--install",
        "/var/kept/a_0.1.0_all.deb",
    ]  # fmt: skip


RUNNING = "ActiveState=activating\nExecMainStartTimestampMonotonic=123456\n"


@pytest.mark.parametrize(
    ("shows", "never_ran", "cleared"),
    [
        (["ActiveState=inactive\nExecMainStartTimestampMonotonic=0\n"], True, True),
        (["ActiveState=active\nExecMainStartTimestampMonotonic=123456\n"], False, True),
        # dpkg is running (its triggers, say): waited for, never stopped
        # halfway, then cleared...
        ([RUNNING, RUNNING, "ActiveState=active\nExecMainStartTimestampMonotonic=123456\n"],
         False, True),
        # ... unless it runs on past the wait: then left alone.
        ([RUNNING] * (DPKG_WAIT_SECONDS + 1), False, False),
    ],
)  # fmt: skip
def test_disarm_tells_whether_the_restore_ran(tmp_path, shows, never_ran, cleared):
    run = Recorder(list(shows))
    marker = tmp_path / "o" / "taken-over"
    slept: list[float] = []
    assert SystemdWatchdog(run, sleep=slept.append).disarm("fp-rb-1", marker) is never_ran
    assert len(slept) == min(len(shows) - 1, DPKG_WAIT_SECONDS)
    assert marker.is_file(), "the marker comes first: a timer firing now finds it"
    assert run.argvs[0] == ["systemctl", "stop", "fp-rb-1.timer"]
    stopped_service = any("fp-rb-1.service" in a and a[1] == "stop" for a in run.argvs)
    assert stopped_service is cleared
