"""The inventory hash both ends compute, so a host can send only the hash
when nothing changed and the controller can check a full inventory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def inventory_hash(packages: Iterable[tuple[str, str, str]]) -> str:
    """``sha256:<hex>`` over the sorted ``name, version, arch`` triples."""
    digest = hashlib.sha256()
    for name, version, arch in sorted(packages):
        digest.update(f"{name}\t{version}\t{arch}\n".encode())
    return "sha256:" + digest.hexdigest()


# The fields of one available update, in the order `updates_hash` reads them
# (types.proto AvailableUpdate, without its numbers).
UPDATE_FIELDS = (
    "name", "arch", "installed", "candidate", "origin", "security", "severity", "advisory",
    "reboot",
)  # fmt: skip


def updates_hash(updates: Iterable[tuple[object, ...]]) -> str:
    """``sha256:<hex>`` over the sorted updates (rows of UPDATE_FIELDS), so
    a host sends its list of available updates only when it changed."""
    digest = hashlib.sha256()
    for row in sorted("\t".join(str(v) for v in u) for u in updates):
        digest.update(f"{row}\n".encode())
    return "sha256:" + digest.hexdigest()
