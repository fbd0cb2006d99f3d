"""Carry out work orders: a state machine driven by the transition table
in `states`, persisted in the journal before every side effect.

Each step is a method that runs one state's side effect and returns an
event; the table says where that event leads. Backends (package manager,
health probes, clock, sleep, and for kernels and reboots: the boot id, the
running kernel, reboot signals, live-patch providers, the rebooter, the
boot loader) are passed in, so the simulator and the tests run this same
code with stand-ins. The kernel and reboot steps live in `bootsteps`.

Defaults are safe for library use: no reboot signals, no live-patch
provider and no rebooter (a needed reboot ends PENDING_REBOOT). The agent
service (`service.Agent.open`) passes the host's real ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetpatch.orderspec import REFUSED
from fleetpatch.v1 import types_pb2

from agent.backends.base import Busy, Change, PackageBackend, Plan, PlanError, Snapshot
from agent.boot.bootloader import Bootloader
from agent.boot.bootloader import detect as detect_bootloader
from agent.boot.bootsteps import BootSteps
from agent.boot.decide import Reason
from agent.boot.livepatch import Provider
from agent.boot.reboot import BOOT_ID_FILE, KERNEL_RELEASE_FILE, FileValue, Rebooter
from agent.errors import CommandFailed
from agent.host.checks import CheckSpec, Probes
from agent.host.health import CheckResult, failing
from agent.host.needs import installed_kernels
from agent.host.restarts import Services
from agent.link import convert
from agent.orders import faults
from agent.orders.journal import Journal, OrderRecord
from agent.orders.outcome import Outcome
from agent.orders.policy import Policy, check_order, plan_violation
from agent.orders.restartsteps import RestartSteps
from agent.orders.selfupdate import Fetcher, Reach, UpdateSteps, Watchdog
from agent.orders.states import MAX_ENTRIES, RESUME, TERMINAL, Event, Resume, State, next_state
from agent.orders.workorder import Action, OrderRefused, WorkOrder, from_pb, verify

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
__all__ = ["Outcome", "Runner"]


def _describe(changes: Sequence[Change]) -> str:
    return ", ".join(f"{c.name} {c.old or '(new)'} -> {c.new or '(removed)'}" for c in changes)


class Runner:
    def __init__(
        self,
        journal: Journal,
        backend: PackageBackend,
        prober: Probes,
        policy: Policy,
        host_checks: Sequence[CheckSpec],
        cache: Path,
        clock: Clock = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        busy_timeout: timedelta = timedelta(minutes=10),
        retry_interval: float = 5.0,
        notify: Callable[[], object] = lambda: None,
        *,
        boot_id: Callable[[], str] | None = None,
        kernel: Callable[[], str] | None = None,
        reboot_signals: Callable[[], Sequence[Reason]] = list,
        livepatch: Sequence[Provider] = (),
        rebooter: Rebooter | None = None,
        bootloader: Callable[[], Bootloader] = detect_bootloader,
        kernels: Callable[[], Sequence[str]] = installed_kernels,
        reboot_timeout: timedelta = timedelta(minutes=10),
        fetch: Fetcher | None = None,
        reach: Reach | None = None,
        watchdog: Watchdog | None = None,
        running_version: str | None = None,
        services: Services | None = None,
    ) -> None:
        """``boot_id``/``kernel``: this boot's id and the running kernel
        (default: read from /proc at each call); ``rebooter`` None means
        this runner never reboots the host (see the module docstring).
        ``fetch``, ``reach`` and ``watchdog`` are what agent-update orders
        need (`selfupdate`); without them such orders fail in PRECHECK.
        ``services`` finds and restarts services running replaced code
        (`restartsteps`); None: RESTART looks at nothing."""
        self._journal = journal
        self._backend = backend
        self._prober = prober
        self._policy = policy
        self._host_checks = tuple(host_checks)
        self._cache = cache
        self._clock = clock
        self._sleep = sleep
        self._busy_timeout = busy_timeout
        self._retry_interval = retry_interval
        self._notify = notify
        self._boot = BootSteps(
            journal, policy, clock, boot_id or FileValue(BOOT_ID_FILE),
            kernel or FileValue(KERNEL_RELEASE_FILE), reboot_signals, kernels, livepatch,
            rebooter, bootloader, reboot_timeout,
        )  # fmt: skip
        self._restarts = RestartSteps(journal, policy, services, clock)
        self._update = UpdateSteps(
            backend, prober, policy, cache, clock, sleep, retry_interval, self._checks,
            fetch=fetch, reach=reach, watchdog=watchdog, running_version=running_version,
        )  # fmt: skip

    def handover_due(self) -> str | None:
        """Why this process must give way to the agent version now
        installed (after an agent update or its revert), or None."""
        return self._update.handover_due()

    def set_notify(self, notify: Callable[[], object]) -> None:
        """Called after every state entry: the agent sends reports there."""
        self._notify = notify

    # -- receiving -------------------------------------------------------------

    def receive(
        self,
        envelope: types_pb2.SignedEnvelope,
        trusted_keys: Mapping[str, bytes],
        host_id: str,
        withdrawn: Mapping[str, str] | None = None,
    ) -> WorkOrder:
        """Verify an order and journal it as RECEIVED. ``withdrawn``: pinned
        keys that may no longer sign, and why (for the refusal's line).

        Raises OrderRefused, after journaling and queueing the refusal for
        the controller; nothing on the host has changed.
        """
        try:
            order = verify(
                envelope, trusted_keys, host_id, self._journal.highest_sequence(), self._clock(),
                withdrawn,
            )  # fmt: skip
            check_order(order, self._policy)
        except OrderRefused as refused:
            log.warning("%s", refused)
            order_id, text = refused.order_id, f"{refused.reason}: {refused}"
            self._journal.refuse(
                order_id, refused.reason.value, str(refused),
                lambda key: convert.progress_report(key, order_id, REFUSED, text, final=True),
            )  # fmt: skip
            raise
        self._journal.accept(
            order.order_id, order.sequence, order.campaign_id, envelope.SerializeToString(),
            self._reporter(order, State.RECEIVED, f"{order.action} order accepted"),
        )  # fmt: skip
        log.info("order %s (sequence %d) received", order.order_id, order.sequence)
        faults.hit("enter", State.RECEIVED)
        return order

    # -- driving ---------------------------------------------------------------

    def run(self, order_id: str) -> State:
        """Drive an order to a terminal state and return it."""
        record = self._record(order_id)
        order = self._order(record)
        state = State(record.state)
        while state not in TERMINAL:
            outcome = self._step(state, order, self._record(order_id))
            faults.hit("done", state)
            state = self._enter(order, next_state(state, outcome.event), outcome)
        return state

    def resume(self) -> list[tuple[str, State]]:
        """Finish every order a crash or restart interrupted."""
        finished = []
        for record in self._journal.unfinished(frozenset(TERMINAL)):
            order = self._order(record)
            state = State(record.state)
            if RESUME[state] is Resume.RECOVER:
                state = self._recover_then_decide(order, record)
            elif RESUME[state] is Resume.BOOT:
                target, outcome = self._boot.resume(record)
                state = self._enter(order, target, outcome)
            else:
                state = self._enter(order, state, Outcome(Event.OK, f"resumed in {state}"))
            log.info("order %s resumed in %s", order.order_id, state)
            finished.append(
                (order.order_id, self.run(order.order_id) if state not in TERMINAL else state)
            )
        return finished

    def _recover_then_decide(self, order: WorkOrder, record: OrderRecord) -> State:
        """Interrupted in APPLY: repair dpkg, then look at what landed. All
        of the plan: verify. None of it: apply again (the loop guard bounds
        this). Part of it: revert to the snapshot."""
        self._until_not_busy(self._backend.recover)
        plan = Plan.from_json(record.plan or [])
        now = self._backend.versions([c.name for c in plan.changes])
        why = "resumed after a crash in APPLY"
        landed = all(now.get(c.name, "") == c.new for c in plan.changes)
        if landed and order.action is Action.AGENT_UPDATE:
            return self._enter(order, State.VERIFY, Outcome(Event.OK, f"{why}: installed"))
        if landed:
            outcome = self._boot.after_update(order, record, f"{why}: the update landed in full",
                                              {})  # fmt: skip
            return self._enter(order, next_state(State.APPLY, outcome.event), outcome)
        if all(now.get(c.name, "") == c.old for c in plan.changes):
            target, why = State.APPLY, f"{why}: nothing had changed yet; applying again"
        else:
            target, why = State.REVERT, f"{why}: the update landed only in part"
        return self._enter(order, target, Outcome(Event.OK, why))

    def _enter(self, order: WorkOrder, state: State, outcome: Outcome) -> State:
        """Journal the entry into ``state`` (with its report) before anything
        of that state runs. The loop guard redirects a state entered too often."""
        if state not in TERMINAL and self._journal.entries(order.order_id, state) >= MAX_ENTRIES:
            guarded = next_state(state, Event.LOOP)
            detail = f"loop guard: {state} was entered {MAX_ENTRIES} times; giving up on it"
            log.error("order %s: %s", order.order_id, detail)
            return self._enter(order, guarded, Outcome(Event.LOOP, detail))
        self._journal.enter(
            order.order_id, state.value, outcome.detail,
            self._reporter(order, state, outcome.detail, outcome.changes, outcome.checks),
            **outcome.columns,
        )  # fmt: skip
        log.info("order %s -> %s %s", order.order_id, state, outcome.detail)
        faults.hit("enter", state)
        self._notify()
        return state

    def _reporter(
        self,
        order: WorkOrder,
        state: State,
        detail: str,
        changes: Sequence[Change] = (),
        checks: Sequence[CheckResult] = (),
    ) -> Callable[[str], bytes]:
        return lambda key: convert.progress_report(
            key, order.order_id, state.value, detail, final=state in TERMINAL,
            sequence=order.sequence, campaign_id=order.campaign_id, changes=changes, checks=checks,
        )  # fmt: skip

    def _record(self, order_id: str) -> OrderRecord:
        record = self._journal.order(order_id)
        if record is None:
            raise KeyError(f"no order {order_id!r} in the journal")
        return record

    @staticmethod
    def _order(record: OrderRecord) -> WorkOrder:
        envelope = types_pb2.SignedEnvelope.FromString(record.envelope)
        pb = types_pb2.WorkOrder.FromString(envelope.payload)  # verified when received
        return from_pb(pb)

    def _checks(self, order: WorkOrder) -> list[CheckSpec]:
        return [*self._host_checks, *order.checks]

    def _until_not_busy(self, fn: Callable[[], Any]) -> Any:
        deadline = self._clock() + self._busy_timeout
        while True:
            try:
                return fn()
            except Busy as exc:
                if self._clock() >= deadline:
                    raise
                log.info("%s; retrying in %.0fs", exc, self._retry_interval)
                self._sleep(self._retry_interval)

    # -- steps -----------------------------------------------------------------

    def _step(self, state: State, order: WorkOrder, record: OrderRecord) -> Outcome:
        if order.action is Action.AGENT_UPDATE:
            update_steps = {
                State.PRECHECK: self._update.precheck,
                State.APPLY: self._update.apply,
                State.VERIFY: self._update.verify,
            }
            if state in update_steps:
                return update_steps[state](order, record)
        steps = {
            State.RECEIVED: self._received,
            State.PRECHECK: self._precheck,
            State.SNAPSHOT: self._snapshot,
            State.APPLY: self._apply,
            State.LIVEPATCH: self._boot.livepatch,
            State.RESTART: self._restarts.restart,
            State.REBOOT: self._boot.reboot,
            State.REBOOTED: self._boot.rebooted,
            State.VERIFY: self._verify,
            State.REVERT: self._revert,
        }
        return steps[state](order, record)

    def _received(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        if order.action is Action.AGENT_UPDATE:
            return Outcome(Event.OK, "checking the host and the release before updating the agent")
        if order.action is not Action.REVERT:
            return Outcome(Event.OK, "checking the host before patching")
        earlier = self._journal.order(order.revert_order_id)
        if earlier is None or earlier.snapshot is None:
            return Outcome(
                Event.FAIL,
                f"nothing to revert: this host kept no snapshot of {order.revert_order_id}",
            )
        return Outcome(
            Event.REVERT_ORDERED,
            f"the controller ordered order {order.revert_order_id} reverted",
            columns={"snapshot": earlier.snapshot},
        )

    def _precheck(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        try:
            self._until_not_busy(self._backend.recover)
        except (Busy, CommandFailed) as exc:
            return Outcome(Event.FAIL, f"the package manager needs repair and it failed: {exc}")
        try:
            self._backend.refresh()
        except CommandFailed as exc:
            log.warning("order %s: package lists not refreshed (%s); planning with what is here",
                        order.order_id, exc)  # fmt: skip
        baseline = self._prober.run_all(self._checks(order))
        if not all(r.ok for r in baseline):
            return Outcome(
                Event.FAIL,
                f"host unhealthy before patching, not touching it: {failing(baseline)}",
                checks=baseline,
            )  # fmt: skip
        try:
            plan = self._until_not_busy(
                lambda: self._backend.plan(order.targets, order.all_security_updates, order.exclude)
            )
        except (PlanError, Busy, CommandFailed) as exc:
            return Outcome(Event.FAIL, f"cannot plan the update: {exc}", checks=baseline)
        violation = plan_violation(plan, self._policy)
        if violation:
            return Outcome(Event.FAIL, f"refused by local policy: {violation}", checks=baseline)
        if plan.empty:
            return Outcome(Event.NOTHING_TO_DO, "already up to date", checks=baseline)
        summary = ", ".join(
            f"{c.name} {c.old or '(new)'} -> {c.new or '(removed)'}" for c in plan.changes
        )
        return Outcome(
            Event.OK, f"plan: {summary}", columns={"plan": plan.to_json()}, checks=baseline,
            changes=plan.changes,
        )  # fmt: skip

    def _snapshot(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        plan = Plan.from_json(record.plan or [])
        try:
            snapshot = self._backend.snapshot(plan, self._cache / order.order_id)
        except (PlanError, CommandFailed) as exc:
            return Outcome(Event.FAIL, f"no revertable copy, not patching: {exc}")
        kept = ", ".join(f"{s.name} {s.version}" for s in snapshot.saved) or "nothing to keep"
        boot = self._boot.snapshot_doc()  # running kernel and boot, for a kernel revert
        return Outcome(
            Event.OK, f"kept for revert: {kept}; running kernel {boot.kernel or 'unknown'}",
            columns={"snapshot": boot.into(snapshot.to_json())},
        )  # fmt: skip

    def _apply(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        if order.window_closes_at is not None and self._clock() >= order.window_closes_at:
            return Outcome(
                Event.ABORT, "the maintenance window closed before the update could start"
            )
        plan = Plan.from_json(record.plan or [])
        try:
            changes = self._until_not_busy(lambda: self._backend.apply(plan))
        except Busy as exc:
            return Outcome(Event.ABORT, f"gave up waiting for the package manager: {exc}")
        except CommandFailed as exc:
            return Outcome(Event.FAIL, f"the update failed: {exc}")
        outcome = self._boot.after_update(
            order, record, f"applied: {_describe(changes) or 'no change'}",
            {"changes": [vars(c) for c in changes]},
        )  # fmt: skip
        return Outcome(outcome.event, outcome.detail, outcome.columns, changes=changes)

    def _verify(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        plan = Plan.from_json(record.plan or [])
        deadline = self._clock() + order.verify_timeout
        while True:
            results = self._prober.run_all(self._checks(order))
            installed = self._backend.versions([c.name for c in plan.changes])
            wrong = [c.name for c in plan.changes if installed.get(c.name, "") != c.new]
            if wrong:
                return Outcome(
                    Event.FAIL, f"not at the planned version: {', '.join(wrong)}", checks=results
                )
            if all(r.ok for r in results):
                event, detail = self._boot.verified(record, "healthy after the update")
                event, detail = self._restarts.verified(record, event, detail)
                return Outcome(event, detail, checks=results)
            if self._clock() >= deadline:
                return Outcome(
                    Event.FAIL,
                    f"unhealthy after the update (verify timeout "
                    f"{order.verify_timeout.total_seconds():.0f}s): {failing(results)}",
                    checks=results,
                )
            self._sleep(self._retry_interval)

    def _revert(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        # Why the revert began: a revert interrupted by its own reboot comes
        # back here with REBOOTED's detail as the record's.
        why = next(
            (s.detail for s in self._journal.steps(order.order_id) if s.state == State.REVERT),
            record.detail,
        )
        if record.snapshot is None:
            return Outcome(Event.FAIL, f"no snapshot to revert to ({why})")
        snapshot = Snapshot.from_json(record.snapshot)
        try:
            changes = self._until_not_busy(lambda: self._backend.revert(snapshot))
        except (Busy, CommandFailed) as exc:
            return Outcome(Event.FAIL, f"revert failed: {exc} (reverting because: {why})")
        if order.action is Action.AGENT_UPDATE:
            self._update.after_revert(order)
        # A rerun after the revert's own reboot changes nothing: keep the
        # changes the first run journaled.
        columns = {"changes": [vars(c) for c in changes]} if changes else {}
        ended, notes = self._boot.revert(order, record, f"packages reverted because {why}")
        if ended is not None:
            return Outcome(ended.event, ended.detail, {**ended.columns, **columns}, changes)
        restarts = self._restarts.after_revert(order, record, [s.name for s in snapshot.saved])
        results = self._prober.run_all(self._checks(order))
        health = "healthy" if all(r.ok for r in results) else f"still unhealthy: {failing(results)}"
        notes = "".join(f"; {note}" for note in (notes, restarts) if note)
        return Outcome(
            Event.OK, f"reverted because {why}{notes}; after revert the host is {health}",
            columns=columns, changes=changes, checks=results,
        )  # fmt: skip
