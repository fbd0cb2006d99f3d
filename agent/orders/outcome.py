"""What one step of a work order returns to the runner: the event (which
the transition table turns into the next state), why, and what to journal
with the next state's entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.backends.base import Change
from agent.host.health import CheckResult
from agent.orders.states import Event


@dataclass(frozen=True)
class Outcome:
    event: Event
    detail: str = ""
    columns: Mapping[str, Any] = field(default_factory=dict)
    changes: Sequence[Change] = ()
    checks: Sequence[CheckResult] = ()
