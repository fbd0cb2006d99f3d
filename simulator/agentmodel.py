"""A simulated host's side of a work order: which event each step of the
agent's state machine ends with, and how long it takes.

Real: the states and transitions (`agent.states.next_state` over
``TRANSITIONS``), and what the host needs after the update, a live patch,
a reboot, or a reboot left pending (`agent.decide.decide`, given the order's
reboot and live-patch policy, the window, the host's default local policy,
and simulated signals). Simulated: how each step ends and how long it
takes, drawn once per host (`Fate`), so two rehearsals of different rollout
policies on the same seed break the same hosts. Each step mirrors what
`agent.runner.Runner` and `agent.bootsteps.BootSteps` do in it:

    RECEIVED   ok at once (a patch order)
    PRECHECK   fail: unhealthy or unplannable host; nothing-to-do: up to date
    SNAPSHOT   ok
    APPLY      abort when the window closed before it could start; fail: the
               transaction failed; else what `decide` says after it: ok
               (nothing more, or a reboot left pending), livepatch, reboot
    LIVEPATCH  ok: the live patch is loaded
    RESTART    ok at once (services restarted onto the update; not modelled apart)
    REBOOT     defer when the window closed before the reboot (pending);
               else ok after the reboot; into REVERT's reboot likewise
    REBOOTED   ok (reverting, when the reboot was the revert's)
    VERIFY     fail after the campaign's verify.timeout when health regressed;
               else ok, or pending-reboot when a reboot is still owed
    REVERT     reboot back to the old kernel first when the host booted into
               the new one; then fail (the revert failed) or ok

A state without a model here raises ModelGap: when the agent grows a
state, the simulator must learn it too rather than guess.

An agent-update campaign is rehearsed as a patch of the agent's package
(`rehearsed_patch`): the same states, with the failure model's odds for
the package ``fleetpatch-agent``; the host never needs a reboot or a live
patch for it (``agent_update``), as the agent never asks for one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.boot.decide import Action, LiveOffer, OrderPolicy, Reason, Signals, decide
from agent.host.needs import KERNEL_PACKAGE
from agent.orders.policy import Policy
from agent.orders.states import Event, State
from agent.orders.workorder import Livepatch, Reboot
from controller.campaigns import (
    CampaignSpec,
    LivepatchPolicy,
    PackageTarget,
    PatchSpec,
    RebootPolicy,
)

from .errors import ModelGap
from .failures import Odds, Span, StepDurations

US = 1_000_000
_HOST_POLICY = Policy()  # a host's own agent.toml [policy]: the defaults
AGENT_PACKAGE = "fleetpatch-agent"
_AGENT_UPDATE = PatchSpec(
    (PackageTarget(AGENT_PACKAGE),), False, (), RebootPolicy.NEVER, LivepatchPolicy.NEVER
)


def rehearsed_patch(campaign: CampaignSpec) -> PatchSpec:
    """What a host of the rehearsal installs: the campaign's [patch], or for
    an agent update, the agent's package, never rebooting for it."""
    return campaign.patch if campaign.patch is not None else _AGENT_UPDATE


@dataclass(frozen=True, slots=True)
class Fate:
    """What will happen to one host when it patches (durations in µs)."""

    precheck_fails: bool
    up_to_date: bool
    apply_fails: bool
    regresses: bool
    revert_fails: bool
    goes_dark: bool
    needs_reboot: bool
    livepatch: bool
    precheck: int
    snapshot: int
    apply: int
    verify: int
    revert: int
    reboot: int
    live: int


def _draw(rng: random.Random, span: Span) -> int:
    low = span.low // timedelta(microseconds=1)
    high = span.high // timedelta(microseconds=1)
    return low + int(rng.random() * (high - low))


def draw_fate(rng: random.Random, odds: Odds, durations: StepDurations) -> Fate:
    """One host's fate. Always the same number of draws, whatever the odds,
    so changing one probability does not reshuffle every other host."""
    r = rng.random
    return Fate(
        precheck_fails=r() < odds.precheck,
        up_to_date=r() < odds.up_to_date,
        apply_fails=r() < odds.apply,
        regresses=r() < odds.regress,
        revert_fails=r() < odds.revert,
        goes_dark=r() < odds.dark,
        needs_reboot=r() < odds.reboot_required,
        livepatch=r() < odds.livepatch,
        precheck=_draw(rng, durations.precheck),
        snapshot=_draw(rng, durations.snapshot),
        apply=_draw(rng, durations.apply),
        verify=_draw(rng, durations.verify),
        revert=_draw(rng, durations.revert),
        reboot=_draw(rng, durations.reboot),
        live=_draw(rng, durations.livepatch),
    )


