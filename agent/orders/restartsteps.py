"""Services that still run the code an update replaced: the RESTART step
after APPLY (and after a live patch), and the same after a revert, so the
code VERIFY judges, and the code the host runs afterwards, is the code on
disk.

What may be restarted, in this order of precedence:

- never the agent's own unit, nor the units agent updates use
  (``fleetpatch-agent*.service``): an agent update hands over by itself;
- never a unit local policy holds (``policy.never_restart``);
- the service manager itself (PID 1, unit ``init.scope``) is re-executed
  (`systemctl daemon-reexec`), as systemd's own upgrades do;
- only when the order says ``restart_services = "auto"`` (the default),
  and only while its maintenance window is open. ``"report"`` lists what
  runs old code without restarting; ``"never"`` does not look.

Each restart is journaled (`Journal.restart_begun`) before it is asked for
and its result after. A crash between restarts reruns the step, which looks
again: restarted services no longer run old code, and a unit begun twice
already is reported rather than restarted a third time.

What still runs replaced code afterwards (held units, processes outside
any service such as a login shell) is kept in the order's snapshot column
under ``"restart"`` and makes a verified order end PENDING_RESTART.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from agent.errors import CommandFailed
from agent.host.restarts import Services, Stale
from agent.orders.journal import Journal, OrderRecord
from agent.orders.outcome import Outcome
from agent.orders.policy import Policy, restart_held
from agent.orders.states import Event
from agent.orders.workorder import Action, Restart, WorkOrder

log = logging.getLogger(__name__)
APPLY, REVERT = "apply", "revert"
AGENT_UNITS = "fleetpatch-agent*.service"
MAX_ATTEMPTS = 2  # restarts of one unit per order and phase
SHOWN = 8  # items listed in a detail line before "and N more"


@dataclass(frozen=True)
class RestartDoc:
    """What a restart pass did: kept in the snapshot column under "restart"."""

    restarted: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # what still runs replaced code, and why

    @classmethod
    def of(cls, snapshot: Any) -> RestartDoc:
        doc = (snapshot or {}).get("restart") or {}
        return cls(tuple(doc.get("restarted", ())), tuple(doc.get("pending", ())))

    def into(self, snapshot: Any) -> dict[str, Any]:
        return {**(snapshot or {"saved": [], "new": []}), "restart": asdict(self)}

    def summary(self) -> str:
        parts = []
        if self.restarted:
            parts.append(f"restarted {_listed(self.restarted)}")
        if self.pending:
            parts.append(f"still running replaced code: {_listed(self.pending)}")
        return "; ".join(parts) or "no service runs replaced code"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


class RestartFailed(Exception):
    """A unit did not restart (on the update: the order reverts)."""


class RestartSteps:
    """The restarts of one runner; ``services`` None means this agent has
    no service manager to ask (library use, the simulator): nothing is
    looked at or restarted."""

    def __init__(
        self,
        journal: Journal,
        policy: Policy,
        services: Services | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._services = services
        self._clock = clock

    # -- RESTART ---------------------------------------------------------------

    def restart(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        if order.action is Action.AGENT_UPDATE:
            return Outcome(Event.OK, "an agent update restarts only the agent, by itself")
        if order.restart_services is Restart.NEVER:
            return Outcome(Event.OK, "services not checked: the order says restart_services=never")
        if self._services is None:
            return Outcome(Event.OK, "services not checked: this agent has no service manager")
        packages = [c["name"] for c in record.plan or [] if c.get("new")]
        closes = order.window_closes_at
        if order.restart_services is Restart.REPORT:
            not_now = "the order says restart_services=report"
        elif closes is not None and self._clock() >= closes:
            not_now = f"the maintenance window closed at {closes:%Y-%m-%d %H:%M:%SZ}"
        else:
            not_now = ""
        try:
            doc = self._pass(order.order_id, APPLY, packages, not_now, stop_on_failure=True)
        except RestartFailed as exc:
            return Outcome(Event.FAIL, f"a service did not restart on the update: {exc}")
        return Outcome(Event.OK, doc.summary(), columns={"snapshot": doc.into(record.snapshot)})

    # -- after REVERT ----------------------------------------------------------

    def after_revert(self, order: WorkOrder, record: OrderRecord, packages: Sequence[str]) -> str:
        """Restart what runs the code the revert replaced: the versions the
        update had brought. Returns a note for the revert's detail; a
        failure is noted, not raised (the packages are back already, and
        the checks that follow tell whether the host is healthy)."""
        if self._services is None or order.restart_services is Restart.NEVER:
            return ""
        not_now = "the order says restart_services=report"
        doc = self._pass(
            order.order_id, REVERT, packages,
            not_now if order.restart_services is Restart.REPORT else "", stop_on_failure=False,
        )  # fmt: skip
        return "" if not (doc.restarted or doc.pending) else doc.summary()

    # -- VERIFY ----------------------------------------------------------------

    @staticmethod
    def verified(record: OrderRecord, event: Event, detail: str) -> tuple[Event, str]:
        """VERIFY passed with ``event``: a verified order whose services still
        run replaced code ends PENDING_RESTART (a pending reboot covers it)."""
        doc = RestartDoc.of(record.snapshot)
        if not doc.pending:
            return event, detail
        detail = f"{detail}; restart pending: {_listed(doc.pending)}"
        return (Event.PENDING_RESTART if event is Event.OK else event), detail

    # -- one pass --------------------------------------------------------------

    def _held(self, unit: str, own: str) -> str:
        if unit == own or fnmatch.fnmatchcase(unit, AGENT_UNITS):
            return "the agent's own unit"
        return restart_held(unit, self._policy) or ""

    def _pass(
        self, order_id: str, phase: str, packages: Sequence[str], not_now: str,
        *, stop_on_failure: bool,
    ) -> RestartDoc:  # fmt: skip
        """Find, restart what may be, look again. Raises RestartFailed (with
        ``stop_on_failure``) when a unit fails to restart."""
        services = self._services
        assert services is not None  # noqa: S101 - checked by the callers
        earlier = self._journal.restarts(order_id, phase)
        attempts = Counter(r.unit for r in earlier)
        restarted = [r.unit for r in earlier if r.result == "restarted"]
        files = services.files_of(packages)  # the same before and after the restarts
        stale = services.stale_in(files)
        own = services.own_unit()
        pending: dict[str, str] = {}
        todo = []
        for unit in sorted({s.unit for s in stale if s.unit}):
            why = self._held(unit, own) or not_now
            if not why and attempts[unit] >= MAX_ATTEMPTS:
                why = f"restarted {attempts[unit]} times and still runs replaced code"
            if why:
                pending[unit] = why
            else:
                todo.append(unit)
        failed = []
        for unit in todo:
            row = self._journal.restart_begun(order_id, phase, unit)
            try:
                services.restart(unit)
            except CommandFailed as exc:
                self._journal.restart_done(row, f"failed: {exc}")
                log.error("order %s: restarting %s failed: %s", order_id, unit, exc)
                if stop_on_failure:
                    raise RestartFailed(f"{unit}: {exc}") from None
                failed.append(unit)
                pending[unit] = f"its restart failed: {exc}"
                continue
            self._journal.restart_done(row, "restarted")
            restarted.append(unit)
            log.info("order %s: restarted %s (it ran replaced code)", order_id, unit)
        if todo:
            stale = services.stale_in(files)
            for unit in sorted({s.unit for s in stale if s.unit} & set(todo) - set(failed)):
                pending[unit] = "still runs replaced code after its restart"
        listed = [f"{unit} ({why})" for unit, why in sorted(pending.items())]
        listed += [s.describe() for s in _outside(stale)]
        return RestartDoc(tuple(dict.fromkeys(restarted)), tuple(listed))


def _outside(stale: Sequence[Stale]) -> list[Stale]:
    """Processes outside any service (one per command and scope)."""
    seen: dict[tuple[str, str], Stale] = {}
    for s in stale:
        if not s.unit:
            seen.setdefault((s.command, s.scope), s)
    return list(seen.values())
