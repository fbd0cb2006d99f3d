"""The systemd units in packaging/systemd: `systemd-analyze verify` passes,
the controller's exposure score stays "OK", the agent takes the protections
its comments claim, and the units agree with the code's defaults.

`verify` checks that ExecStart= is executable, and the packages' venvs are
not installed on this machine: each unit is verified inside a temporary
root (`--root`) holding systemd's own units, the unit where the package
puts it, and an executable stand-in at the ExecStart path. A control test
proves verify does fail without the stand-in. test_packaging.py verifies
the units again inside a sandbox where the real packages are installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.errors import ConfigError, Refused, TransientError
from agent.statedir import DEFAULT_STATE_DIR, StateDir
from controller.datadir import DEFAULT_DATA_DIR, DataDir
from tests.support.packages import ROOT, SYSTEMD_DIR, build_script

UNITS = ("fleetpatch-agent.service", "fleetpatch-controller.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
CONTROLLER_MAX_EXPOSURE = 2.5


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> values (in order) of a unit file, sections merged."""
    out: dict[str, list[str]] = {}
    for raw in (SYSTEMD_DIR / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def exec_start(unit: str) -> list[str]:
    (line,) = directives(unit)["ExecStart"]
    return line.split()


def verify_root(tmp_path: Path, unit: str, with_binary: bool = True) -> Path:
    """A root for `systemd-analyze verify --root`: systemd's units, ours in
    /lib/systemd/system, and (with_binary) a stand-in ExecStart binary."""
    if not SYSTEM_UNITS.is_dir():
        pytest.skip(f"{SYSTEM_UNITS} does not exist: no systemd units to verify against")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / str(SYSTEM_UNITS).lstrip("/"), symlinks=True)
    ours = root / "lib/systemd/system"
    ours.mkdir(parents=True, exist_ok=True)
    shutil.copy(SYSTEMD_DIR / unit, ours / unit)
    if with_binary:
        binary = root / exec_start(unit)[0].lstrip("/")
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


def run_verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", f"--root={root}", f"/lib/systemd/system/{unit}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(tmp_path, unit):
    done = run_verify(verify_root(tmp_path, unit), unit)
    # Any output is a finding (an unknown key is only a warning, exit 0).
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("unit", UNITS)
def test_verify_fails_when_the_exec_start_binary_is_missing(tmp_path, unit):
    done = run_verify(verify_root(tmp_path, unit, with_binary=False), unit)
    assert done.returncode != 0
    assert "is not executable" in done.stderr


def security(unit: str) -> tuple[float, str, str]:
    """(exposure, its label, full output) from `systemd-analyze security --offline`."""
    done = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--no-pager", str(SYSTEMD_DIR / unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    found = re.search(
        rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+) (\w+)", done.stdout
    )
    assert found is not None, done.stdout + done.stderr
    return float(found.group(1)), found.group(2), done.stdout


