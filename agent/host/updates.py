"""What this host could install: the updates available to it, scanned on
a schedule of their own and reported at check-in by hash, as the inventory
is. A scan refreshes the package lists and simulates; it never changes an
installed package.

Each update says whether its candidate fixes a security problem (apt: a
security archive offers a version newer than the installed one, the rule
of `aptpolicy`; dnf: an ``updateinfo`` advisory of type security, with its
severity) and whether installing it would call for a reboot: the kernel,
and the core userland a running system cannot swap under itself (the C
library, systemd, dbus, firmware and microcode), as `dnf needs-restarting
-r` counts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fleetpatch.inventory import UPDATE_FIELDS, updates_hash

from agent.host.needs import KERNEL_PACKAGE

# Besides kernels (`needs.KERNEL_PACKAGE`): what needs a reboot to take effect.
REBOOT_PACKAGE = re.compile(
    r"^(libc6|libc-bin|glibc|glibc-common|systemd|systemd-libs|systemd-sysv|libsystemd0|dbus"
    r"|dbus-broker|dbus-daemon|linux-firmware|firmware-.*|intel-microcode|amd64-microcode"
    r"|microcode_ctl)$"
)


@dataclass(frozen=True)
class Available:
    """One update this host could install."""

    name: str
    arch: str
    installed: str
    candidate: str
    origin: str  # the archive or repository it comes from
    security: bool
    severity: str = ""  # the advisory's, where the source gives one (dnf)
    advisory: str = ""  # its id (RHSA-2025:1234, ALSA-...), where known
    reboot: bool = False

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Available:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


def needs_reboot(name: str) -> bool:
    return bool(KERNEL_PACKAGE.match(name) or REBOOT_PACKAGE.match(name))


def digest(found: Iterable[Available]) -> str:
    """The hash both ends compute (`fleetpatch.inventory.updates_hash`)."""
    return updates_hash(tuple(getattr(u, f) for f in UPDATE_FIELDS) for u in found)


def to_json(updates: Sequence[Available]) -> list[dict[str, Any]]:
    return [asdict(u) for u in updates]


def from_json(doc: Sequence[dict[str, Any]]) -> list[Available]:
    return [Available.of(d) for d in doc]
