"""The inventory hash both ends compute, so a host can send only the hash
when nothing changed and the controller can check a full inventory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

# Binary package name -> (source package, source version), for the packages
# whose source differs from them in name or version.
Sources = Mapping[str, tuple[str, str]]


def inventory_hash(packages: Iterable[tuple[str, str, str]], sources: Sources | None = None) -> str:
    """``sha256:<hex>`` over the sorted ``name, version, arch`` triples, each
    followed by its source package and version where ``sources`` has one
    (so an inventory without sources hashes as it always did)."""
    sources = sources or {}
    lines = [
        f"{name}\t{version}\t{arch}\t{source[0]}\t{source[1]}\n"
        if (source := sources.get(name)) else f"{name}\t{version}\t{arch}\n"
        for name, version, arch in sorted(packages)
    ]  # fmt: skip
    # Hashed at once: a third of the time of one update per line.
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


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
