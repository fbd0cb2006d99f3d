"""Which upgradable packages have a pending security fix, read from
`apt-cache policy`.

A package has one when any security source offers a version newer than the
installed one, whatever suite apt's candidate comes from: with
openssh-server 1:9.2p1-2+deb12u7 installed, deb12u9 in bookworm-security
and deb12u10 (a point release, which contains the fix) in bookworm, the
candidate's origin says "bookworm", yet the host is exposed until it
upgrades. Judging by the candidate's origin misses exactly these.

`apt-cache policy` (no package) lists each package file with its release
(``a=`` archive, ``n=`` codename, ``l=`` label); `apt-cache policy NAME...`
lists each package's versions, newest first, the installed one marked
``***``, each with the package files that offer it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_PACKAGE = re.compile(r"^(\S+):$")
_VERSION = re.compile(r"^ (?:\*\*\*| {3}) (\S+) -?\d+$")
_SOURCE = re.compile(r"^ {8}-?\d+ (.+)$")
_FILE = re.compile(r"^ -?\d+ (.+)$")
_RELEASE = re.compile(r"^ {5}release (.*)$")


def releases(policy: str) -> dict[str, dict[str, str]]:
    """Package file (as `apt-cache policy` names it) -> its release fields,
    from the output of `apt-cache policy` without a package."""
    found: dict[str, dict[str, str]] = {}
    current = None
    for line in policy.splitlines():
        if m := _FILE.match(line):
            current = m.group(1).strip()
            found[current] = {}
        elif (m := _RELEASE.match(line)) and current is not None:
            for field in m.group(1).split(","):
                key, sep, value = field.partition("=")
                if sep:
                    found[current][key.strip()] = value.strip()
    return found


def is_security(source: str, release: Mapping[str, str]) -> bool:
    """Whether a package file is a security archive: its release's archive
    or codename ends in -security, or its label names security (Debian,
    Ubuntu, derivatives); without release fields, its suite does."""
    suites = [release.get("a", ""), release.get("n", "")]
    if not any(suites) and not release.get("l"):
        parts = source.split()
        suites = [parts[1].split("/")[0]] if len(parts) > 1 else []
    return (
        any(s.endswith("-security") for s in suites) or "security" in release.get("l", "").lower()
    )


def with_security_fix(
    versions: str, files: Mapping[str, Mapping[str, str]], names: Iterable[str]
) -> set[str]:
    """Those of ``names`` with a version newer than the installed one from a
    security source, from the output of `apt-cache policy NAME...`."""
    wanted = set(names)
    fixed: set[str] = set()
    package: str | None = None
    newer = False  # still above the installed version in this package's table
    for line in versions.splitlines():
        if m := _PACKAGE.match(line):
            package, newer = m.group(1), True
        elif m := _VERSION.match(line):
            newer = newer and not line.startswith(" ***")
        elif (m := _SOURCE.match(line)) and package in wanted and newer:
            source = m.group(1).strip()
            if is_security(source, files.get(source, {})):
                fixed.add(package)
    return fixed
