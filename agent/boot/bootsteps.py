"""The steps of a work order that deal with the running kernel: deciding
what the host needs after the update, live patching, rebooting, coming
back, and taking the kernel back in a revert. The runner calls them; each
returns an `Outcome` like every other step.

What must survive a reboot is kept in the order's snapshot (journal column
``snapshot``, key ``"boot"``), written in the same transaction as the state
it belongs to, so the intent is on disk before the side effect:

    boot_id, kernel      this boot and the running kernel at SNAPSHOT
    decision, why        what the host needed after the update (decide.Action)
    reboot_purpose       "apply" (into the update) or "revert" (back from it)
    reboot_from          the boot id the reboot leaves; another one means it happened
    reboot_asked_at      when it was asked for; the reboot timeout runs from here
    expect_kernel        the kernel the reboot should come back on ("" = any)
    live_*               the live patch in place: provider, id, loaded by us, until
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from agent.boot.bootloader import Bootloader, BootloaderError
from agent.boot.decide import Action, Decision, OrderPolicy, Reason, Signals, decide
from agent.boot.livepatch import LivepatchError, Provider, find_offer, provider_named
from agent.boot.reboot import Rebooter
from agent.errors import CommandFailed
from agent.host.needs import KERNEL_PACKAGE, newest, version_key
from agent.orders.journal import Journal, OrderRecord
from agent.orders.outcome import Outcome
from agent.orders.policy import Policy
from agent.orders.states import MAX_REBOOTS, Event, State
from agent.orders.workorder import Livepatch, Reboot, WorkOrder

log = logging.getLogger(__name__)
APPLY, REVERT = "apply", "revert"


@dataclass(frozen=True)
class BootDoc:
    boot_id: str = ""
    kernel: str = ""
    decision: str = ""
    why: str = ""
    reboot_purpose: str = ""
    reboot_from: str = ""
    reboot_asked_at: str = ""
    expect_kernel: str = ""
    live_provider: str = ""
    live_patch: str = ""
    live_ours: bool = False
    live_until: str = ""

    @classmethod
    def of(cls, snapshot: Any) -> BootDoc:
        doc = (snapshot or {}).get("boot") or {}
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def into(self, snapshot: Any) -> dict[str, Any]:
        """The snapshot column with this as its boot part."""
        return {**(snapshot or {"saved": [], "new": []}), "boot": asdict(self)}


def _touches_kernel(snapshot: Any) -> bool:
    names = [s["name"] for s in (snapshot or {}).get("saved", [])]
    names += list((snapshot or {}).get("new", []))
    return any(KERNEL_PACKAGE.match(n) for n in names)


class BootSteps:
    """Everything the runner needs about kernels and reboots, injected."""

    def __init__(
        self,
        journal: Journal,
        policy: Policy,
        clock: Callable[[], datetime],
        boot_id: Callable[[], str],
        kernel: Callable[[], str],
        signals: Callable[[], Sequence[Reason]],
        installed_kernels: Callable[[], Sequence[str]],
        providers: Sequence[Provider],
        rebooter: Rebooter | None,
        bootloader: Callable[[], Bootloader],
        reboot_timeout: timedelta,
    ) -> None:
        self._journal = journal
        self._policy = policy
        self._clock = clock
        self._boot_id = boot_id
        self._kernel = kernel
        self._signals = signals
        self._installed = installed_kernels
        self._providers = tuple(providers)
        self._rebooter = rebooter
        self._bootloader = bootloader
        self._timeout = reboot_timeout

    # -- after the update ------------------------------------------------------

    def snapshot_doc(self) -> BootDoc:
        return BootDoc(boot_id=self._boot_id(), kernel=self._kernel())

    def _decide(self, order: WorkOrder, live: bool) -> Decision:
        reasons = tuple(self._signals())
        offer = None
        kernel_only = bool(reasons) and all(r.kernel for r in reasons)
        if live and kernel_only and order.livepatch is not Livepatch.NEVER:
            offer = find_offer(self._providers, self._kernel())
        decision = decide(Signals(reasons, offer), OrderPolicy.of(order), self._policy,
                          self._clock())  # fmt: skip
        if decision.action is Action.REBOOT and self._rebooter is None:
            return Decision(
                Action.PENDING_REBOOT, f"{decision.reason}; this agent has no way to reboot"
            )
        return decision

    def after_update(
        self, order: WorkOrder, record: OrderRecord, detail: str, columns: dict[str, Any]
    ) -> Outcome:
        """APPLY is done (or found done after a crash): where next."""
        decision = self._decide(order, live=True)
        events = {Action.NONE: Event.OK, Action.PENDING_REBOOT: Event.OK,
                  Action.LIVEPATCH: Event.LIVEPATCH, Action.REBOOT: Event.REBOOT}  # fmt: skip
        return self._route(record, decision, events[decision.action], f"{detail}; ", columns)

    def _route(
        self, record: OrderRecord, decision: Decision, event: Event, prefix: str,
        columns: dict[str, Any] | None = None,
    ) -> Outcome:  # fmt: skip
        doc = replace(BootDoc.of(record.snapshot), decision=decision.action.value,
                      why=decision.reason)  # fmt: skip
        if event is Event.REBOOT:
            doc = self._asking(doc, APPLY, self._expected_kernel())
        log.info("order %s: %s", record.order_id, decision.reason)
        return Outcome(
            event, f"{prefix}{decision.reason}",
            columns={**(columns or {}), "snapshot": doc.into(record.snapshot)},
        )  # fmt: skip

    def _expected_kernel(self) -> str:
        running, latest = self._kernel(), newest(list(self._installed()))
        return latest if latest and version_key(latest) > version_key(running) else ""

    def _asking(self, doc: BootDoc, purpose: str, expect: str) -> BootDoc:
        return replace(
            doc, reboot_purpose=purpose, reboot_from=self._boot_id(),
            reboot_asked_at=self._clock().isoformat(), expect_kernel=expect,
        )  # fmt: skip

    # -- LIVEPATCH -------------------------------------------------------------

    def livepatch(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        doc = BootDoc.of(record.snapshot)
        offer = find_offer(self._providers, self._kernel())
        failure = "no provider has a patch for the running kernel any more"
        if offer is not None:
            try:
                applied = provider_named(self._providers, offer.provider).apply(offer)
            except LivepatchError as exc:
                if exc.partial:
                    return Outcome(Event.FAIL, f"the live patch is half-applied: {exc}")
                failure = str(exc)
            else:
                until = applied.covered_until.isoformat() if applied.covered_until else ""
                doc = replace(doc, live_provider=applied.provider, live_patch=applied.patch_id,
                              live_ours=applied.loaded_by_us, live_until=until)  # fmt: skip
                how = "loaded" if applied.loaded_by_us else "already in place"
                return Outcome(
                    Event.OK,
                    f"live patch {applied.provider} {applied.patch_id} {how}"
                    + (f", covering this kernel until {until}" if until else ""),
                    columns={"snapshot": doc.into(record.snapshot)},
                )  # fmt: skip
        decision = self._decide(order, live=False)
        event = Event.REBOOT if decision.action is Action.REBOOT else Event.DEFER
        return self._route(record, decision, event, f"the live patch did not take ({failure}); ")

    # -- REBOOT ----------------------------------------------------------------

    def _rebooted(self, doc: BootDoc) -> bool:
        current = self._boot_id()
        return bool(current and doc.reboot_from and current != doc.reboot_from)

    def _asked_at(self, doc: BootDoc) -> datetime:
        return datetime.fromisoformat(doc.reboot_asked_at) if doc.reboot_asked_at else self._clock()

    def _came_back(self, doc: BootDoc) -> str:
        return (
            f"the host rebooted (boot {doc.reboot_from[:8]} -> {self._boot_id()[:8]}), "
            f"running kernel {self._kernel()}"
        )

    def _no_reboot(self, asked: datetime) -> str:
        return (
            f"the reboot asked for at {asked:%Y-%m-%d %H:%M:%SZ} did not happen within "
            f"{self._timeout.total_seconds():.0f}s (the boot id is unchanged)"
        )

    def _not_now(self, order: WorkOrder, record: OrderRecord, doc: BootDoc) -> Outcome | None:
        """Why REBOOT must not ask for the reboot (timeout, window, no rebooter)."""
        asked, now = self._asked_at(doc), self._clock()
        if now - asked >= self._timeout:
            return Outcome(Event.FAIL, self._no_reboot(asked))
        closes = order.window_closes_at
        if doc.reboot_purpose != REVERT and closes is not None and now >= closes:
            why = f"the maintenance window closed at {closes:%Y-%m-%d %H:%M:%SZ} before the reboot"
            return self._route(record, Decision(Action.PENDING_REBOOT, why), Event.DEFER, "")
        if self._rebooter is None:
            return Outcome(Event.FAIL, "this agent has no way to reboot the host")
        return None

    def reboot(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        doc = BootDoc.of(record.snapshot)
        if self._rebooted(doc):
            return Outcome(Event.OK, self._came_back(doc))
        stop, rebooter = self._not_now(order, record, doc), self._rebooter
        if stop is not None or rebooter is None:
            return stop or Outcome(Event.FAIL, "this agent has no way to reboot the host")
        asked = self._asked_at(doc)
        try:
            rebooter.reboot()
        except CommandFailed as exc:
            return Outcome(Event.FAIL, f"the reboot was refused: {exc}")
        rebooter.wait(self._timeout - (self._clock() - asked))
        if self._rebooted(doc):
            return Outcome(Event.OK, self._came_back(doc))
        return Outcome(Event.FAIL, self._no_reboot(asked))

    def resume(self, record: OrderRecord) -> tuple[State, Outcome]:
        """Where an order found in REBOOT after a restart goes on."""
        doc = BootDoc.of(record.snapshot)
        if self._rebooted(doc):
            return State.REBOOTED, Outcome(Event.OK, self._came_back(doc))
        asked = self._asked_at(doc)
        if self._clock() - asked >= self._timeout:
            return State.REVERT, Outcome(Event.FAIL, self._no_reboot(asked))
        return State.REBOOT, Outcome(
            Event.OK, "resumed in REBOOT with the boot id unchanged: asking again"
        )

    # -- REBOOTED --------------------------------------------------------------

    def rebooted(self, order: WorkOrder, record: OrderRecord) -> Outcome:
        doc = BootDoc.of(record.snapshot)
        running = self._kernel()
        if doc.reboot_purpose == REVERT:
            return Outcome(Event.REVERTING, f"back from the revert's reboot on kernel {running}")
        if doc.expect_kernel and running != doc.expect_kernel:
            return Outcome(
                Event.FAIL,
                f"the host came back on kernel {running}, not on the new {doc.expect_kernel}",
            )
        return Outcome(Event.OK, f"running kernel {running} after the reboot")

    # -- VERIFY ----------------------------------------------------------------

    def verified(self, record: OrderRecord, detail: str) -> tuple[Event, str]:
        """VERIFY found the host healthy: SUCCEEDED, or a reboot still owed."""
        doc = BootDoc.of(record.snapshot)
        if doc.live_patch:
            detail += f"; live patch {doc.live_provider} {doc.live_patch}"
            detail += f" (covers this kernel until {doc.live_until})" if doc.live_until else ""
        if doc.decision == Action.PENDING_REBOOT.value:
            return Event.PENDING, f"{detail}; reboot pending: {doc.why}"
        return Event.OK, detail

    # -- REVERT ----------------------------------------------------------------

    def _unload(self, doc: BootDoc) -> list[str]:
        """Take out the live patch this order loaded. Raises LivepatchError."""
        if not (doc.live_patch and doc.live_ours):
            return []
        provider = provider_named(self._providers, doc.live_provider)
        if not provider.can_unload:
            return [f"{doc.live_provider} cannot unload live patch {doc.live_patch}: "
                    "it stays until the next reboot"]  # fmt: skip
        provider.revert(doc.live_patch)
        return [f"live patch {doc.live_patch} unloaded"]

    def _no_way_back(self, record: OrderRecord, doc: BootDoc, running: str) -> str:
        """Why the host cannot reboot back to the snapshot's kernel ("" if it can)."""
        if doc.reboot_purpose == REVERT and self._rebooted(doc):
            return (f"rebooted to return to kernel {doc.kernel}, "
                    f"but the host came back on {running}")  # fmt: skip
        made = self._journal.entries(record.order_id, State.REBOOTED.value)
        if made >= MAX_REBOOTS:
            return (f"kernel {running} still runs and a reboot back would be reboot number "
                    f"{made + 1} for this order (at most {MAX_REBOOTS})")  # fmt: skip
        return ""

    def _reboot_forbidden(self, order: WorkOrder) -> str:
        if self._rebooter is None:
            return "this agent has no way to reboot"
        if order.reboot is Reboot.NEVER:
            return "the order says reboot=never"
        if not self._policy.allow_reboot:
            return "local policy.allow_reboot is false"
        return ""

    def revert(
        self, order: WorkOrder, record: OrderRecord, reverted: str
    ) -> tuple[Outcome | None, str]:
        """After the package revert: unload our live patch, and take the
        kernel back if this order's update changed it. Returns an outcome
        that ends the step (reboot, pending, failure) or None, and notes.

        The reboot back ignores the maintenance window: the host failed
        verification on the new kernel, and waiting leaves it there."""
        doc = BootDoc.of(record.snapshot)
        try:
            notes = self._unload(doc)
        except LivepatchError as exc:
            return Outcome(Event.FAIL, f"{reverted}, but {exc}"), ""
        reverted = "; ".join([reverted, *notes])
        running = self._kernel()
        changed = doc.kernel and running and running != doc.kernel
        if not changed or not (doc.expect_kernel or _touches_kernel(record.snapshot)):
            return None, "; ".join(notes)
        stuck = self._no_way_back(record, doc, running)
        if stuck:
            return Outcome(Event.FAIL, f"{reverted}, but {stuck}"), ""
        try:
            done = self._bootloader().set_default(doc.kernel)
        except BootloaderError as exc:
            return Outcome(
                Event.FAIL, f"{reverted}, but kernel {running} still runs and {exc}"
            ), ""  # fmt: skip
        blocked = self._reboot_forbidden(order)
        if blocked:
            return Outcome(
                Event.DEFER,
                f"{reverted}; {done}; reboot into kernel {doc.kernel} pending: {blocked}",
            ), ""  # fmt: skip
        asking = self._asking(doc, REVERT, doc.kernel)
        return Outcome(
            Event.REBOOT, f"{reverted}; {done}; rebooting into kernel {doc.kernel}",
            columns={"snapshot": asking.into(record.snapshot)},
        ), ""  # fmt: skip
