"""The installed package list, asked of the real package manager."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.backends import subp
from agent.errors import ConfigError

Package = tuple[str, str, str]  # name, version, arch
Runner = Callable[[Sequence[str]], subp.Result]

DPKG_QUERY = [
    "dpkg-query",
    "--show",
    "--showformat",
    "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
]
RPM_QUERY = [
    "rpm",
    "--query",
    "--all",
    "--queryformat",
    "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n",
]


def is_installed(status_abbrev: str) -> bool:
    """Whether a dpkg ``${db:Status-Abbrev}`` says the package is installed."""
    return status_abbrev[1:2] == "i"


def parse_dpkg(output: str) -> list[Package]:
    """Installed packages from DPKG_QUERY output.

    Only fully installed ones count (the second letter of the status is
    ``i``: ``ii``, or ``hi`` on hold, ``ri`` marked for removal); a package
    left half-configured or only with its config files is not installed.
    """
    found = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not is_installed(parts[0]):
            continue
        _, name, version, arch = parts
        found.append((name, version, arch))
    return sorted(found)


def parse_rpm(output: str) -> list[Package]:
    """Installed packages from RPM_QUERY output; a zero epoch is dropped,
    as rpm and dnf print versions."""
    found = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, version, arch = parts
        found.append((name, version.removeprefix("0:"), arch))
    return sorted(found)


def installed(manager: str, run: Runner = subp.run) -> list[Package]:
    """The installed packages, sorted; raises ConfigError for an unknown
    package manager and CommandFailed when the query fails."""
    if manager == "apt":
        return parse_dpkg(run(DPKG_QUERY).stdout)
    if manager == "dnf":
        return parse_rpm(run(RPM_QUERY).stdout)
    if manager == "":
        return []
    raise ConfigError(f"unknown package manager {manager!r}")
