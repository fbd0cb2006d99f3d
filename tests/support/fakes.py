"""Stand-ins for what the agent drives, behind the same interfaces as the
real ones: a package manager in memory and scripted health checks. Used
where the real thing would only slow a test that is about something else
(the state machine, the controller's campaign logic); the real apt backend
has its own tests in a host sandbox."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path

from agent.backends.base import Busy, Change, Plan, PlanError, Saved, Snapshot
from agent.errors import CommandFailed
from agent.host.checks import CheckSpec
from agent.host.health import CheckResult
from agent.host.updates import Available
from agent.orders.workorder import Target


class FakeBackend:
    """An in-memory package manager with the backend interface."""

    name = "fake"

    def __init__(self, installed: dict[str, str], available: dict[str, str]) -> None:
        self.installed = dict(installed)
        # The versions it could upgrade to (what `available()` lists): named
        # apart from that method, which the agent's update scan calls.
        self.candidates = dict(available)
        self.calls: list[str] = []
        self.busy_for = 0  # how many calls answer Busy first
        self.fail_apply = False
        self.fail_revert = False

    def _maybe_busy(self) -> None:
        if self.busy_for:
            self.busy_for -= 1
            raise Busy("locked by pid 42")

    def recover(self) -> None:
        self.calls.append("recover")

    def refresh(self) -> None:
        self.calls.append("refresh")

    def available(self) -> list[Available]:
        """The upgrades it could make, as the real backends list them."""
        self.calls.append("available")
        return [
            Available(name, "all", self.installed[name], new, "local", security=False)
            for name, new in sorted(self.candidates.items())
            if name in self.installed and new != self.installed[name]
        ]

    def plan(self, targets: Sequence[Target], all_security: bool, exclude: Sequence[str]) -> Plan:
        self.calls.append("plan")
        changes = []
        for t in targets:
            if t.name not in self.installed:
                raise PlanError(f"{t.name} is not installed")
            new = self.candidates.get(t.name, self.installed[t.name])
            if new != self.installed[t.name]:
                changes.append(Change(t.name, "all", self.installed[t.name], new, "local"))
        return Plan(tuple(changes))

    def snapshot(self, plan: Plan, cache: Path) -> Snapshot:
        self.calls.append("snapshot")
        return Snapshot(
            tuple(Saved(c.name, c.arch, c.old, f"{cache}/{c.name}.deb") for c in plan.changes), ()
        )

    def apply(self, plan: Plan) -> list[Change]:
        self.calls.append("apply")
        self._maybe_busy()
        if self.fail_apply:
            raise CommandFailed(["apt-get"], 100, "", "E: postinst failed")
        for c in plan.changes:
            self.installed[c.name] = c.new
        return list(plan.changes)

    def revert(self, snapshot: Snapshot) -> list[Change]:
        self.calls.append("revert")
        if self.fail_revert:
            raise CommandFailed(["apt-get"], 100, "", "E: cannot downgrade")
        changes = []
        for saved in snapshot.saved:
            changes.append(
                Change(saved.name, saved.arch, self.installed[saved.name], saved.version)
            )
            self.installed[saved.name] = saved.version
        return changes

    def versions(self, names: Sequence[str]) -> dict[str, str]:
        return {n: self.installed.get(n, "") for n in names}


class FakeProber:
    """Health checks whose answers the test scripts: a list of booleans per call."""

    def __init__(self, answers: Sequence[bool] = (True,)) -> None:
        self.answers = list(answers)
        self.calls = 0

    def run_all(self, specs: Sequence[CheckSpec]) -> list[CheckResult]:
        ok = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [CheckResult("service", "tcp", ok, "up" if ok else "connection refused")]


class RecordingStop(threading.Event):
    """A loop's stop event that records every wait instead of waiting, and
    stops the loop after ``n`` of them."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.n = n

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


class Ceiling(random.Random):
    """Always draws the top of the range, to read a ceiling exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Floor(random.Random):
    """Always draws the bottom of the range."""

    def uniform(self, a: float, b: float) -> float:
        return a
