"""What every package backend (apt, dnf, the simulator's) offers the runner.

A backend plans before it acts, so the agent knows exactly which packages a
transaction will touch; keeps a copy of what it will replace, so a revert
needs no repository; and applies exactly the plan, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.errors import TransientError
from agent.orders.workorder import Target


class Busy(TransientError):
    """The package manager is locked by another process; nothing changed."""


class PlanError(Exception):
    """The order cannot be planned here (unknown package, version too old
    in the repositories, ...); nothing changed."""


@dataclass(frozen=True)
class Change:
    """One package in a plan or a result. An empty ``old`` means newly
    installed; an empty ``new`` means removed."""

    name: str
    arch: str
    old: str
    new: str
    origin: str = ""


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.changes]

    @classmethod
    def from_json(cls, doc: Sequence[dict[str, Any]]) -> Plan:
        return cls(tuple(Change(**c) for c in doc))


@dataclass(frozen=True)
class Saved:
    """A package version kept for revert: its .deb/.rpm in the agent cache."""

    name: str
    arch: str
    version: str
    path: str


@dataclass(frozen=True)
class Snapshot:
    saved: tuple[Saved, ...]  # packages the plan upgrades or removes
    new: tuple[str, ...]  # packages the plan installs anew

    def to_json(self) -> dict[str, Any]:
        return {"saved": [asdict(s) for s in self.saved], "new": list(self.new)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Snapshot:
        return cls(tuple(Saved(**s) for s in doc["saved"]), tuple(doc["new"]))


def check_minimums(
    targets: Sequence[Target],
    changes: Sequence[Change],
    versions: Callable[[Sequence[str]], dict[str, str]],
    at_least: Callable[[str, str], bool],
) -> None:
    """Raise PlanError unless every target with a minimum version ends at or
    above it: at its planned version, or, when not in the plan, as installed.
    ``at_least(version, minimum)`` is the package manager's own comparison."""
    planned = {c.name: c.new for c in changes}
    wanted = [t for t in targets if t.min_version]
    installed = versions([t.name for t in wanted])
    for target in wanted:
        result = planned.get(target.name) or installed.get(target.name, "")
        if not result:
            raise PlanError(f"{target.name} is not installed on this host")
        if not at_least(result, target.min_version):
            raise PlanError(
                f"{target.name}: the repositories offer {result}, "
                f"below the required {target.min_version}"
            )


class PackageBackend(Protocol):
    name: str

    def recover(self) -> None:
        """Finish or undo a transaction interrupted by a crash. Raises Busy."""

    def refresh(self) -> None:
        """Update package lists; raises CommandFailed (callers may go on)."""

    def plan(self, targets: Sequence[Target], all_security: bool, exclude: Sequence[str]) -> Plan:
        """What exactly would change. Raises PlanError, Busy."""

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        """Keep a copy of every version the plan replaces or removes."""

    def apply(self, plan: Plan) -> list[Change]:
        """Carry out exactly the plan. Raises Busy (nothing changed) or
        CommandFailed (the host may have changed: revert)."""

    def revert(self, snapshot: Snapshot) -> list[Change]:
        """Return to the snapshot: saved versions back, new packages removed."""

    def versions(self, names: Sequence[str]) -> dict[str, str]:
        """Installed version of each name ("" when not installed)."""
