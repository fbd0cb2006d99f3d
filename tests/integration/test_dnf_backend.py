"""The dnf backend against real dnf and rpm (Debian's packages), in a
throwaway copy of this host made into an RPM host (tests.support.dnfrepo):
RPMs built in the test with rpmbuild, a local repository indexed with
createrepo_c, the rpmdb and the dnf history inside the sandbox. The backend
code runs here and its commands run inside the sandbox."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.backends import subp
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
        self.commands: list[list[str]] = []
        run = sandbox_runner(sandbox)

        def recorded(argv: Sequence[str], **kwargs: Any) -> subp.Result:
            self.commands.append([str(a) for a in argv])
            return run(argv, **kwargs)

        self.dnf = Dnf(run=recorded, dnf_cache=sandbox.path("/var/cache/dnf"),
                       root=sandbox.path("/"))  # fmt: skip

    def cached(self, filename: str) -> Path:
        """The copy of ``filename`` in dnf's package cache (a machine path)."""
        found = list(self.sandbox.path("/var/cache/dnf").glob(f"*/packages/{filename}"))
        assert len(found) == 1, found
        return found[0]

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


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def caching_rpm_host(rpm_host) -> Iterator[RpmHost]:
    """The repository served over HTTP on loopback, as a mirror is, and
    dnf keeping every package it downloads (keepcache): dnf uses a file://
    repository in place and caches nothing from it."""
    handler = functools.partial(_Quiet, directory=str(rpm_host.repo.directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        rpm_host.sandbox.path("/etc/yum.repos.d/fleetpatch.repo").write_text(
            "[fleetpatch]\nname=fleetpatch test repository\n"
            f"baseurl=http://127.0.0.1:{port}/\ngpgcheck=0\nmetadata_expire=0\n"
        )
        conf = rpm_host.sandbox.path("/etc/dnf/dnf.conf")
        conf.write_text(conf.read_text() + "keepcache=True\n")
        yield rpm_host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


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


def test_no_copy_of_the_old_version_means_no_patch(rpm_host, tmp_path):
    rpm_host.install_file(demo_rpm("0.9"), tmp_path)  # 0.9 exists nowhere but on the host
    # ... and cannot be rebuilt: its file is no longer what rpm installed.
    rpm_host.sandbox.run(["sh", "-c", "rm /usr/bin/fp-demo && mkdir /usr/bin/fp-demo"])
    rpm_host.repo.add(demo_rpm("1.1"))
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    with pytest.raises(PlanError, match=r"cannot keep a copy of fp-demo 0\.9-1"):
        rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-3")


def _rpm_of(host: RpmHost, path: str) -> str:
    done = host.sandbox.run(["rpm", "-qp", "--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE}", path])
    return done.stdout


def test_a_package_with_an_epoch_is_kept_at_its_exact_version(rpm_host):
    ep = [RpmSpec("fp-ep", v, epoch=2, files={"/usr/bin/fp-ep": f"#!/bin/sh\necho {v}\n"})
          for v in ("1.0", "1.1")]  # fmt: skip
    rpm_host.repo.add(*ep)
    rpm_host.dnf_cli("install", "fp-ep-2:1.0")
    plan = rpm_host.dnf.plan([Target("fp-ep")], False, [])
    assert [(c.name, c.old, c.new) for c in plan.changes] == [("fp-ep", "2:1.0-1", "2:1.1-1")]
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-ep")
    assert [(s.name, s.version) for s in snapshot.saved] == [("fp-ep", "2:1.0-1")]
    assert _rpm_of(rpm_host, snapshot.saved[0].path) == "fp-ep 2:1.0-1"
    rpm_host.dnf.apply(plan)
    rpm_host.dnf.revert(snapshot)
    assert rpm_host.dnf.versions(["fp-ep"]) == {"fp-ep": "2:1.0-1"}


def test_every_missing_version_is_fetched_in_one_dnf_download_and_checked(rpm_host):
    lib = [RpmSpec("fp-lib", v, files={"/usr/lib/fp-lib": f"{v}\n"}) for v in ("1.0", "1.1")]
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("1.1"), *lib)
    rpm_host.dnf_cli("install", "fp-demo-1.0", "fp-lib-1.0")
    plan = rpm_host.dnf.plan([Target("fp-demo"), Target("fp-lib")], False, [])
    cache = rpm_host.cache / "o-6"
    cache.mkdir()
    # Left in the order's cache under the right names: an empty file (a
    # download cut short) and a real package of another version.
    (cache / "fp-demo-1.0-1.noarch.rpm").write_bytes(b"")
    other = rpm_host.repo.directory / "fp-lib-1.1-1.noarch.rpm"
    (cache / "fp-lib-1.0-1.noarch.rpm").write_bytes(other.read_bytes())
    rpm_host.commands.clear()
    snapshot = rpm_host.dnf.snapshot(plan, cache)
    downloads = [c for c in rpm_host.commands if "download" in c]
    assert len(downloads) == 1, downloads
    assert downloads[0][-2:] == ["fp-demo-1.0-1.noarch", "fp-lib-1.0-1.noarch"]
    assert sorted(_rpm_of(rpm_host, s.path) for s in snapshot.saved) == [
        "fp-demo (none):1.0-1", "fp-lib (none):1.0-1",
    ]  # fmt: skip


@pytest.mark.parametrize("epoch", [None, 3])
def test_a_version_gone_from_the_repository_is_kept_from_dnfs_cache(caching_rpm_host, epoch):
    rpm_host = caching_rpm_host
    demo = [RpmSpec("fp-demo", v, epoch=epoch, files=demo_rpm(v).files) for v in ("1.0", "1.1")]
    evr = f"{epoch}:1.0-1" if epoch else "1.0-1"
    rpm_host.repo.add(demo[0])
    rpm_host.dnf_cli("install", f"fp-demo-{evr}")  # dnf keeps the package it installed
    rpm_host.repo.remove("fp-demo-1.0-1.noarch.rpm")
    rpm_host.repo.add(demo[1])  # the repository now has only 1.1
    rpm_host.dnf.refresh()
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    rpm_host.commands.clear()
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-7")
    assert not [c for c in rpm_host.commands if "download" in c]
    assert _rpm_of(rpm_host, snapshot.saved[0].path) == f"fp-demo {epoch or '(none)'}:1.0-1"
    rpm_host.dnf.apply(plan)
    assert rpm_host.version() == "1.1-1"
    rpm_host.dnf.revert(snapshot)  # from the kept file: no repository has 1.0
    assert rpm_host.dnf.versions(["fp-demo"]) == {"fp-demo": evr}
    assert "fleetpatch revert of" in rpm_host.sandbox.run(["dnf", "history", "info", "last"]).stdout


def test_a_revert_from_kept_files_also_removes_what_the_update_added(caching_rpm_host):
    rpm_host = caching_rpm_host
    lib = RpmSpec("fp-lib", "2.0", files={"/usr/lib/fp-lib": "lib\n"})
    demo12 = RpmSpec("fp-demo", "1.2", files=demo_rpm("1.2").files, requires=("fp-lib",))
    rpm_host.repo.add(demo_rpm("1.0"))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    rpm_host.repo.remove("fp-demo-1.0-1.noarch.rpm")
    rpm_host.repo.add(demo12, lib)
    rpm_host.dnf.refresh()
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-10")
    assert snapshot.new == ("fp-lib",)
    rpm_host.dnf.apply(plan)
    assert (rpm_host.version(), rpm_host.version("fp-lib")) == ("1.2-1", "2.0-1")
    reverted = rpm_host.dnf.revert(snapshot)
    assert (rpm_host.version(), rpm_host.version("fp-lib")) == ("1.0-1", None)
    assert [(c.name, c.old, c.new) for c in reverted] == [
        ("fp-demo", "1.2-1", "1.0-1"), ("fp-lib", "2.0-1", ""),
    ]  # fmt: skip
    assert not list((rpm_host.cache / "o-10").glob("*.dnf-shell"))


def test_a_damaged_copy_in_dnfs_cache_is_not_kept_a_rebuilt_one_is(caching_rpm_host):
    rpm_host = caching_rpm_host
    blob = {"/usr/share/fp-demo/blob": os.urandom(100_000).hex() + "\n"}  # a payload to cut
    rpm_host.repo.add(RpmSpec("fp-demo", "1.0", files={**demo_rpm("1.0").files, **blob}))
    rpm_host.dnf_cli("install", "fp-demo-1.0")
    rpm_host.repo.remove("fp-demo-1.0-1.noarch.rpm")
    rpm_host.repo.add(demo_rpm("1.1"))
    cached = rpm_host.cached("fp-demo-1.0-1.noarch.rpm")
    cached.write_bytes(cached.read_bytes()[:-1000])  # the payload cut short, the header intact
    query = ["rpm", "-qp", "--qf", "%{NAME}", str(cached)]  # rpm still reads the header
    assert subprocess.run(query, capture_output=True, text=True, check=True).stdout == "fp-demo"
    rpm_host.dnf.refresh()
    plan = rpm_host.dnf.plan([Target("fp-demo")], False, [])
    snapshot = rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-8")
    kept = Path(snapshot.saved[0].path)
    assert kept.read_bytes() != cached.read_bytes(), "rebuilt from the installed files"
    subprocess.run(["rpm", "-K", str(kept)], capture_output=True, check=True)
    assert rpm_host.version() == "1.0-1"


def test_only_the_versions_no_repository_has_are_named(rpm_host, tmp_path):
    lib = [RpmSpec("fp-lib", v, files={"/usr/lib/fp-lib": f"{v}\n"}) for v in ("1.0", "1.1")]
    rpm_host.repo.add(demo_rpm("1.1"), *lib)
    rpm_host.install_file(demo_rpm("0.9"), tmp_path)  # 0.9 exists nowhere but on the host
    rpm_host.dnf_cli("install", "fp-lib-1.0")
    # ... and cannot be rebuilt: its file is no longer what rpm installed.
    rpm_host.sandbox.run(["sh", "-c", "rm /usr/bin/fp-demo && mkdir /usr/bin/fp-demo"])
    plan = rpm_host.dnf.plan([Target("fp-demo"), Target("fp-lib")], False, [])
    with pytest.raises(PlanError) as raised:
        rpm_host.dnf.snapshot(plan, rpm_host.cache / "o-9")
    assert str(raised.value) == (
        "cannot keep a copy of fp-demo 0.9-1 for a revert: no repository offers it, "
        "and it cannot be rebuilt from its installed files"
    )


@pytest.mark.parametrize("epoch", [None, 3])
def test_a_version_no_repository_has_is_rebuilt_and_reverted_to(rpm_host, tmp_path, epoch):
    """Installed from a file: no repository or cache has 0.9. The copy is
    rebuilt from its installed files and rpm's header (its provides kept,
    its files as they are now), checks out, and is what the revert installs
    when `dnf history undo` cannot find 0.9."""
    spec = RpmSpec("fp-demo", "0.9", epoch=epoch, provides=("fp-demo-api = 2",),
                   files={"/usr/bin/fp-demo": "#!/bin/sh\necho 0.9\n"})  # fmt: skip
    evr = f"{epoch}:0.9-1" if epoch else "0.9-1"
    rpm_host.install_file(spec, tmp_path)
    rpm_host.sandbox.run(["sh", "-c", "echo local change >> /usr/bin/fp-demo"])
    rpm_host.repo.add(RpmSpec("fp-demo", "1.1", epoch=epoch, files=demo_rpm("1.1").files))
    backend = rpm_host.dnf
    backend.refresh()
    plan = backend.plan([Target("fp-demo")], False, [])
    snapshot = backend.snapshot(plan, rpm_host.cache / "o-20")
    assert [(s.name, s.version) for s in snapshot.saved] == [("fp-demo", evr)]
    kept = Path(snapshot.saved[0].path)
    assert kept.name == "fp-demo-0.9-1.noarch.rpm"
    query = ["rpm", "-qp", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} [%{PROVIDES} ]",
             str(kept)]  # fmt: skip
    assert subprocess.run(query, capture_output=True, text=True, check=True).stdout == (
        f"fp-demo {epoch or 0}:0.9-1 fp-demo fp-demo-api "
    )
    backend.apply(plan)
    assert rpm_host.version() == "1.1-1"
    reverted = backend.revert(snapshot)
    assert [(c.name, c.new) for c in reverted] == [("fp-demo", evr)]
    script = rpm_host.sandbox.run(["cat", "/usr/bin/fp-demo"]).stdout
    assert script == "#!/bin/sh\necho 0.9\nlocal change\n", "the files as they were"
    verified = rpm_host.sandbox.run(["rpm", "-V", "fp-demo"], check=False)
    assert verified.returncode == 0, verified.stdout


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


