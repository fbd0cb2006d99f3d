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
