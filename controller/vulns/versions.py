"""Package versions compared by each distribution's own rules: dpkg's for
Debian and Ubuntu (epochs, ``~`` before anything), rpm's for AlmaLinux and
Rocky Linux (epoch:version-release, rpmvercmp). The comparisons are those of
`univers`; tests/unit/test_vuln_versions.py holds them to dpkg
--compare-versions and rpm's own vercmp.

A fleet has few distinct (installed, fixed) pairs, so results are cached."""

from __future__ import annotations

from functools import lru_cache

from univers.versions import DebianVersion, RpmVersion, Version


class BadVersion(ValueError):
    """A version string its distribution's rules cannot read."""


@lru_cache(maxsize=1 << 18)
def compare(family: str, a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than
    ``b`` by ``family``'s rules (``dpkg`` or ``rpm``). Raises BadVersion."""
    if a == b:
        return 0
    kind: type[Version] = DebianVersion if family == "dpkg" else RpmVersion
    try:
        left, right = kind(a), kind(b)
    except Exception as exc:  # univers raises several kinds for bad input
        raise BadVersion(f"not a {family} version: {a!r} or {b!r} ({exc})") from None
    return -1 if left < right else (1 if left > right else 0)


def valid(family: str, version: str) -> bool:
    """Whether ``version`` reads as a ``family`` version."""
    try:
        (DebianVersion if family == "dpkg" else RpmVersion)(version)
    except Exception:
        return False
    return True


def affected(family: str, installed: str, introduced: str, fixed: str) -> bool:
    """Whether ``installed`` lies in [introduced, fixed): an empty or ``0``
    introduced means from the first version, an empty fixed means no fix
    yet. Raises BadVersion."""
    if introduced not in ("", "0") and compare(family, installed, introduced) < 0:
        return False
    return fixed == "" or compare(family, installed, fixed) < 0