def test_files_are_the_paths_the_installed_packages_own(rpm_host):
    lib = RpmSpec("fp-lib", "1.0", files={"/usr/lib/fp-lib": "lib\n"})
    rpm_host.repo.add(demo_rpm("1.0"), lib, RpmSpec("fp-empty", "1.0"))
    rpm_host.dnf_cli("install", "fp-demo", "fp-lib", "fp-empty")
    assert rpm_host.dnf.files(["fp-demo", "fp-lib"]) == {"/usr/bin/fp-demo", "/usr/lib/fp-lib"}
    # A package that owns nothing or is not installed (one the update removed) adds nothing.
    assert rpm_host.dnf.files(["fp-demo", "fp-empty", "fp-nothere"]) == {"/usr/bin/fp-demo"}
    assert rpm_host.dnf.files([]) == set()


def test_services_to_restart_runs_needs_restarting_and_fails_loudly_without_it(rpm_host):
    """Only what the sandbox can show: real dnf accepts the command and
    reports no service, and without dnf-plugins-core's needs-restarting it
    is CommandFailed, not "nothing to restart". A service actually named
    needs a host with systemd on the system bus, and dnf's needs-restarting
    cannot see a stale process here anyway: it skips every mapping on a
    device with major 0 (the sandbox's overlayfs) and dates processes
    from /proc/1's mtime, which in a fresh PID namespace is the sandbox's
    start, not the boot (tests/unit/test_dnf_restart.py covers the parsing)."""
    rpm_host.repo.add(demo_rpm("1.0"))
    rpm_host.dnf_cli("install", "fp-demo")
    assert rpm_host.dnf.services_to_restart() == []
    plugin = "/usr/lib/python3/dist-packages/dnf-plugins/needs_restarting.py"
    rpm_host.sandbox.run(["rm", "-f", plugin])  # in the sandbox's overlay only
    with pytest.raises(CommandFailed, match=r"dnf-command\(needs-restarting\)"):
        rpm_host.dnf.services_to_restart()


