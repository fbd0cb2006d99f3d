"""Agent packages by family: what a released agent package is called, which
package family (and so which hosts) it is for, and which version it carries.

One agent version is released as a .deb (apt hosts) and an .rpm (dnf hosts),
both listed in the release's one signed SHA256SUMS. The controller names a
published package's version and family from its file name
(`parse_artifact`); an agent-update order hands each host the package of
its own family, and the agent refuses any other (`Family.of_manager`), then
checks the package's own name and version fields against the order.

    fleetpatch-agent_<debian version>_<arch>.deb
    fleetpatch-agent-<rpm version>-<release>.<arch>.rpm

Errors are ValueError naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from fleetpatch.debversion import debian_version, pep440_of_rpm, pep440_version, rpm_version
from fleetpatch.orderspec import AGENT_PACKAGE


class Family(StrEnum):
    """A package family; the values are stored (agent_releases.family)."""

    DEB = "deb"
    RPM = "rpm"

    @classmethod
    def of_manager(cls, manager: str) -> Family | None:
        """The family a host's package manager (its facts) installs."""
        return _MANAGERS.get(manager)

    def package_version(self, version: str) -> str:
        """The package's own version field (Debian Version, RPM Version)
        for a PEP 440 version; ValueError for one we do not package."""
        debian = debian_version(version)
        return debian if self is Family.DEB else rpm_version(debian)

    def pep440(self, package_version: str) -> str:
        """The PEP 440 version a package version field says; ValueError."""
        return (
            pep440_version(package_version)
            if self is Family.DEB
            else pep440_of_rpm(package_version)
        )


_MANAGERS = {"apt": Family.DEB, "dnf": Family.RPM}
_NAMES = {
    Family.DEB: re.compile(rf"^{AGENT_PACKAGE}_(?P<version>[^_/\\\s]+)_(?P<arch>[a-z0-9]+)\.deb$"),
    Family.RPM: re.compile(
        rf"^{AGENT_PACKAGE}-(?P<version>[^-/\\\s]+)-(?P<release>[^-/\\\s]+)"
        r"\.(?P<arch>[a-z0-9_]+)\.rpm$"
    ),
}
SPELLINGS = (
    f"{AGENT_PACKAGE}_<debian version>_<arch>.deb or "
    f"{AGENT_PACKAGE}-<rpm version>-<release>.<arch>.rpm"
)


@dataclass(frozen=True)
class Artifact:
    """What an agent package's file name says."""

    family: Family
    version: str  # PEP 440
    package_version: str  # the Debian or RPM Version field
    arch: str


def family_of(name: str) -> Family | None:
    """The family a file name's suffix says, without checking the rest."""
    if name.endswith(".deb"):
        return Family.DEB
    if name.endswith(".rpm"):
        return Family.RPM
    return None


def parse_artifact(name: str) -> Artifact:
    """The agent package a file name names; ValueError for any other name."""
    family = family_of(name)
    found = _NAMES[family].fullmatch(name) if family is not None else None
    if family is None or found is None:
        raise ValueError(f"{name!r} is not an agent package name ({SPELLINGS})")
    try:
        version = family.pep440(found["version"])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return Artifact(family, version, found["version"], found["arch"])
