"""Agent packages by family (fleetpatch.agentrelease) and the RPM spelling
of our versions (fleetpatch.debversion.rpm_version), whose order is checked
against rpm's own comparison."""

from __future__ import annotations

import functools
import shutil

import pytest
from fleetpatch.agentrelease import Family, family_of, parse_artifact
from fleetpatch.debversion import debian_version, pep440_of_rpm, rpm_version
from hypothesis import given

from agent.backends.dnf import rpm_vercmp
from tests.unit.test_debversion import ORDERED, versions


@given(versions)
def test_rpm_round_trip(version):
    assert pep440_of_rpm(rpm_version(debian_version(version))) == version


@pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm is not installed (Debian package rpm)")
def test_rpm_orders_our_rpm_versions_as_pep440():
    spelled = [rpm_version(debian_version(v)) for v in ORDERED]
    by_rpm = sorted(spelled[::-1], key=functools.cmp_to_key(rpm_vercmp))
    assert by_rpm == spelled


@pytest.mark.parametrize(
    ("name", "family", "version", "package_version", "arch"),
    [
        ("fleetpatch-agent_1.2.0~rc1_amd64.deb", Family.DEB, "1.2.0rc1", "1.2.0~rc1", "amd64"),
        ("fleetpatch-agent-1.2.0^post1-1.x86_64.rpm", Family.RPM, "1.2.0.post1", "1.2.0^post1",
         "x86_64"),
        ("fleetpatch-agent-1.2.0~~dev3-1.noarch.rpm", Family.RPM, "1.2.0.dev3", "1.2.0~~dev3",
         "noarch"),
    ],
)  # fmt: skip
def test_an_agent_package_names_its_family_and_version(name, family, version, package_version,
                                                        arch):  # fmt: skip
    found = parse_artifact(name)
    assert (found.family, found.version, found.package_version, found.arch) == (
        family, version, package_version, arch,
    )  # fmt: skip
    assert family.package_version(version) == package_version


@pytest.mark.parametrize(
    "name",
    [
        "fleetpatch-agent-1.2.0+post1-1.x86_64.rpm",  # the Debian spelling in an RPM
        "fleetpatch-agent_1.2.0^post1_amd64.deb",
        "fleetpatch-agent-1.2.0.x86_64.rpm",  # no release
        "fleetpatch-controller-1.2.0-1.x86_64.rpm",
        "fleetpatch-agent_1.2.0_amd64.tar",
        "../fleetpatch-agent_1.2.0_amd64.deb",
    ],
)
def test_other_names_are_refused(name):
    with pytest.raises(ValueError, match="fleetpatch-agent"):
        parse_artifact(name)


def test_a_host_family_comes_from_its_package_manager():
    assert Family.of_manager("apt") is Family.DEB
    assert Family.of_manager("dnf") is Family.RPM
    assert Family.of_manager("") is None
    assert Family.of_manager("zypper") is None
    assert family_of("x.rpm") is Family.RPM
    assert family_of("x.deb") is Family.DEB
    assert family_of("x.tar") is None
