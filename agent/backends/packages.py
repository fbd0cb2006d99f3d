"""The installed package list, asked of the real package manager."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.backends import subp
from agent.errors import ConfigError

Package = tuple[str, str, str]  # name, version, arch
Runner = Callable[[Sequence[str]], subp.Result]

DPKG_QUERY = [
    "dpkg-query",
    "--show",
    "--showformat",
    "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}"
    "\t${source:Package}\t${source:Version}\n",
]
RPM_QUERY = [
    "rpm",
    "--query",
    "--all",
    "--queryformat",
    "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n",
]


@dataclass(frozen=True)
class Inventory:
    """The installed packages, sorted, and for those built from a source
    package of another name or version, that source (binary name ->
    (source, source version)): vulnerability feeds of Debian and Ubuntu
    name source packages."""

    packages: list[Package]
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)


def is_installed(status_abbrev: str) -> bool:
    """Whether a dpkg ``${db:Status-Abbrev}`` says the package is installed."""
    return status_abbrev[1:2] == "i"


def parse_dpkg(output: str) -> Inventory:
    """Installed packages from DPKG_QUERY output.

    Only fully installed ones count (the second letter of the status is
    ``i``: ``ii``, or ``hi`` on hold, ``ri`` marked for removal); a package
    left half-configured or only with its config files is not installed.
    """
    found = []
    sources: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) not in (4, 6) or not is_installed(parts[0]):
            continue
        name, version, arch = parts[1:4]
        found.append((name, version, arch))
        source, source_version = parts[4:6] if len(parts) == 6 else ("", "")
        source, source_version = source or name, source_version or version
        if (source, source_version) != (name, version):
            sources[name] = (source, source_version)
    return Inventory(sorted(found), sources)


def parse_rpm(output: str) -> Inventory:
    """Installed packages from RPM_QUERY output; a zero epoch is dropped,
    as rpm and dnf print versions. The source is read from the package's
    source rpm file name (``openssl-3.0.7-27.el9.src.rpm``)."""
    found = []
    sources: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) not in (3, 4):
            continue
        name, version, arch = parts[:3]
        version = version.removeprefix("0:")
        found.append((name, version, arch))
        source = _source_rpm(parts[3], version) if len(parts) == 4 else None
        if source is not None and source != (name, version):
            sources[name] = source
    return Inventory(sorted(found), sources)


def _source_rpm(filename: str, version: str) -> tuple[str, str] | None:
    """(name, [epoch:]version-release) of a source rpm file name, with the
    binary's epoch; None for ``(none)`` and names that do not read."""
    stem = filename.removesuffix(".src.rpm").removesuffix(".nosrc.rpm")
    name, _, rest = stem.rpartition("-")
    name, _, upstream = name.rpartition("-")
    if stem == filename or not name or not upstream or not rest:
        return None
    epoch = version.partition(":")[0] + ":" if ":" in version else ""
    return name, f"{epoch}{upstream}-{rest}"


def take_inventory(manager: str, run: Runner = subp.run) -> Inventory:
    """The installed packages with their sources; raises ConfigError for an
    unknown package manager and CommandFailed when the query fails."""
    if manager == "apt":
        return parse_dpkg(run(DPKG_QUERY).stdout)
    if manager == "dnf":
        return parse_rpm(run(RPM_QUERY).stdout)
    if manager == "":
        return Inventory([])
    raise ConfigError(f"unknown package manager {manager!r}")


def installed(manager: str, run: Runner = subp.run) -> list[Package]:
    """The installed packages, sorted (`take_inventory` without sources)."""
    return take_inventory(manager, run).packages
