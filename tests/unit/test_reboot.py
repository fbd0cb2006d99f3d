"""Rebooting and the shutdown inhibitor through their command-line
contract (stand-in `systemd-inhibit` and reboot commands on PATH, which
record how they were called), the boot id / kernel files, the agent.toml
fields, and the choice of backend."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from agent.backends import subp
from agent.backends.apt import Apt
from agent.backends.dnf import Dnf
from agent.boot.reboot import CommandRebooter, FileValue, Inhibitor, mutating
from agent.errors import CommandFailed, ConfigError
from agent.service import backend_for
from agent.statedir import AgentConfig, RebootSettings, StateDir

RECORDING = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
{then}
"""


def tool(tmp_path: Path, name: str, then: str = "exit 0") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    path = bin_dir / name
    path.write_text(RECORDING.format(log=log, then=then))
    path.chmod(0o755)
    return log


def runner_with(tmp_path: Path):
    env = {"PATH": f"{tmp_path / 'bin'}:{subp.BASE_ENV['PATH']}"}
    return lambda argv, **kw: subp.run(argv, **{**kw, "env": {**(kw.get("env") or {}), **env}})


def test_only_mutating_package_commands_are_inhibited():
    assert mutating(["apt-get", "-q", "-y", "install", "fp-demo=1.1"])
    assert mutating(["dpkg", "--configure", "-a"])
    assert mutating(["dnf", "-y", "--comment=x", "history", "undo", "4"])
    assert not mutating(["apt-get", "-q", "-y", "-s", "install", "fp-demo"])
    assert not mutating(["dnf", "--assumeno", "upgrade", "fp-demo"])
    assert not mutating(["dpkg-query", "-W", "fp-demo"])
    assert not mutating(["rpm", "-q", "fp-demo"])
    assert not mutating([])


def test_transactions_run_under_a_logind_block_lock(tmp_path):
    log = tool(tmp_path, "systemd-inhibit", 'case "$1" in --list) exit 0;; esac\n'
               'while [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"')  # fmt: skip
    inhibited = Inhibitor(runner_with(tmp_path), why="installing fp-demo")
    done = inhibited(["dpkg", "--install", "/nonexistent.deb"], check=False)
    assert done.returncode != 0  # dpkg itself ran, under the lock
    assert inhibited(["dpkg-query", "--version"]).returncode == 0
    assert log.read_text().splitlines() == [
        "--list",
        "--what=shutdown:sleep --who=fleetpatch --why=installing fp-demo --mode=block "
        "dpkg --install /nonexistent.deb",
    ]


def test_without_logind_transactions_run_as_they_are(tmp_path, caplog):
    no_bus = "echo 'Failed to connect to bus: No such file or directory' >&2; exit 1"
    log = tool(tmp_path, "systemd-inhibit", no_bus)
    inhibited = Inhibitor(runner_with(tmp_path))
    for _ in range(2):
        inhibited(["dpkg", "--configure", "-a"], check=False)
    assert log.read_text().splitlines() == ["--list"]  # asked once
    assert "no shutdown inhibitor lock" in caplog.text
    assert "Failed to connect to bus" in caplog.text


def test_without_systemd_inhibit_transactions_run_as_they_are(tmp_path):
    inhibited = Inhibitor(lambda argv, **kw: subp.run(argv, **{**kw, "env": {"PATH": "/bin"}}))
    assert inhibited.usable() is False


def test_the_reboot_command_is_the_configured_one(tmp_path):
    log = tool(tmp_path, "fake-reboot")
    slept: list[float] = []
    rebooter = CommandRebooter(["fake-reboot", "--now"], run=runner_with(tmp_path),
                               sleep=slept.append)  # fmt: skip
    rebooter.reboot()
    assert log.read_text() == "--now\n"
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, lambda *_: None)  # the daemon's graceful handler
        rebooter.wait(timedelta(milliseconds=50))
        # During the wait a shutdown's SIGTERM ends the agent at once.
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
    assert slept


def test_a_refused_reboot_raises(tmp_path):
    tool(tmp_path, "systemctl", "echo 'Operation inhibited by \"apt\"' >&2; exit 1")
    with pytest.raises(CommandFailed, match="Operation inhibited"):
        CommandRebooter(run=runner_with(tmp_path)).reboot()


def test_boot_id_and_kernel_are_read_at_each_call(tmp_path):
    path = tmp_path / "boot_id"
    path.write_text("b0\n")
    boot_id = FileValue(path)
    assert boot_id() == "b0"
    path.write_text("b1\n")
    assert boot_id() == "b1"
    assert FileValue(tmp_path / "missing")() == ""
    real = FileValue(Path("/proc/sys/kernel/random/boot_id"))()
    assert len(real) == 36
    assert real == FileValue(Path("/proc/sys/kernel/random/boot_id"))()
    assert FileValue(Path("/proc/sys/kernel/osrelease"))() == os.uname().release


CONFIG = """
[controller]
address = "127.0.0.1:7443"
[agent]
retry_interval = "1s"
reboot_timeout = "2m"
{extra}
"""


def config(tmp_path: Path, extra: str = "") -> AgentConfig:
    (tmp_path / "agent.toml").write_text(CONFIG.format(extra=extra))
    return StateDir(tmp_path).config()


def test_reboot_settings_default_to_the_real_host(tmp_path):
    loaded = config(tmp_path)
    assert loaded.reboot == RebootSettings()
    assert loaded.reboot.command == ("systemctl", "reboot")
    assert loaded.reboot.boot_id_file == Path("/proc/sys/kernel/random/boot_id")
    assert loaded.timing.reboot_timeout == timedelta(minutes=2)


def test_reboot_settings_are_read_from_agent_toml(tmp_path):
    loaded = config(tmp_path, 'reboot_command = ["/usr/local/sbin/fleet-reboot", "--soft"]\n'
                    'boot_id_file = "/var/lib/test/boot_id"\n'
                    'kernel_release_file = "/var/lib/test/osrelease"\n')  # fmt: skip
    assert loaded.reboot == RebootSettings(
        ("/usr/local/sbin/fleet-reboot", "--soft"), Path("/var/lib/test/boot_id"),
        Path("/var/lib/test/osrelease"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('reboot_command = "systemctl reboot"', "agent.reboot_command: must be an array"),
        ("reboot_command = []", "agent.reboot_command: must be a non-empty array"),
        ('boot_id_file = "boot_id"', "agent.boot_id_file: must be an absolute path"),
        ("kernel_release_file = 7", "agent.kernel_release_file: must be a string"),
    ],
)
def test_bad_reboot_settings_are_named(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, extra)


def test_the_template_written_at_enrollment_parses(tmp_path):
    state = StateDir(tmp_path)
    state.write_config("127.0.0.1:7443", "127.0.0.1:7444")
    assert state.config().reboot.command == ("systemctl", "reboot")


def test_the_backend_follows_the_package_manager(tmp_path):
    loaded = config(tmp_path)
    assert isinstance(backend_for("apt", loaded), Apt)
    assert isinstance(backend_for("dnf", loaded), Dnf)
    with pytest.raises(ConfigError, match="supported: apt, dnf"):
        backend_for("pacman", loaded)
