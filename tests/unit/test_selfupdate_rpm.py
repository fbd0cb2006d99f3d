"""Agent self-update on dnf hosts (agent.orders.selfupdate): real signed
releases holding real .rpm files (rpmbuild makes them, rpm reads them and
compares versions), a package manager in memory whose copy of the running
version is checked by the dnf backend's own code, and a stand-in watchdog.
The install with real rpm and dnf is tests/integration/test_selfupdate_rpm.py.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.backends import subp
from agent.backends.base import Change, Plan, PlanError, Saved, Snapshot
from agent.backends.dnf import Dnf, plan_digest, rpm_fields
from agent.backends.subp import Result
from agent.errors import CommandFailed
from agent.orders.handover import HandOver
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.selfupdate import KEPT_DIR, SystemdWatchdog, unit_name
from agent.orders.states import State
from tests.support.fakes import FakeBackend
from tests.support.releases import (
    agent_deb,
    agent_rpm,
    agent_update_order,
    release_key,
    signed_release,
)
from tests.unit.test_selfupdate import AGENT, HOST, DebBackend, Env, FakeWatchdog, Recorder

pytestmark = pytest.mark.skipif(
    shutil.which("rpmbuild") is None or shutil.which("rpm") is None,
    reason="rpm and rpmbuild are not installed (Debian package rpm)",
)


class RpmBackend(FakeBackend):
    """The in-memory dnf host: installs real .rpm files by their header,
    and snapshots as the dnf backend does for a package no repository
    has, with its own check of a copy found in the order's cache (name,
    arch, version-release, digests)."""

    name = "dnf"

    def install_files(self, paths):
        changes = []
        for path in paths:
            fields = rpm_fields(path)
            name, new = fields["NAME"], f"{fields['VERSION']}-{fields['RELEASE']}"
            changes.append(Change(name, fields["ARCH"], self.installed.get(name, ""), new))
            self.installed[name] = new
        self.calls.append("install_files")
        return changes

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        self.calls.append("snapshot")
        saved = []
        for change in plan.changes:
            found = Dnf()._checked_in(cache, change)
            if found is None:
                raise PlanError(f"cannot keep a copy of {change.name} {change.old} for a revert")
            saved.append(Saved(change.name, change.arch, change.old, str(found)))
        return Snapshot(tuple(saved), ())


def release(env: Env, rpm_version: str, name: str = AGENT, key: Path | None = None) -> Path:
    """A signed release holding one .rpm; served by the controller."""
    out = env.tmp / f"release-{name}-{rpm_version}"
    rpm = agent_rpm(out, rpm_version, name)
    signed_release([rpm], key or env.tmp / "keys" / "release.key")
    env.served[hashlib.sha256(rpm.read_bytes()).digest()] = rpm
    return rpm


def kept_copy(env: Env, rpm_version: str) -> Path:
    """The package of the running version, as a previous self-update kept it."""
    return agent_rpm(env.tmp / "cache" / KEPT_DIR, rpm_version)


@pytest.fixture
def env(tmp_path):
    key = release_key(tmp_path / "keys")
    journal = Journal.open(tmp_path / "journal.db")
    policy = Policy(release_key=key.with_suffix(".pub"))
    yield Env(tmp_path, journal, RpmBackend({AGENT: "0.1.0-1"}, {}), FakeWatchdog(), policy,  # type: ignore[arg-type]
              Ed25519PrivateKey.generate())  # fmt: skip
    journal.close()


def _detail(env: Env, order_id: str) -> str:
    record = env.journal.order(order_id)
    assert record is not None
    return record.detail


def _update(env: Env, old: str, new: str, rpm: Path, sequence: int) -> str:
    """One whole update across the two processes; returns the order id."""
    order_id = env.receive(env.runner(old), agent_update_order(HOST, sequence, rpm))
    with pytest.raises(HandOver):
        env.runner(old).run(order_id)
    assert env.runner(new).resume() == [(order_id, State.SUCCEEDED)]
    return order_id


def test_an_rpm_host_installs_the_signed_rpm_hands_over_and_keeps_it_for_the_next_rollback(env):
    kept_copy(env, "0.1.0")
    rpm = release(env, "0.2.0")
    old = env.runner("0.1.0")
    order_id = env.receive(old, agent_update_order(HOST, 1, rpm))
    with pytest.raises(HandOver, match=r"fleetpatch-agent 0\.2\.0 is installed"):
        old.run(order_id)
    assert env.backend.installed[AGENT] == "0.2.0-1"
    ((name, (restore, _, _)),) = env.watchdog.armed.items()
    assert name == unit_name(order_id)
    # The watchdog restores a checked .rpm of exactly what ran.
    assert rpm_fields(restore)["NAME"] == AGENT
    assert (rpm_fields(restore)["VERSION"], rpm_fields(restore)["RELEASE"]) == ("0.1.0", "1")
    assert env.backend.calls.index("snapshot") < env.backend.calls.index("install_files")

    new = env.runner("0.2.0")
    assert new.resume() == [(order_id, State.SUCCEEDED)]
    assert new.handover_due() is None
    kept = sorted(p.name for p in (env.tmp / "cache" / KEPT_DIR).iterdir())
    assert kept == [rpm.name], "the installed package replaces the older kept one"
    assert (env.tmp / "cache" / KEPT_DIR / rpm.name).read_bytes() == rpm.read_bytes()


def test_the_next_update_rolls_back_to_the_package_the_last_one_installed(env):
    kept_copy(env, "0.1.0")
    _update(env, "0.1.0", "0.2.0", release(env, "0.2.0"), 1)
    rpm3 = release(env, "0.3.0")
    order_id = env.receive(env.runner("0.2.0"), agent_update_order(HOST, 2, rpm3))
    with pytest.raises(HandOver):
        env.runner("0.2.0").run(order_id)
    restore = env.watchdog.armed[unit_name(order_id)][0]
    assert rpm_fields(restore)["VERSION"] == "0.2.0"

    env.backend.installed[AGENT] = "0.2.0-1"  # what the watchdog's rpm -U --oldpackage did
    assert env.runner("0.2.0").resume() == [(order_id, State.REVERTED)]
    assert "fleetpatch-agent 0.3.0 did not take over; 0.2.0 is installed" in _detail(env, order_id)


def test_a_new_rpm_agent_that_fails_its_checks_is_reverted_to_the_kept_rpm(env):
    kept_copy(env, "0.1.0")
    rpm = release(env, "0.2.0")
    order_id = env.receive(env.runner("0.1.0"), agent_update_order(HOST, 1, rpm))
    with pytest.raises(HandOver):
        env.runner("0.1.0").run(order_id)
    env.unreachable = "cannot reach the controller"
    new = env.runner("0.2.0")
    assert new.resume() == [(order_id, State.REVERTED)]
    assert env.backend.installed[AGENT] == "0.1.0-1"
    assert new.handover_due() == "fleetpatch-agent 0.1.0 is installed; this agent (0.2.0) exits"
    assert not (env.tmp / "cache" / KEPT_DIR / rpm.name).exists(), "only what took over is kept"


def test_without_a_copy_of_the_running_rpm_nothing_is_installed(env):
    """No repository, no dnf cache, nothing kept: no rollback is possible,
    so the update stops before anything changed."""
    rpm = release(env, "0.2.0")
    order_id = env.receive(env.runner("0.1.0"), agent_update_order(HOST, 1, rpm))
    assert env.runner("0.1.0").run(order_id) == State.FAILED
    assert "no revertable copy" in _detail(env, order_id)
    assert env.backend.installed[AGENT] == "0.1.0-1"
    assert "install_files" not in env.backend.calls
    assert env.watchdog.armed == {}


def test_a_kept_copy_of_another_version_is_not_taken_for_the_running_one(env):
    kept_copy(env, "0.0.9")
    rpm = release(env, "0.2.0")
    order_id = env.receive(env.runner("0.1.0"), agent_update_order(HOST, 1, rpm))
    assert env.runner("0.1.0").run(order_id) == State.FAILED
    assert "no revertable copy" in _detail(env, order_id)


def _fails_untouched(env: Env, order, match: str, version: str = "0.1.0") -> None:
    runner = env.runner(version)
    order_id = env.receive(runner, order)
    assert runner.run(order_id) == State.FAILED
    assert match in _detail(env, order_id)
    assert "install_files" not in env.backend.calls
    assert env.watchdog.armed == {}


def test_a_deb_is_never_installed_on_an_rpm_host(env):
    kept_copy(env, "0.1.0")
    deb = agent_deb(env.tmp / "deb-release", "0.2.0")
    signed_release([deb], env.tmp / "keys" / "release.key")
    env.served[hashlib.sha256(deb.read_bytes()).digest()] = deb
    _fails_untouched(env, agent_update_order(HOST, 1, deb),
                     "is a .deb package and this host installs .rpm packages (dnf)")  # fmt: skip
    assert env.fetched == 0


def test_an_rpm_is_never_installed_on_a_deb_host(tmp_path):
    key = release_key(tmp_path / "keys")
    journal = Journal.open(tmp_path / "journal.db")
    policy = Policy(release_key=key.with_suffix(".pub"))
    deb_env = Env(tmp_path, journal, DebBackend({AGENT: "0.1.0"}, {}), FakeWatchdog(), policy,
                  Ed25519PrivateKey.generate())  # fmt: skip
    try:
        rpm = release(deb_env, "0.2.0")
        runner = deb_env.runner("0.1.0")
        order_id = deb_env.receive(runner, agent_update_order(HOST, 1, rpm))
        assert runner.run(order_id) == State.FAILED
        assert "is an .rpm package and this host installs .deb packages (apt)" in _detail(
            deb_env, order_id
        )
        assert deb_env.fetched == 0
    finally:
        journal.close()


def test_a_signed_rpm_that_is_not_the_agent_is_refused(env):
    rpm = release(env, "0.2.0", name="fleetpatch-controller")
    _fails_untouched(env, agent_update_order(HOST, 1, rpm), "is signed but is not fleetpatch-agent")


def test_an_rpm_of_another_version_than_the_order_says_is_refused(env):
    rpm = release(env, "0.2.0")
    _fails_untouched(env, agent_update_order(HOST, 1, rpm, version="0.3.0"), "it says {'Version'")


def test_signed_bytes_that_are_no_rpm_are_refused(env):
    fake = env.tmp / "junk" / "fleetpatch-agent-0.2.0-1.noarch.rpm"
    fake.parent.mkdir()
    fake.write_bytes(b"not an rpm at all\n" * 100)
    signed_release([fake], env.tmp / "keys" / "release.key")
    env.served[hashlib.sha256(fake.read_bytes()).digest()] = fake
    _fails_untouched(env, agent_update_order(HOST, 1, fake), "it is no readable package")


def test_an_rpm_signed_by_another_key_is_refused(env):
    other = release_key(env.tmp / "other-keys")
    rpm = release(env, "0.2.0", key=other)
    _fails_untouched(env, agent_update_order(HOST, 1, rpm), "is not signed by release key")
    assert env.fetched == 0


@pytest.mark.parametrize(
    ("installed", "target", "refused"),
    [
        ("0.3.0-1", "0.2.0", True),
        ("0.2.0^post1-1", "0.2.0", True),  # 0.2.0.post1 is newer than 0.2.0
        ("0.2.0-1", "0.2.0~rc1", True),  # 0.2.0rc1 is older than 0.2.0
        ("0.2.0~~dev3-1", "0.2.0~rc1", False),  # 0.2.0.dev3 < 0.2.0rc1
        ("0.2.0^post1-1", "0.2.1", False),
    ],
)
def test_a_downgrade_by_rpms_own_ordering_is_refused_unless_policy_allows_it(
    env, installed, target, refused
):
    env.backend.installed[AGENT] = installed
    kept_copy(env, installed.rsplit("-", 1)[0])
    rpm = release(env, target)
    runner = env.runner("9.9.9")
    order_id = env.receive(runner, agent_update_order(HOST, 1, rpm))
    if refused:
        assert runner.run(order_id) == State.FAILED
        assert "policy.allow_agent_downgrade is false" in _detail(env, order_id)
        allowed = Policy(release_key=env.policy.release_key, allow_agent_downgrade=True)
        runner = env.runner("9.9.9", policy=allowed)
        order_id = env.receive(runner, agent_update_order(HOST, 2, rpm))
    with pytest.raises(HandOver):
        runner.run(order_id)
    assert env.backend.installed[AGENT] == f"{target}-1"


def test_the_watchdog_restores_an_rpm_with_rpm_u_oldpackage(tmp_path):
    run = Recorder([])
    kept = Path("/var/kept/fleetpatch-agent-0.1.0-1.x86_64.rpm")
    SystemdWatchdog(run).arm("fp-rb-1", kept, tmp_path / "taken-over", timedelta(minutes=10))
    armed = run.argvs[-1]
    assert armed[armed.index("--") + 1 :] == [
        "/usr/bin/rpm", "-U", "--oldpackage", "--replacepkgs", str(kept),
    ]  # fmt: skip


class RpmHostRunner:
    """rpm reading files and comparing versions for real; the rpmdb (rpm -q)
    and dnf itself in memory, recording what dnf is asked."""

    def __init__(self, installed: str) -> None:
        self.installed = installed
        self.dnf: list[list[str]] = []

    def __call__(self, argv, **kw) -> Result:
        argv = [str(a) for a in argv]
        if argv[0] == "dnf":
            self.dnf.append(argv)
            path = argv[-1]
            fields = rpm_fields(Path(path))
            self.installed = f"{fields['VERSION']}-{fields['RELEASE']}"
            return Result(argv, 0, "Complete!\n", "")
        if argv[:2] == ["rpm", "-q"]:
            return Result(argv, 0, f"{AGENT}\tnoarch\t{self.installed}\n", "")
        return subp.run(argv, **kw)


@pytest.mark.parametrize(
    ("installed", "new", "verb"),
    [("0.1.0-1", "0.2.0", "install"), ("0.3.0-1", "0.2.0", "downgrade"),
     ("0.2.0^post1-1", "0.2.0", "downgrade"), ("0.2.0~rc1-1", "0.2.0", "install")],
)  # fmt: skip
def test_dnf_installs_an_agent_file_in_one_transaction_a_revert_recognises(
    tmp_path, installed, new, verb
):
    rpm = agent_rpm(tmp_path, new)
    run = RpmHostRunner(installed)
    changes = Dnf(run=run).install_files([rpm])
    (argv,) = run.dnf
    assert argv[-2:] == [verb, str(rpm)]
    # Named as apply names a plan: the snapshot of this change finds it.
    saved = [(AGENT, "noarch", installed)]
    assert f"--comment=fleetpatch apply {plan_digest(saved, [])}" in argv
    assert [(c.name, c.old, c.new) for c in changes] == [(AGENT, installed, f"{new}-1")]


def test_dnf_refuses_to_install_a_file_rpm_cannot_read(tmp_path):
    junk = tmp_path / "fleetpatch-agent-0.2.0-1.noarch.rpm"
    junk.write_bytes(b"junk")
    run = RpmHostRunner("0.1.0-1")
    with pytest.raises(CommandFailed, match="cannot read"):
        Dnf(run=run).install_files([junk])
    assert run.dnf == []