def security_items(unit: str) -> dict[str, bool]:
    done = subprocess.run(
        [_analyze(), "security", "--offline=yes", "--json=short", str(SYSTEMD_DIR / unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0 and not done.stdout:
        pytest.skip(f"systemd-analyze security --offline --json: {done.stderr.strip()}")
    return {item["name"]: bool(item["set"]) for item in json.loads(done.stdout)}


def test_controller_exposure_is_ok():
    exposure, label, output = security("fleetpatch-controller.service")
    assert exposure <= CONTROLLER_MAX_EXPOSURE, output
    assert label == "OK", output


def test_controller_takes_the_main_protections():
    items = security_items("fleetpatch-controller.service")
    for name in (
        "User=/DynamicUser=", "NoNewPrivileges=", "ProtectSystem=", "ProtectHome=",
        "PrivateTmp=", "PrivateDevices=", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "SystemCallFilter=~@privileged", "SystemCallFilter=~@mount", "MemoryDenyWriteExecute=",
        "RestrictNamespaces=~user", "RestrictAddressFamilies=~AF_PACKET",
    ):  # fmt: skip
        assert items[name], name
    found = directives("fleetpatch-controller.service")
    assert found["CapabilityBoundingSet"] == [""]
    assert found["ProtectSystem"] == ["strict"]
    assert found["SystemCallFilter"][0] == "@system-service"


def test_agent_takes_what_its_comments_claim_and_not_what_they_rule_out():
    items = security_items("fleetpatch-agent.service")
    for name in ("LockPersonality=", "RestrictRealtime=", "KeyringMode="):
        assert items[name], f"{name}: the unit's comments say the agent takes it"
    for name in ("ProtectSystem=", "NoNewPrivileges=", "PrivateTmp=", "RestrictSUIDSGID="):
        assert not items[name], f"{name}: the unit's comments say why the agent cannot take it"
    exposure, _, _ = security("fleetpatch-agent.service")
    assert exposure > CONTROLLER_MAX_EXPOSURE  # root, unconfined: what patching needs


# -- the units agree with the code -----------------------------------------------


def test_agent_unit_never_kills_a_package_transaction():
    found = directives("fleetpatch-agent.service")
    assert found["KillMode"] == ["process"]
    (timeout,) = found["TimeoutStopSec"]
    assert timeout == "30min"
    assert found["Restart"] == ["always"]
    assert found["RestartSec"] == ["30s"]
    assert found["StartLimitIntervalSec"] == ["0"]


def test_agent_unit_does_not_restart_on_what_a_person_must_fix():
    """Restarting cannot fix a configuration or state error (exit 2) or a
    refusal (exit 4); every other exit is restarted."""
    (prevent,) = directives("fleetpatch-agent.service")["RestartPreventExitStatus"]
    codes = {int(code) for code in prevent.split()}
    assert codes == {ConfigError.exit_code, Refused.exit_code} == {2, 4}
    assert TransientError.exit_code not in codes


def test_agent_unit_uses_the_agents_default_state_dir_and_the_packaged_binary():
    found = directives("fleetpatch-agent.service")
    state = StateDir(DEFAULT_STATE_DIR)
    assert found["Environment"] == [f"FLEETPATCH_AGENT_STATE_DIR={DEFAULT_STATE_DIR}"]
    assert found["StateDirectory"] == [str(DEFAULT_STATE_DIR.relative_to("/var/lib"))]
    assert found["ConditionPathExists"] == [str(state.config_file)]
    package = build_script().PACKAGES["agent"]
    assert exec_start("fleetpatch-agent.service")[:2] == [
        f"{package.venv}/bin/fleetpatch-agent",
        "run",
    ]
    assert found["EnvironmentFile"] == [f"-{package.env_file}"]


def test_controller_unit_uses_the_default_data_dir_and_the_packaged_binary():
    found = directives("fleetpatch-controller.service")
    assert found["User"] == ["fleetpatch"]
    assert found["Environment"] == [f"FLEETPATCH_DATA_DIR={DEFAULT_DATA_DIR}"]
    assert found["StateDirectory"] == [str(DEFAULT_DATA_DIR.relative_to("/var/lib"))]
    assert found["ConditionPathExists"] == [str(DataDir(DEFAULT_DATA_DIR).config)]
    package = build_script().PACKAGES["controller"]
    assert exec_start("fleetpatch-controller.service")[:3] == [
        f"{package.venv}/bin/fleetpatch",
        "controller",
        "serve",
    ]
    assert found["EnvironmentFile"] == [f"-{package.env_file}"]


def test_maintainer_scripts_are_valid_posix_sh():
    scripts = sorted((ROOT / "packaging/debian").glob("*/p*"))
    assert len(scripts) == 6
    for script in scripts:
        done = subprocess.run(
            ["sh", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert script.read_text().startswith("#!/bin/sh\n")
    if shutil.which("shellcheck"):
        done = subprocess.run(
            ["shellcheck", "--shell=sh", *map(str, scripts)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout
