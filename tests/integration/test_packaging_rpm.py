"""The fleetpatch-agent RPM (packaging/rpmpkg.py, `build_debs.py --rpm`),
installed, upgraded and erased for real with dnf in the RPM sandbox
(tests.support.dnfrepo: a copy of this machine whose rpmdb and dnf
repository are its own).

The sandbox is this Debian machine underneath: /usr/bin/python3 (3.11) and
systemd are there, but its rpmdb knows only what the test installs. A
stand-in base package provides `python(abi) = 3.11`, `systemd` and
/bin/sh, as an RPM distribution's python3, systemd and bash packages do, so
dnf resolves the agent's real Requires rather than the test skipping them
(--nodeps).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleetpatch.agentrelease import Family, parse_artifact

from agent.backends.base import Change, Plan
from agent.backends.dnf import Dnf, rpm_fields
from agent.orders.selfupdate import SystemdWatchdog
from tests.support.dnfrepo import (
    LocalRpmRepo,
    RpmSpec,
    dnfrepo_available,
    make_rpm_host,
    rpm_version,
    sandbox_runner,
)
from tests.support.packages import (
    ROOT,
    agent_rpm,
    build_script,
    next_version,
    packaging_available,
)
from tests.support.sandbox import HostSandbox

pytestmark = pytest.mark.root

WANTS = "/etc/systemd/system/multi-user.target.wants/fleetpatch-agent.service"
VENV = "/opt/fleetpatch/agent"


@pytest.fixture(scope="module")
def rpms() -> tuple[Path, Path, str]:
    """(v1 rpm, v2 rpm, v2's PEP 440 version): the session's builds, which
    test_selfupdate_systemd_rpm.py installs too (signed; the tests here use
    the .rpm files only)."""
    for reason in (packaging_available(), dnfrepo_available()):
        if reason is not None:
            pytest.skip(reason)
    v2 = next_version(build_script().project_version())
    return agent_rpm(), agent_rpm(v2), v2


def _installed_from_a_file(
    make_sandbox: Callable[[], HostSandbox], tmp_path: Path, v1: Path, v2: Path
) -> HostSandbox:
    """A dnf host with what the agent needs, both agent RPMs copied to
    /root, and the first installed by hand (`rpm -U FILE`: no repository
    knows it)."""
    repo = LocalRpmRepo(tmp_path / "repo")
    sandbox = make_sandbox()
    make_rpm_host(sandbox, repo)
    repo.add(RpmSpec("fp-base", "1", provides=("python(abi) = 3.11", "systemd", "/bin/sh")))
    sandbox.run(["dnf", "-y", "install", "fp-base"], timeout=600)
    for rpm in (v1, v2):
        sandbox.path(f"/root/{rpm.name}").write_bytes(rpm.read_bytes())
    sandbox.run(["rpm", "-U", f"/root/{v1.name}"], timeout=600)
    return sandbox


def _unowned(sandbox: HostSandbox) -> list[str]:
    on_disk = sandbox.run(["find", VENV, "-type", "f"]).stdout.split()
    owned = set(sandbox.run(["rpm", "-ql", "fleetpatch-agent"]).stdout.split())
    return sorted(f for f in on_disk if f not in owned)


def test_rpm_contents(rpms):
    rpm, _, _ = rpms
    query = ["rpm", "-qp", "--dbpath", "/nonexistent"]
    files = subprocess.run([*query, "-l", str(rpm)], capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    assert [f for f in files if f.endswith(".pyc") or "__pycache__" in f] == []
    assert not [f for f in files if "/site-packages/controller" in f or "/site-packages/pip/" in f]
    for path in (
        "/usr/bin/fleetpatch-agent",
        "/usr/lib/systemd/system/fleetpatch-agent.service",
        f"{VENV}/bin/fleetpatch-agent",
        "/usr/share/man/man1/fleetpatch-agent.1.gz",
    ):
        assert path in files, path
    unit = subprocess.run(
        ["rpm2cpio", str(rpm)], capture_output=True, check=True
    ).stdout  # the unit is the .deb's, byte for byte
    assert (ROOT / "packaging/systemd/fleetpatch-agent.service").read_bytes() in unit
    config = subprocess.run([*query, "-c", str(rpm)], capture_output=True, text=True, check=True)
    assert config.stdout.split() == ["/etc/fleetpatch/agent.env", "/etc/fleetpatch/agent.toml"]
    requires = subprocess.run([*query, "-R", str(rpm)], capture_output=True, text=True, check=True)
    assert "python(abi) = 3.11" in requires.stdout.splitlines()


def test_dnf_installs_upgrades_and_erases_the_agent(rpms, make_sandbox, tmp_path):
    v1, v2, v2_version = rpms
    repo = LocalRpmRepo(tmp_path / "repo")
    sandbox = make_sandbox()
    make_rpm_host(sandbox, repo)
    repo.add(RpmSpec("fp-base", "1", provides=("python(abi) = 3.11", "systemd", "/bin/sh")))
    (repo.directory / v1.name).write_bytes(v1.read_bytes())
    repo.refresh()

    def dnf(*args: str) -> None:
        sandbox.run(["dnf", "-y", *args], timeout=600)

    dnf("install", "fleetpatch-agent")
    assert rpm_version(sandbox, "fleetpatch-agent") == "0.1.0-1"
    assert "enroll" in sandbox.run(["fleetpatch-agent", "--help"]).stdout
    assert sandbox.run(["stat", "-c", "%a %U", "/var/lib/fleetpatch/agent"]).stdout.split() == [
        "700", "root",
    ]  # fmt: skip
    assert (
        sandbox.run(["readlink", WANTS])
        .stdout.strip()
        .endswith("/systemd/system/fleetpatch-agent.service")
    ), "enabled on install"
    # Bytecode compiled at install for every module, plain and -OO (for the
    # daemon), nothing else unowned.
    compiled = _unowned(sandbox)
    plain = [f for f in compiled if not f.endswith(".opt-2.pyc")]
    assert len(plain) > 100
    assert len(compiled) == 2 * len(plain)
    assert all("/__pycache__/" in f and f.endswith(".pyc") for f in compiled)
    assert sandbox.run(["rpm", "-V", "fleetpatch-agent"], check=False).stdout == ""

    sandbox.path("/var/lib/fleetpatch/agent/agent.toml").write_text("# enrolled\n")
    env = sandbox.path("/etc/fleetpatch/agent.env")
    env.write_text(env.read_text() + "FLEETPATCH_AGENT_ARGS=--verbose\n")

    (repo.directory / v2.name).write_bytes(v2.read_bytes())
    repo.refresh()
    dnf("upgrade", "fleetpatch-agent")
    assert rpm_version(sandbox, "fleetpatch-agent") == f"{v2_version}-1"
    version = sandbox.run(
        [f"{VENV}/bin/python", "-c", "import fleetpatch; print(fleetpatch.__version__)"]
    )
    assert version.stdout.strip() == v2_version
    assert sandbox.path("/var/lib/fleetpatch/agent/agent.toml").read_text() == "# enrolled\n"
    assert env.read_text().endswith("FLEETPATCH_AGENT_ARGS=--verbose\n"), "noreplace"
    assert not sandbox.path("/etc/fleetpatch/agent.env.rpmnew").exists()
    changed = sandbox.run(["rpm", "-V", "fleetpatch-agent"], check=False).stdout.splitlines()
    assert [line.split()[-1] for line in changed] == ["/etc/fleetpatch/agent.env"]
    assert len(_unowned(sandbox)) == len(compiled), "no bytecode of the old version left"
    assert sandbox.run(["test", "-e", WANTS], check=False).returncode == 0

    dnf("remove", "fleetpatch-agent")
    assert rpm_version(sandbox, "fleetpatch-agent") is None
    for gone in ("/opt/fleetpatch", "/usr/bin/fleetpatch-agent", WANTS,
                 "/usr/lib/systemd/system/fleetpatch-agent.service"):  # fmt: skip
        assert sandbox.run(["test", "-e", gone], check=False).returncode != 0, gone
    assert sandbox.path("/var/lib/fleetpatch/agent/agent.toml").is_file(), "enrollment kept"
    assert sandbox.path("/etc/fleetpatch/agent.env.rpmsave").is_file(), "the changed setting kept"


def test_the_agent_rpm_self_update_checks_install_and_rollback_with_real_rpm(
    rpms, make_sandbox, tmp_path
):
    """What an agent self-update does with the real agent RPMs on a dnf
    host: the file name and header checks, the install of a local file with
    the dnf backend (its scriptlets run), the watchdog's restore (rpm -U
    --oldpackage) over the newer version, and a downgrade the backend asks
    dnf for."""
    v1, v2, v2_version = rpms
    sandbox = _installed_from_a_file(make_sandbox, tmp_path, v1, v2)
    old, new = Path(f"/root/{v1.name}"), Path(f"/root/{v2.name}")
    run = sandbox_runner(sandbox)
    backend = Dnf(run=run)

    # The controller's reading of the name, the agent's of the header.
    assert parse_artifact(v2.name).version == v2_version
    assert parse_artifact(v2.name).family is Family.RPM
    fields = rpm_fields(new, run)
    assert fields["NAME"] == "fleetpatch-agent"
    assert fields["VERSION"] == Family.RPM.package_version(v2_version)
    assert fields["EPOCH"] == ""

    def running() -> str:
        argv = [f"{VENV}/bin/python", "-c", "import fleetpatch; print(fleetpatch.__version__)"]
        return str(sandbox.run(argv).stdout).strip()

    compiled = len(_unowned(sandbox))
    changes = backend.install_files([new])
    assert [(c.name, c.old, c.new) for c in changes] == [
        ("fleetpatch-agent", "0.1.0-1", f"{fields['VERSION']}-1")
    ]
    assert running() == v2_version

    # The watchdog's restore, as its systemd unit runs it.
    restore = SystemdWatchdog(rpm="rpm").restore_argv(old)
    sandbox.run(restore, timeout=600)
    assert rpm_version(sandbox, "fleetpatch-agent") == "0.1.0-1"
    assert running() == "0.1.0"
    assert sandbox.run(["rpm", "-V", "fleetpatch-agent"], check=False).stdout == ""
    assert len(_unowned(sandbox)) == compiled, "no bytecode of the newer version left"

    # Up again, then down with dnf (policy allowing a downgrade).
    backend.install_files([new])
    assert running() == v2_version
    changes = backend.install_files([old])
    assert [(c.old, c.new) for c in changes] == [(f"{fields['VERSION']}-1", "0.1.0-1")]
    assert running() == "0.1.0"


def _described(run: Callable[..., Any], rpm: Path) -> dict[str, str]:
    """What an agent RPM says of itself that a rebuilt copy must keep."""
    files = "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS}\n]"
    queries = {"scripts": ["--scripts"], "requires": ["--requires"],
               "provides": ["--provides"], "files": ["--qf", files],
               "nevra": ["--qf", "%{NAME} %{EPOCHNUM} %{VERSION}-%{RELEASE} %{ARCH}"]}  # fmt: skip
    return {key: run(["rpm", "-qp", *argv, str(rpm)]).stdout for key, argv in queries.items()}


def test_an_agent_installed_from_a_file_is_rebuilt_and_restored_from_its_files(
    rpms, make_sandbox, tmp_path
):
    """The first self-update of an agent installed with `rpm -U FILE` has no
    repository, cache or kept copy: the dnf backend rebuilds the installed
    agent from its files (agent.backends.rpmrepack). The rebuilt package
    says what the original says (scriptlets, dependencies, files with their
    modes, owners and flags), its digests hold, and the watchdog's restore
    with it over the newer version brings the old agent back, rpm -V clean."""
    v1, v2, v2_version = rpms
    sandbox = _installed_from_a_file(make_sandbox, tmp_path, v1, v2)
    run = sandbox_runner(sandbox)
    cache = tmp_path / "cache"
    cache.mkdir()
    sandbox.bind(cache, str(cache), read_only=False)
    backend = Dnf(run=run, root=sandbox.path("/"))
    fields = rpm_fields(Path(f"/root/{v1.name}"), run)
    change = Change("fleetpatch-agent", fields["ARCH"], "0.1.0-1", "")

    snapshot = backend.snapshot(Plan((change,)), cache / "o-1")
    rebuilt = Path(snapshot.saved[0].path)
    assert rebuilt.name == v1.name
    assert rebuilt.read_bytes() != v1.read_bytes(), "rebuilt, not found somewhere"
    assert "digests OK" in run(["rpm", "-K", "--nosignature", str(rebuilt)]).stdout
    assert _described(run, rebuilt) == _described(run, Path(f"/root/{v1.name}"))

    compiled = len(_unowned(sandbox))
    backend.install_files([Path(f"/root/{v2.name}")])
    assert rpm_version(sandbox, "fleetpatch-agent") == f"{Family.RPM.package_version(v2_version)}-1"
    sandbox.run(SystemdWatchdog(rpm="rpm").restore_argv(rebuilt), timeout=600)
    assert rpm_version(sandbox, "fleetpatch-agent") == "0.1.0-1"
    argv = [f"{VENV}/bin/python", "-c", "import fleetpatch; print(fleetpatch.__version__)"]
    assert sandbox.run(argv).stdout.strip() == "0.1.0"
    assert sandbox.run(["rpm", "-V", "fleetpatch-agent"], check=False).stdout == ""
    assert len(_unowned(sandbox)) == compiled, "its %posttrans compiled the restored version"
