"""One key for a distribution release, whether it comes from a host's facts
(os-release) or a feed (a Debian codename, an OSV ecosystem): ``debian:12``,
``ubuntu:24.04``, ``almalinux:9``, ``rocky:9``. Exposure is only looked
for where the two agree."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Debian's codenames, as the Security Tracker names releases.
DEBIAN_CODENAMES = {
    "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13",
    "forky": "14", "duke": "15",
}  # fmt: skip

# OSV ecosystem name -> our distribution id (os-release ID).
OSV_ECOSYSTEMS = {
    "Debian": "debian",
    "Ubuntu": "ubuntu",
    "AlmaLinux": "almalinux",
    "Rocky Linux": "rocky",
}

# Distributions whose packages are dpkg's (source packages, dpkg versions);
# the others are rpm's (binary packages, rpm versions).
DPKG_DISTROS = frozenset({"debian", "ubuntu"})
RPM_DISTROS = frozenset({"almalinux", "rocky"})


def family(release: str) -> str:
    """``dpkg`` or ``rpm``: how a release's versions compare and whether its
    feeds name source or binary packages."""
    return "dpkg" if release.partition(":")[0] in DPKG_DISTROS else "rpm"


def os_family(os: str) -> str:
    """`family` of a host as its exposures name its os ("debian 12")."""
    return family(os.partition(" ")[0])


def host_release(facts: Mapping[str, object]) -> str | None:
    """The release of a host from its facts (os_id, os_version); None for
    a distribution no feed covers."""
    os_id = str(facts.get("os_id", "")).lower()
    version = str(facts.get("os_version", ""))
    if not version:
        return None
    if os_id == "debian":
        return f"debian:{version.partition('.')[0]}"
    if os_id == "ubuntu":
        return f"ubuntu:{version}"
    if os_id in RPM_DISTROS:
        return f"{os_id}:{version.partition('.')[0]}"
    return None


def osv_release(ecosystem: str) -> str | None:
    """The release an OSV ecosystem names (``Debian:12``, ``Ubuntu:22.04:LTS``,
    ``Rocky Linux:9``); None when it names no release we match: a bare
    ``Debian`` or an Ubuntu Pro (ESM) stream, whose fixes ordinary hosts
    cannot install. Raises ValueError for an ecosystem we do not read."""
    name, _, rest = ecosystem.partition(":")
    distro = OSV_ECOSYSTEMS.get(name)
    if distro is None:
        known = ", ".join(OSV_ECOSYSTEMS)
        raise ValueError(f"ecosystem {ecosystem!r} is not one fleetpatch matches ({known})")
    parts = [p for p in rest.split(":") if p]
    if not parts or parts[0] == "Pro":
        return None
    version = parts[0]
    if distro in RPM_DISTROS or distro == "debian":
        version = version.partition(".")[0]
    return f"{distro}:{version}"


def tracker_release(codename: str) -> str | None:
    """The release a Debian Security Tracker codename names; None for sid
    and codenames we do not know (no host runs them as a release)."""
    number = DEBIAN_CODENAMES.get(codename)
    return f"debian:{number}" if number else None


def binaries_for(
    family_name: str, package: str, rows: Sequence[Sequence[str]]
) -> list[tuple[str, str]]:
    """The installed packages (name, version) that feed package ``package``
    stands for, from stored inventory rows (name, version, arch[, source,
    source version]): on dpkg every binary built from that source, on rpm
    the package itself."""
    by_source = family_name == "dpkg"
    return sorted({
        (row[0], row[1]) for row in rows
        if (row[3] if by_source and len(row) >= 5 else row[0]) == package
    })  # fmt: skip


def follows_source(binary_version: str, source_version: str) -> bool:
    """Whether a binary's version is its source's (or a rebuild of it,
    ``+bN``): once the source is fixed, the binary is at the fixed version
    or above, so the fixed version can be asked of it as a minimum."""
    return re.fullmatch(re.escape(source_version) + r"(\+b\d+)?", binary_version) is not None
