"""The agent's quick repack against dpkg-repack, on real installed Debian
packages of this machine (read only: both build into a temporary dir)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.backends import repack
from agent.backends.apt import Apt, deb_fields

pytestmark = pytest.mark.root

# Packages with maintainer scripts, conffiles, directories, symlinks and
# setuid files between them, all Priority: required or important (on any
# Debian host).
PACKAGES = ("adduser", "login", "debianutils", "tzdata")


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("repacking keeps file owners: needs root")
    if shutil.which("dpkg-repack") is None:
        pytest.skip("dpkg-repack is not installed (make deps installs it)")


def _contents(deb: Path) -> list[tuple[str, ...]]:
    """Every member: mode, owner, size, path (and link target), sorted."""
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    rows = []
    for line in listing.splitlines():
        mode, owner, size, _date, _time, path, *link = line.split(maxsplit=6)
        rows.append((mode, owner, size, path.removeprefix("."), *link))
    return sorted(rows)


def _control_files(deb: Path, where: Path) -> dict[str, bytes]:
    subprocess.run(["dpkg-deb", "--control", str(deb), str(where)], check=True)
    return {p.name: p.read_bytes() for p in where.iterdir() if p.name != "control"}


@pytest.mark.parametrize("name", PACKAGES)
def test_the_quick_repack_builds_what_dpkg_repack_does(name, tmp_path):
    _need()
    version = Apt().versions([name])[name]
    ours = repack.repack(name, version, tmp_path)
    assert ours is not None
    theirs_dir = tmp_path / "dpkg-repack"
    theirs_dir.mkdir()
    subprocess.run(["dpkg-repack", name], cwd=theirs_dir, check=True, capture_output=True)
    [theirs] = theirs_dir.glob("*.deb")
    assert deb_fields(ours) == deb_fields(theirs)
    assert deb_fields(ours)["Version"] == version
    assert _contents(ours) == _contents(theirs)
    ours_control = _control_files(ours, tmp_path / "ours-control")
    theirs_control = _control_files(theirs, tmp_path / "theirs-control")
    assert ours_control.keys() == theirs_control.keys()
    for kind in ours_control.keys() - {"md5sums"}:  # dpkg-repack rewrites md5sums
        assert ours_control[kind] == theirs_control[kind], kind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repack-")]  # no stage left


def test_a_version_that_is_not_the_installed_one_is_not_repacked(tmp_path):
    _need()
    assert repack.repack("adduser", "0.0-not-installed", tmp_path) is None
    assert repack.repack("no-such-package-here", "1.0", tmp_path) is None
    assert list(tmp_path.iterdir()) == []