def test_available_updates_carry_their_security_advisory_and_severity(rpm_host):
    """v1 installed, v2 fixes a security problem (Important), v3 is a bugfix:
    the update offered is v3, marked security because of v2's advisory.
    fp-other has only a bugfix update. Nothing is installed by asking."""
    rpm_host.repo.add(demo_rpm("1.0"), demo_rpm("2.0"), demo_rpm("3.0"),
                      RpmSpec("fp-other", "1.0"), RpmSpec("fp-other", "1.1"))  # fmt: skip
    rpm_host.repo.advise(
        Advisory("FP-SA-1", "security", (demo_rpm("2.0"),), severity="Important"),
        Advisory("FP-BA-2", "bugfix", (demo_rpm("3.0"),)),
        Advisory("FP-BA-3", "bugfix", (RpmSpec("fp-other", "1.1"),)),
    )
    rpm_host.dnf_cli("install", "fp-demo-1.0", "fp-other-1.0")
    found = {u.name: u for u in rpm_host.dnf.available()}
    demo_update, other = found["fp-demo"], found["fp-other"]
    assert (demo_update.installed, demo_update.candidate) == ("1.0-1", "3.0-1")
    assert (demo_update.security, demo_update.severity, demo_update.advisory) == (
        True, "Important", "FP-SA-1",
    )  # fmt: skip
    assert (other.security, other.severity, other.advisory) == (False, "", "FP-BA-3")
    assert rpm_host.version() == "1.0-1"
