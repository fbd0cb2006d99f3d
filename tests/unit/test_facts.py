"""agent.host.facts: which package manager patches this host, told from
real os-release files in a temp root first, the tools found only after."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.host.facts import os_release, package_manager

# As the distributions ship them (trimmed to the fields read and a few more).
DEBIAN = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\nID=debian\n'
)
UBUNTU = 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n'
MINT = 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n'
RHEL = 'NAME="Red Hat Enterprise Linux"\nVERSION_ID="9.4"\nID="rhel"\nID_LIKE="fedora"\n'
ROCKY = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
ALMA = 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\n'
FEDORA = 'NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\nID=fedora\nVERSION_ID=40\n'
CENTOS = 'NAME="CentOS Stream"\nID="centos"\nID_LIKE="rhel fedora"\n'
AMAZON = 'NAME="Amazon Linux"\nID="amzn"\nID_LIKE="fedora"\n'
SUSE = 'NAME="openSUSE Leap"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\n'


def _root(tmp_path: Path, os_release_text: str | None, tools: tuple[str, ...] = (),
          where: str = "etc/os-release") -> Path:  # fmt: skip
    root = tmp_path / "root"
    if os_release_text is not None:
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_text(os_release_text)
    for tool in tools:
        path = root / "usr/bin" / tool
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


@pytest.mark.parametrize(
    ("text", "manager"),
    [(DEBIAN, "apt"), (UBUNTU, "apt"), (MINT, "apt"), (RHEL, "dnf"), (ROCKY, "dnf"),
     (ALMA, "dnf"), (FEDORA, "dnf"), (CENTOS, "dnf"), (AMAZON, "dnf")],
)  # fmt: skip
def test_the_family_comes_from_os_release(tmp_path, text, manager):
    assert package_manager(root=_root(tmp_path, text)) == manager


def test_os_release_wins_over_the_other_familys_tools(tmp_path):
    # An RPM host with dpkg's tools installed, a Debian host with rpm.
    assert package_manager(root=_root(tmp_path / "a", ROCKY, ("dpkg-query", "rpm"))) == "dnf"
    assert package_manager(root=_root(tmp_path / "b", DEBIAN, ("dpkg-query", "rpm"))) == "apt"
    assert package_manager(root=_root(tmp_path / "c", RHEL, ("dpkg-query",))) == "dnf"


def test_usr_lib_os_release_when_etc_has_none(tmp_path):
    assert package_manager(root=_root(tmp_path, ROCKY, where="usr/lib/os-release")) == "dnf"


def test_the_tools_decide_only_without_a_known_family(tmp_path):
    assert package_manager(root=_root(tmp_path / "a", None, ("rpm",))) == "dnf"
    assert package_manager(root=_root(tmp_path / "b", None, ("dpkg-query", "rpm"))) == "apt"
    assert package_manager(root=_root(tmp_path / "c", SUSE, ("rpm",))) == "dnf"
    assert package_manager(root=_root(tmp_path / "d", SUSE)) == ""
    assert package_manager(root=_root(tmp_path / "e", None)) == ""


def test_the_setting_overrides_what_the_host_says(tmp_path):
    root = _root(tmp_path, DEBIAN, ("dpkg-query",))
    assert package_manager("dnf", root=root) == "dnf"
    assert package_manager("", root=root) == "apt"


def test_os_release_fields_are_unquoted(tmp_path):
    fields = os_release(_root(tmp_path, ROCKY + "# a comment\nBROKEN LINE\nVARIANT='Server'\n"))
    assert fields["ID"] == "rocky"
    assert fields["ID_LIKE"] == "rhel centos fedora"
    assert fields["VARIANT"] == "Server"
    assert "BROKEN LINE" not in fields
    assert os_release(tmp_path / "nothing") == {}


def test_inventory_reports_the_package_manager_the_settings_name(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from agent import cli
    from agent.backends import packages
    from agent.statedir import StateDir

    state = StateDir(tmp_path / "state")
    state.create()
    state.write_config("ctl.example:7443", "ctl.example:7444")
    text = state.config_file.read_text().replace('package_manager = ""', 'package_manager = "dnf"')
    state.config_file.write_text(text)
    asked: list[str] = []

    def installed(manager: str) -> list[packages.Package]:
        asked.append(manager)
        return []

    monkeypatch.setattr(packages, "installed", installed)
    done = CliRunner().invoke(cli.app, ["inventory", "--state-dir", str(state.path), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["facts"]["package_manager"] == "dnf"
    assert asked == ["dnf"]
