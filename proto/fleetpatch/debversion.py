"""PEP 440 versions (what ``fleetpatch.__version__`` says) and the Debian
versions of the packages that carry them, both ways.

The packages are built with `debian_version`; an agent updating itself
checks the package it was handed with it, and the controller names a
published package's release with `pep440_version`. Only the spellings we
package are accepted: releases, pre-, post- and dev-releases, sorting in
Debian exactly as in PEP 440:

    1.2.0 -> 1.2.0; 1.2.0rc1 -> 1.2.0~rc1; 1.2.0.dev3 -> 1.2.0~~dev3
    (before every pre-release); 1.2.0rc1.dev3 -> 1.2.0~rc1~dev3;
    1.2.0.post1 -> 1.2.0+post1; 1.2.0.post1.dev2 -> 1.2.0+post1~dev2.

The RPM's Version is the Debian one with rpm's post-release mark, `^`, for
`+` (`rpm_version`): `~` sorts before a release in both, and rpm sorts
`^` after the release it follows and before the next one, as Debian `+`.
"""

from __future__ import annotations

import re

PEP440 = re.compile(
    r"^(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:(?P<pre>a|b|rc)(?P<pre_n>[0-9]+))?"
    r"(?:\.post(?P<post>[0-9]+))?"
    r"(?:\.dev(?P<dev>[0-9]+))?$"
)
DEBIAN = re.compile(
    r"^(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:~(?P<pre>a|b|rc)(?P<pre_n>[0-9]+))?"
    r"(?:\+post(?P<post>[0-9]+))?"
    r"(?:~~?dev(?P<dev>[0-9]+))?$"
)


def debian_version(version: str) -> str:
    """The Debian version of a PEP 440 version; ValueError for other spellings."""
    match = PEP440.fullmatch(version)
    if match is None:
        raise ValueError(
            f"version {version!r} is not a release, pre-, post- or dev-release "
            "we can package (e.g. 1.2.0, 1.2.0rc1, 1.2.0.post1, 1.2.0.dev3)"
        )
    out = match["release"]
    if match["pre"]:
        out += f"~{match['pre']}{match['pre_n']}"
    if match["post"]:
        out += f"+post{match['post']}"
    if match["dev"]:
        out += ("~" if match["pre"] or match["post"] else "~~") + f"dev{match['dev']}"
    return out


def version_key(version: str) -> tuple[object, ...]:
    """A sort key ordering our PEP 440 versions as PEP 440 does (1.0.dev1 <
    1.0a1 < 1.0rc1 < 1.0 == 1.0.0 < 1.0.post1 < 1.0.1); ValueError for
    other spellings."""
    match = PEP440.fullmatch(version)
    if match is None:
        raise ValueError(f"{version!r} is not a version (e.g. 1.2.0, 1.2.0rc1, 1.2.0.post1)")
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    ranks = {"a": 0, "b": 1, "rc": 2}
    if match["pre"]:
        pre: tuple[int, ...] = (0, ranks[match["pre"]], int(match["pre_n"]))
    elif match["dev"] and not match["post"]:
        pre = (-1,)  # 1.0.dev1 comes before 1.0a1
    else:
        pre = (1,)
    post = (0, int(match["post"])) if match["post"] else (-1,)
    dev = (0, int(match["dev"])) if match["dev"] else (1,)
    return (tuple(release), pre, post, dev)


def pep440_version(debian: str) -> str:
    """The PEP 440 version a `debian_version` came from; ValueError for a
    Debian version it cannot have made."""
    match = DEBIAN.fullmatch(debian)
    if match is None:
        raise ValueError(f"{debian!r} is not the Debian version of a fleetpatch release")
    out = match["release"]
    if match["pre"]:
        out += f"{match['pre']}{match['pre_n']}"
    if match["post"]:
        out += f".post{match['post']}"
    if match["dev"]:
        out += f".dev{match['dev']}"
    if debian_version(out) != debian:  # e.g. "~dev" where "~~dev" belongs
        raise ValueError(f"{debian!r} is not the Debian version of a fleetpatch release")
    return out


def rpm_version(debian: str) -> str:
    """The RPM Version of a package whose Debian version is ``debian``."""
    return debian.replace("+", "^")


def pep440_of_rpm(version: str) -> str:
    """The PEP 440 version an RPM Version (`rpm_version`) came from;
    ValueError for one it cannot have made."""
    if "+" in version:
        raise ValueError(f"{version!r} is not the RPM version of a fleetpatch release")
    try:
        return pep440_version(version.replace("^", "+"))
    except ValueError:
        raise ValueError(f"{version!r} is not the RPM version of a fleetpatch release") from None
