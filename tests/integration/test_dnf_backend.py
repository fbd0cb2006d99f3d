"""The dnf backend against real dnf and rpm (Debian's packages), in a
throwaway copy of this host made into an RPM host (tests.support.dnfrepo):
RPMs built in the test with rpmbuild, a local repository indexed with
createrepo_c, the rpmdb and the dnf history inside the sandbox. The backend
code runs here and its commands run inside the sandbox."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from agent.backends.base import Busy, PlanError
from agent.backends.dnf import Dnf
from agent.errors import CommandFailed
from agent.orders.workorder import Target
from tests.support.dnfrepo import (
    Advisory,
    LocalRpmRepo,
    RpmSpec,
    build_rpm,
    demo_rpm,
    dnfrepo_available,
    make_rpm_host,
    rpm_version,
    sandbox_runner,
)
from tests.support.sandbox import HostSandbox

pytestmark = pytest.mark.root


class RpmHost:
    def __init__(self, sandbox: HostSandbox, repo: LocalRpmRepo, cache: Path) -> None:
        self.sandbox, self.repo, self.cache = sandbox, repo, cache
        self.dnf = Dnf(run=sandbox_runner(sandbox))

    def dnf_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(["dnf", "-y", *args], timeout=300)

    def version(self, name: str = "fp-demo") -> str | None:
        return rpm_version(self.sandbox, name)

    def install_file(self, spec: RpmSpec, tmp: Path) -> None:
        """Install a version that no repository carries."""
        rpm = build_rpm(spec, tmp / "offline")
        self.sandbox.path(f"/root/{rpm.name}").write_bytes(rpm.read_bytes())
        self.sandbox.run(["rpm", "-U", "--oldpackage", "--nodeps", f"/root/{rpm.name}"])


@pytest.fixture
def rpm_host(make_sandbox, tmp_path) -> RpmHost:
    reason = dnfrepo_available()
    if reason is not None:
        pytest.skip(reason)
    repo = LocalRpmRepo(tmp_path / "rpm-repo")
    sandbox = make_sandbox()
    make_rpm_host(sandbox, repo)
    cache = tmp_path / "cache"
    cache.mkdir()
    sandbox.bind(cache, str(cache), read_only=False)  # same path inside and out
    return RpmHost(sandbox, repo, cache)


def test_plan_snapshot_apply_and_revert_with_dnf_history(rpm_host):
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("1.1"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    backend = rpm_host.dnf
    backend.refresh()

    plan = backend.plan([Target("fp-demo", "1.1")], False, [])
    assert [(c.name, c.arch, c.old, c.new, c.origin) for c in plan.changes] == [
        ("fp-demo", "noarch", "1.0-1", "1.1-1", "fleetpatch")
    ]
    snapshot = backend.snapshot(plan, rpm_host.cache / "o-1")
    assert Path(snapshot.saved[0].path).name == "fp-demo-1.0-1.noarch.rpm"
    assert Path(snapshot.saved[0].path).is_file()

    changes = backend.apply(plan)
    assert [(c.name, c.old, c.new) for c in changes] == [("fp-demo", "1.0-1", "1.1-1")]
    assert rpm_host.version() == "1.1-1"
    info = rpm_host.sandbox.run(["dnf", "history", "info", "last"]).stdout
    assert "Comment        : fleetpatch apply " in info

    reverted = backend.revert(snapshot)
    assert [(c.name, c.old, c.new) for c in reverted] == [("fp-demo", "1.1-1", "1.0-1")]
    assert rpm_host.version() == "1.0-1"
    assert "history undo" in rpm_host.sandbox.run(["dnf", "history", "info", "last"]).stdout
    assert backend.revert(snapshot) == []  # a rerun after a crash changes nothing


def test_a_new_dependency_is_planned_and_removed_again_by_the_revert(rpm_host):
    lib = RpmSpec("fp-lib", "2.0", files={"/usr/lib/fp-lib": "lib\n"})
    demo12 = RpmSpec("fp-demo", "1.2", files=demo_rpm("1.2").files, requires=("fp-lib",))
    rpm_host.repo.add(demo_rpm("1.0"), demo12, lib)
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    assert {(c.name, c.old, c.new) for c in plan.changes} == {
        ("fp-demo", "1.0-1", "1.2-1"), ("fp-lib", "", "2.0-1"),
    }  # fmt: skip
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-2")
    assert snapshot.new == ("fp-lib",)
    rpm_host.dnf.apply(plan)
    assert rpm_host.version("fp-lib") == "2.0-1"
    rpm_host.dnf.revert(snapshot)
    assert (rpm_host.version(), rpm_host.version("fp-lib")) == ("1.0-1", None)


def test_plans_that_cannot_be_made_change_nothing(rpm_host):
    lib = RpmSpec("fp-lib", "2.0", files={"/usr/lib/fp-lib": "lib\n"})
    demo12 = RpmSpec("fp-demo", "1.2", files=demo_rpm("1.2").files, requires=("fp-lib",))
    rpm_host.repo.add(demo_rpm("1.0"), demo12, lib)
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    with pytest.raises(PlanError, match=r"not installed or unknown here: fp-nothere"):
        rpm_host.dnf.plan([Target("fp-nothere")], False, [])
    with pytest.raises(PlanError, match=r"below the required 2\.0"):
        rpm_host.dnf.plan([Target("fp-demo", "2.0")], False, [])
    with pytest.raises(PlanError, match=r"cannot plan|excluded"):
        rpm_host.dnf.plan([Target("fp-demo")], False, ["fp-lib*"])
    with pytest.raises(PlanError, match="is not an RPM package name"):
        rpm_host.dnf.plan([Target("fp-demo; rm -rf /")], False, [])
    assert rpm_host.version() == "1.0-1"


def test_no_repository_with_the_old_version_means_no_patch(rpm_host, tmp_path):
    rpm_host.install_file(demo_rpm("0.9"), tmp_path)  # 0.9 exists nowhere but on the host
    rpm_host.repo.add(demo_rpm("1.1"))
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    with pytest.raises(PlanError, match=r"cannot keep a copy of fp-demo 0\.9-1"):
        rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-3")


def test_revert_refuses_when_history_changed_behind_its_back(rpm_host, tmp_path):
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("1.1"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-4")
    rpm_host.dnf.apply(plan)
    rpm_host.repo.add(demo_rpm("1.2"))
    rpm_host.dnf_cli("--refresh", "upgrade", "fp-demo")  # a person upgrades it again with dnf
    assert rpm_host.version() == "1.2-1"
    with pytest.raises(CommandFailed, match="changed behind the agent's back"):
        rpm_host.dnf.revert(snapshot)
    assert rpm_host.version() == "1.2-1"


def test_revert_refuses_when_rpm_changed_the_package_outside_dnf(rpm_host, tmp_path):
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("1.1"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-5")
    rpm_host.dnf.apply(plan)
    rpm_host.install_file(demo_rpm("1.5"), tmp_path)  # rpm -U: no dnf history at all
    with pytest.raises(CommandFailed, match=r"fp-demo is at 1\.5-1, not 1\.1-1"):
        rpm_host.dnf.revert(snapshot)


def test_another_dnf_holding_the_rpmdb_is_busy(rpm_host):
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("1.1"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    holder = rpm_host.sandbox.spawn(
        ["sh", "-c", "echo $$ > /var/lib/dnf/rpmdb_lock.pid; echo held; exec sleep 60"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(Busy, match="already locked by"):
            rpm_host.dnf.apply(plan)
        assert rpm_host.version() == "1.0-1"
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.mark.parametrize(("package", "kernel"), [("kernel", True), ("glibc", False)])
def test_needs_restarting_reports_core_packages_updated_since_boot(rpm_host, package, kernel):
    rpm_host.repo.add(RpmSpec(package, "9.9", files={f"/usr/share/fp-{package}": "x\n"}))
    # needs-restarting takes the boot time from /proc/1's mtime, which procfs
    # sets at the first lookup: on a real host early in boot, here now.
    assert rpm_host.dnf.reboot_reasons() == []
    time.sleep(1.1)  # rpm's install time has a resolution of one second
    rpm_host.dnf_cli("install", package)  # installed after this "boot"
    reasons = rpm_host.dnf.reboot_reasons()
    assert [(r.source, r.kernel) for r in reasons] == [("needs-restarting", kernel)]
    assert package in reasons[0].detail


def test_a_security_fix_superseded_by_a_bugfix_update_is_still_planned(rpm_host):
    """v1 installed, v2 fixes a vulnerability, v3 (newest) is a plain bugfix:
    the host has a pending security fix, and the plan takes v3, which has it."""
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("2.0"), demo_rpm("3.0"))
    rpm_host.repo.advise(
        Advisory("FP-SA-1", "security", (demo_rpm("2.0"),), severity="Important"),
        Advisory("FP-BA-2", "bugfix", (demo_rpm("3.0"),)),
    )
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([], True, [])
    assert [(c.name, c.old, c.new) for c in plan.changes] == [("fp-demo", "1.0-1", "3.0-1")]
    # Once the fix is installed, no security update is pending (v3 is a bugfix).
    rpm_host.dnf_cli("install", "fp-demo-2.0")
    assert rpm_host.dnf.plan([], True, []).empty


def test_a_security_fix_no_longer_in_the_repository_is_still_planned(rpm_host):
    """Repositories that keep only the newest build: the advisory names v2,
    the repository has only v3 (which contains the fix)."""
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("3.0"))
    rpm_host.repo.advise(Advisory("FP-SA-1", "security", (demo_rpm("2.0"),), severity="Low"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    plan = rpm_host.dnf.plan([], True, [])
    assert [(c.name, c.old, c.new) for c in plan.changes] == [("fp-demo", "1.0-1", "3.0-1")]


def test_only_bugfix_updates_are_no_security_update(rpm_host):
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("3.0"))
    rpm_host.repo.advise(Advisory("FP-BA-2", "bugfix", (demo_rpm("3.0"),)))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    assert rpm_host.dnf.plan([], True, []).empty
