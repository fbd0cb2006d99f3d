"""Version comparison for vulnerability matching (controller/vulns/versions.py),
held to the package managers' own: `dpkg --compare-versions` and rpm's
vercmp, run for real on every pair."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from controller.vulns.versions import BadVersion, affected, compare, valid

DPKG_PAIRS = [
    ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1"),
    ("3.0.15-1~deb12u1", "3.0.15-1"),  # a stable update sorts before the unstable upload
    ("1:1.2.13.dfsg-1", "1.3-1"),  # the epoch wins
    ("2.36-9+deb12u10", "2.36-9+deb12u3"),  # numbers, not strings
    ("1.0~rc1-1", "1.0-1"),
    ("1.0-1", "1.0-1+b1"),  # a binNMU follows its source
    ("5.2.15-2+b7", "5.2.15-2"),
    ("1.2.3", "1.2.3-0"),
    ("0.9.8zh-1", "0.9.8-1"),
    ("1:9.6p1-3ubuntu13.3", "1:9.6p1-3ubuntu13.10"),
]
RPM_PAIRS = [
    ("1:3.0.7-25.el9_3", "1:3.0.7-27.el9"),
    ("3.0.7-27.el9", "1:3.0.7-1.el9"),  # no epoch is epoch 0
    ("1.1.1k-12.el8_9", "1.1.1k-9.el8_7"),
    ("2.4.57-5.el9", "2.4.57-5.el9_1"),
    ("5.14.0-427.el9", "5.14.0-70.el9"),
    ("1.0~rc1-1", "1.0-1"),
    ("1.0^post1-1", "1.0-1"),
    ("1.0a-1", "1.0-1"),
]


def _dpkg(a: str, b: str) -> int:
    for op, result in (("lt", -1), ("eq", 0), ("gt", 1)):
        done = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False)
        if done.returncode == 0:
            return result
    raise AssertionError(f"dpkg cannot compare {a} and {b}")


def _rpm(a: str, b: str) -> int:
    def evr(v: str) -> str:
        return v if ":" in v else f"0:{v}"

    done = subprocess.run(
        ["rpm", "--eval", f"%{{lua: print(rpm.vercmp('{evr(a)}', '{evr(b)}'))}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout.strip())


@pytest.mark.parametrize(("a", "b"), DPKG_PAIRS)
def test_dpkg_order_is_dpkgs(a, b):
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is not installed here")
    expected = _dpkg(a, b)
    assert compare("dpkg", a, b) == expected
    assert compare("dpkg", b, a) == -expected


@pytest.mark.parametrize(("a", "b"), RPM_PAIRS)
def test_rpm_order_is_rpms(a, b):
    if shutil.which("rpm") is None:
        pytest.skip("rpm is not installed here (make deps installs it)")
    expected = _rpm(a, b)
    assert compare("rpm", a, b) == expected
    assert compare("rpm", b, a) == -expected


def test_affected_ranges():
    assert affected("dpkg", "3.0.11-1", "", "3.0.15-1")
    assert not affected("dpkg", "3.0.15-1", "", "3.0.15-1")  # the fixed version is not affected
    assert affected("dpkg", "9.9-1", "", "")  # no fix yet: every version
    assert not affected("dpkg", "1.0-1", "2.0-1", "")  # before it was introduced
    assert affected("rpm", "1:3.0.7-25.el9", "0", "1:3.0.7-27.el9")


def test_bad_versions_are_said():
    assert not valid("dpkg", "not a version!")
    assert not valid("rpm", "")
    with pytest.raises(BadVersion, match="not a dpkg version"):
        compare("dpkg", "1.0", "a b c")
