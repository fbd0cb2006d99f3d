"""agent.packages: the installed package list from dpkg or rpm."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.backends.packages import (
    DPKG_QUERY,
    RPM_QUERY,
    Inventory,
    installed,
    parse_dpkg,
    parse_rpm,
    take_inventory,
)
from agent.backends.subp import Result
from agent.errors import CommandFailed, ConfigError

DPKG_OUTPUT = (
    "ii \tzlib1g\t1:1.2.13.dfsg-1\tamd64\n"
    "ii \tbash\t5.2.15-2+b2\tamd64\n"
    "rc \told-removed\t1.0-1\tamd64\n"  # only config files left
    "iU \thalf-unpacked\t2.0-1\tamd64\n"
    "iF \thalf-configured\t3.0-1\tall\n"
    "un \tnever-installed\t\t\n"
    "ii \ttzdata\t2024a-0+deb12u1\tall\n"
    "\n"
    "garbage line without tabs\n"
)

RPM_OUTPUT = (
    "openssl-libs\t1:3.0.7-27.el9\tx86_64\n"
    "bash\t0:5.1.8-9.el9\tx86_64\n"
    "gpg-pubkey\t0:fd431d51-4ae0493b\t(none)\n"
    "kernel\t10:5.14.0-427.el9\tx86_64\n"
    "\n"
    "short\tline\n"
)


def test_parse_dpkg_keeps_only_installed_sorted():
    assert parse_dpkg(DPKG_OUTPUT).packages == [
        ("bash", "5.2.15-2+b2", "amd64"),
        ("tzdata", "2024a-0+deb12u1", "all"),
        ("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
    ]


def test_parse_dpkg_keeps_multiarch_copies():
    output = "ii \tlibc6\t2.36-9\tamd64\nii \tlibc6\t2.36-9\ti386\n"
    expected = [("libc6", "2.36-9", "amd64"), ("libc6", "2.36-9", "i386")]
    assert parse_dpkg(output).packages == expected


def test_parse_dpkg_empty():
    assert parse_dpkg("") == Inventory([])


def test_parse_dpkg_keeps_held_packages():
    output = "hi \tlinux-image-amd64\t6.1.76-1\tamd64\nii \tbash\t5.2\tamd64\n"
    assert parse_dpkg(output).packages == [
        ("bash", "5.2", "amd64"),
        ("linux-image-amd64", "6.1.76-1", "amd64"),
    ]


def test_parse_rpm_drops_a_zero_epoch_only():
    assert parse_rpm(RPM_OUTPUT).packages == [
        ("bash", "5.1.8-9.el9", "x86_64"),
        ("gpg-pubkey", "fd431d51-4ae0493b", "(none)"),
        ("kernel", "10:5.14.0-427.el9", "x86_64"),
        ("openssl-libs", "1:3.0.7-27.el9", "x86_64"),
    ]


def test_parse_rpm_empty():
    assert parse_rpm("") == Inventory([])


class FakeRunner:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(list(argv))
        return Result(list(argv), 0, self.stdout, "")


def test_installed_apt_runs_dpkg_query():
    runner = FakeRunner(DPKG_OUTPUT)
    assert installed("apt", runner) == parse_dpkg(DPKG_OUTPUT).packages
    assert runner.calls == [DPKG_QUERY]
    assert runner.calls[0][0] == "dpkg-query"


def test_installed_dnf_runs_rpm():
    runner = FakeRunner(RPM_OUTPUT)
    assert installed("dnf", runner) == parse_rpm(RPM_OUTPUT).packages
    assert runner.calls == [RPM_QUERY]
    assert runner.calls[0][0] == "rpm"


def test_installed_without_a_package_manager_runs_nothing():
    runner = FakeRunner("")
    assert installed("", runner) == []
    assert runner.calls == []


@pytest.mark.parametrize("manager", ["zypper", "APT", "yum", " apt"])
def test_installed_unknown_manager(manager):
    runner = FakeRunner("")
    with pytest.raises(ConfigError, match=f"unknown package manager {manager!r}"):
        installed(manager, runner)
    assert runner.calls == []


def test_installed_passes_on_a_failed_query():
    def failing(argv: Sequence[str]) -> Result:
        raise CommandFailed(argv, 2, "", "dpkg-query: error: database locked")

    with pytest.raises(CommandFailed, match="dpkg-query exited with 2: dpkg-query: error"):
        installed("apt", failing)


def test_query_formats_match_the_parsers():
    """The queries print exactly the tab-separated fields the parsers read."""
    assert DPKG_QUERY[-1].count("\t") == 5
    assert DPKG_QUERY[-1].endswith("\n")
    assert RPM_QUERY[-1].count("\t") == 3
    assert "%{EPOCHNUM}:" in RPM_QUERY[-1]


def test_dpkg_sources_kept_where_they_differ():
    """libssl3 is built from openssl; a binNMU (+b1) from an older source
    version; bash from bash at its own version: not listed."""
    output = (
        "ii \tlibssl3\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1\n"
        "ii \tbash\t5.2.15-2+b2\tamd64\tbash\t5.2.15-2\n"
        "ii \topenssl\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1\n"
        "ii \ttzdata\t2024a-0+deb12u1\tall\t\t\n"
    )
    found = parse_dpkg(output)
    assert len(found.packages) == 4
    assert found.sources == {
        "libssl3": ("openssl", "3.0.15-1~deb12u1"),
        "bash": ("bash", "5.2.15-2"),
    }


def test_rpm_sources_read_from_the_source_rpm_name():
    output = (
        "openssl-libs\t1:3.0.7-27.el9\tx86_64\topenssl-3.0.7-27.el9.src.rpm\n"
        "openssl\t1:3.0.7-27.el9\tx86_64\topenssl-3.0.7-27.el9.src.rpm\n"
        "gpg-pubkey\t0:fd431d51-4ae0493b\t(none)\t(none)\n"
    )
    found = parse_rpm(output)
    assert found.sources == {"openssl-libs": ("openssl", "1:3.0.7-27.el9")}


def test_take_inventory_of_a_real_dpkg_database():
    """dpkg-query on this (Debian) machine: libc6 comes from glibc."""
    import shutil

    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query is not installed here")
    found = take_inventory("apt")
    names = {name for name, _, _ in found.packages}
    assert "libc6" in names
    assert found.sources["libc6"][0] == "glibc"
