"""Plain-text output shared by the two CLIs: aligned tables, ages, sizes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None
) -> None:
    """Print rows under headers, columns aligned, two spaces apart."""
    out = out or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def ago(when: datetime | None, now: datetime) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``never`` for None."""
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(doc, out, indent=2, sort_keys=True, default=str)
    out.write("\n")


def rfc3339(at: datetime | None) -> str | None:
    """An aware datetime as the CLIs' JSON writes times: RFC 3339 in UTC
    with Z; None stays None (null)."""
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def nulls(doc: Any) -> Any:
    """``doc`` with every empty string as None: the CLIs' JSON writes a
    missing value as null, never as ""."""
    if isinstance(doc, dict):
        return {k: nulls(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [nulls(v) for v in doc]
    return None if doc == "" else doc


class AvailableUpdate(Protocol):
    """An update as the agent's scan and the controller's wire both spell it."""

    @property
    def name(self) -> str: ...

    @property
    def installed(self) -> str: ...

    @property
    def candidate(self) -> str: ...

    @property
    def origin(self) -> str: ...

    @property
    def security(self) -> bool: ...

    @property
    def severity(self) -> str: ...

    @property
    def reboot(self) -> bool: ...


def updates_table(found: Sequence[AvailableUpdate], out: TextIO | None = None) -> None:
    """The updates available to a host, one row each (`fleetpatch-agent
    scan`, `fleetpatch hosts show`)."""
    table(
        ["PACKAGE", "INSTALLED", "CANDIDATE", "FROM", "SECURITY", "REBOOT"],
        [(u.name, u.installed, u.candidate, u.origin,
          (u.severity or "yes") if u.security else "-", "yes" if u.reboot else "-")
         for u in found],
        out,
    )  # fmt: skip
