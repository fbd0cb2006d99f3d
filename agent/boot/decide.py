"""After an update: does the host need nothing more, a live patch, or a
reboot, and may it have one now? A pure function of the host's signals,
the order's policy, the host's own policy and the time.

    reboot=never|if-required|always     (the order)
    livepatch=never|prefer|only         (the order)
    policy.allow_reboot                 (the host; the controller cannot change it)
    window_closes_at                    (the order: no reboot after it)

A reboot that is needed but may not happen now is never dropped: the
answer is PENDING_REBOOT with the reason, and the order ends in the
PENDING_REBOOT state the controller sees.

`livepatch=only` is a promise that the host is not rebooted: it wins over
`reboot=always`. `reboot=always` wins over `livepatch=prefer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from agent.orders.policy import Policy
from agent.orders.workorder import Livepatch, Reboot, WorkOrder


class Action(StrEnum):
    NONE = "none"
    LIVEPATCH = "livepatch"
    REBOOT = "reboot"
    PENDING_REBOOT = "pending-reboot"


@dataclass(frozen=True)
class Reason:
    """One signal that the host needs a reboot. ``kernel``: only the
    running kernel is out of date, so a live patch can stand in for it."""

    source: str  # reboot-required, needrestart, needs-restarting, kernel
    detail: str
    kernel: bool = False


@dataclass(frozen=True)
class LiveOffer:
    """A live patch a provider has (or has loaded) for the running kernel."""

    provider: str
    patch_id: str
    loaded: bool = False
    covered_until: date | None = None  # the provider stops covering this kernel then


@dataclass(frozen=True)
class Signals:
    reasons: tuple[Reason, ...] = ()
    livepatch: LiveOffer | None = None

    @property
    def needed(self) -> bool:
        return bool(self.reasons)

    @property
    def kernel_only(self) -> bool:
        return self.needed and all(r.kernel for r in self.reasons)


@dataclass(frozen=True)
class OrderPolicy:
    reboot: Reboot = Reboot.IF_REQUIRED
    livepatch: Livepatch = Livepatch.NEVER
    window_closes_at: datetime | None = None

    @classmethod
    def of(cls, order: WorkOrder) -> OrderPolicy:
        return cls(order.reboot, order.livepatch, order.window_closes_at)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def describe(reasons: Sequence[Reason]) -> str:
    return "; ".join(f"{r.source}: {r.detail}" for r in reasons)


def _no_live_patch(signals: Signals, now: datetime) -> str:
    """Why the live patch on offer (if any) cannot stand in for the reboot."""
    offer = signals.livepatch
    if not signals.kernel_only:
        return "more than the running kernel needs the reboot"
    if offer is None:
        return "no live-patch provider has a patch for the running kernel"
    if offer.covered_until is not None and offer.covered_until < now.date():
        return f"{offer.provider} stopped covering this kernel on {offer.covered_until}"
    return ""


def _reboot_blocked(order: OrderPolicy, policy: Policy, now: datetime) -> str:
    """Why a reboot may not happen now ("" when it may)."""
    if order.reboot is Reboot.NEVER:
        return "the order says reboot=never"
    if not policy.allow_reboot:
        return "local policy.allow_reboot is false"
    if order.window_closes_at is not None and now >= order.window_closes_at:
        return f"the maintenance window closed at {order.window_closes_at:%Y-%m-%d %H:%M:%SZ}"
    return ""


def _only(signals: Signals, live: str, live_blocked: str) -> Decision:
    """livepatch=only: a live patch, or nothing, never a reboot."""
    why = describe(signals.reasons)
    if not signals.needed:
        return Decision(Action.NONE, "no reboot needed (livepatch=only: none would be made)")
    if live:
        return Decision(Action.LIVEPATCH, f"{live} stands in for the reboot ({why})")
    blocked = f"reboot needed ({why}) and livepatch=only forbids it: {live_blocked}"
    return Decision(Action.PENDING_REBOOT, blocked)


def decide(signals: Signals, order: OrderPolicy, policy: Policy, now: datetime) -> Decision:
    """What the host needs after the update, and whether it may have it now."""
    why = describe(signals.reasons)
    live_blocked = _no_live_patch(signals, now) if signals.needed else "no reboot is needed"
    offer = signals.livepatch
    live = (
        f"live patch {offer.provider} {offer.patch_id}" if offer is not None and not live_blocked
        else ""
    )  # fmt: skip
    if order.livepatch is Livepatch.ONLY:
        return _only(signals, live, live_blocked)
    always = order.reboot is Reboot.ALWAYS
    if signals.needed and live and order.livepatch is Livepatch.PREFER and not always:
        return Decision(Action.LIVEPATCH, f"{live} stands in for the reboot ({why})")
    if not signals.needed and not always:
        return Decision(Action.NONE, "no reboot needed")
    wanted = f"reboot needed ({why})" if signals.needed else "the order asks for a reboot always"
    blocked = _reboot_blocked(order, policy, now)
    if blocked:
        return Decision(Action.PENDING_REBOOT, f"{wanted}; {blocked}")
    return Decision(Action.REBOOT, wanted)