class Order:
    """One host's order as its agent carries it out (what its journal keeps)."""

    __slots__ = ("booted", "closes", "pending", "reboot_for_revert", "rebooted_back", "why")

    def __init__(self, closes: int | None) -> None:
        self.closes = closes  # window_closes_at, µs
        self.pending = False  # a reboot is owed and may not happen now
        self.booted = False  # rebooted into the update
        self.reboot_for_revert = False
        self.rebooted_back = False
        self.why = ""  # what decide said after the update


class Agent:
    """How the steps of one campaign's orders end, for any host."""

    def __init__(
        self,
        patch: PatchSpec,
        verify_timeout: int,
        to_datetime: Callable[[int], datetime],
        agent_update: bool = False,
    ) -> None:
        self._agent_update = agent_update
        self._order_policy = OrderPolicy(
            Reboot(patch.reboot.value), Livepatch(patch.livepatch.value)
        )
        kernel = any(KERNEL_PACKAGE.match(p.name) for p in patch.packages)
        # What the host says after the update when it needs a reboot: the
        # kernel alone (a live patch may stand in), or more than the kernel.
        self._reasons = (Reason("reboot-required", "the update needs a reboot", kernel=kernel),)
        self._verify_timeout = verify_timeout
        self._to_datetime = to_datetime
        self._steps: dict[State, Callable[[Fate, Order, int], tuple[Event, int]]] = {
            State.RECEIVED: lambda fate, order, now: (Event.OK, 0),
            State.PRECHECK: self._precheck,
            State.SNAPSHOT: lambda fate, order, now: (Event.OK, fate.snapshot),
            State.APPLY: self._apply,
            State.LIVEPATCH: lambda fate, order, now: (Event.OK, fate.live),
            State.RESTART: lambda fate, order, now: (Event.OK, 0),
            State.REBOOT: self._reboot,
            State.REBOOTED: self._rebooted,
            State.VERIFY: self._verify,
            State.REVERT: self._revert,
        }

    def step(self, state: State, fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        """The event ``state``'s step ends with, and its duration (µs), for a
        host entering ``state`` at ``now``. Raises ModelGap for a state with no model."""
        model = self._steps.get(state)
        if model is None:
            raise ModelGap(
                f"the agent entered {state}, which the simulator has no model for "
                "(simulator/agentmodel.py: add how that step ends and how long it takes)"
            )
        return model(fate, order, now)

    @staticmethod
    def _precheck(fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if fate.precheck_fails:
            return Event.FAIL, fate.precheck
        return (Event.NOTHING_TO_DO if fate.up_to_date else Event.OK), fate.precheck

    def _apply(self, fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if order.closes is not None and now >= order.closes:
            return Event.ABORT, 0  # the window closed before the update could start
        if fate.apply_fails:
            return Event.FAIL, fate.apply
        done = now + fate.apply
        if self._agent_update:  # an agent update needs neither
            signals = Signals((), None)
        else:
            offer = LiveOffer("simulated", "sim-1") if fate.livepatch else None
            signals = Signals(self._reasons if fate.needs_reboot else (), offer)
        closes = None if order.closes is None else self._to_datetime(order.closes)
        policy = OrderPolicy(self._order_policy.reboot, self._order_policy.livepatch, closes)
        decision = decide(signals, policy, _HOST_POLICY, self._to_datetime(done))
        order.why = decision.reason
        order.pending = decision.action is Action.PENDING_REBOOT
        event = {Action.LIVEPATCH: Event.LIVEPATCH, Action.REBOOT: Event.REBOOT}
        return event.get(decision.action, Event.OK), fate.apply

    @staticmethod
    def _reboot(fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if order.reboot_for_revert:
            return Event.OK, fate.reboot
        if order.closes is not None and now >= order.closes:
            order.pending = True  # the window closed before the reboot: verify, end pending
            return Event.DEFER, 0
        order.booted = True
        return Event.OK, fate.reboot

    @staticmethod
    def _rebooted(fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if order.reboot_for_revert:
            order.rebooted_back = True
            return Event.REVERTING, 0
        return Event.OK, 0

    def _verify(self, fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if fate.regresses:
            return Event.FAIL, self._verify_timeout
        took = min(fate.verify, self._verify_timeout)
        return (Event.PENDING if order.pending else Event.OK), took

    @staticmethod
    def _revert(fate: Fate, order: Order, now: int) -> tuple[Event, int]:
        if order.booted and not order.rebooted_back:
            order.reboot_for_revert = True  # back to the kernel it ran before
            return Event.REBOOT, fate.revert
        took = fate.verify if order.rebooted_back else fate.revert  # after the reboot: checks
        return (Event.FAIL if fate.revert_fails else Event.OK), took
