"""Whose turn is it: the pure decision the controller makes at each check-in.

``decide(campaign, host, tallies, now)`` returns `Assign`, `Wait` (with a
reason, and when known the earliest time the answer could become Assign)
or `Skip` (this campaign will never patch the host). No I/O, no clock: the
controller passes ``now`` and the simulator runs the same code in virtual
time.

Rollout semantics, exactly:

* Targeting. A host is targeted when its ring is listed in
  ``[[rollout.rings]]`` and it matches every ``[targets]`` criterion given
  (region in ``regions``; for each label key, one of the listed values;
  ``os_id`` in ``os``). Others get ``Skip(not_targeted)``. The controller
  counts ``eligible`` with the same `is_targeted`.
* Concurrency counts a host from assignment until its final result, reboot
  and verification included. A ring's ``concurrency`` limits hosts in
  flight across the ring; ``region_concurrency`` limits them per region of
  the ring. A count is used as is; a percentage is of the eligible hosts
  (of the ring, or of the region in the ring), rounded up, at least 1. A
  host is assigned only while in_flight < limit, so the limit is never
  exceeded (tallies must include earlier assignments).
* Failure budget, per ring: failed + reverted + revert_failed + timed_out
  hosts (minus those a person accepted on resume). A count, or a percentage
  of the ring's eligible hosts rounded *down*. The campaign halts when the
  failures *exceed* the budget (budget 0: the first failure halts; budget
  2: the third does). Failed and timed-out hosts keep counting; hosts still
  in flight when it halts finish and count too.
* Timed out: a host in flight with no report for ``rollout.report_timeout``
  (longer than ``verify.timeout``); see `is_timed_out`.
* Silent hosts: assigned by this campaign, then not seen for
  ``rollout.silent_after`` (`is_silent`). When a ring's silent hosts exceed
  ``silent_threshold`` (count, or percentage of the ring's eligible hosts,
  rounded down) the campaign halts: a blind rollout must not go on.
  Unassigned hosts not seen that long are *unreachable*: excused from the
  ring's completion, and patched when they come back.
* Halts. `evaluate_halt` says when; the controller then sets the state to
  halted, and `decide` itself also refuses to assign while a limit is
  exceeded, so no assignment slips through before the state is written.
  Only a person resumes; the controller then records the current counts as
  accepted and the limits apply to what comes on top.
* Ring gate. Rings open in the order listed. Ring N+1 opens only when ring
  N has: no host in flight; every eligible host finished (unreachable ones
  excused) and at least one; succeeded / finished >= ``min_success``;
  failures within the budget; and ``bake`` passed since the ring finished
  (``Tallies.ring_finished_at``). A ring with no eligible host passes at
  once. Once a ring has started it stays open. When only bake time is
  missing, ``Wait.until`` is the end of the bake.
* Region order. ``sequential``: within a ring, one region at a time, the
  region with the fewest eligible hosts first (ties by name); the next
  starts when the previous is done (nothing in flight or left to assign).
  ``parallel``: all regions of an open ring at once.
* Windows: see `windows`. A host is assigned only while a usable window is
  open (before window end minus cutoff); `Assign.window_closes_at` is that
  instant, and the agent starts no disruptive step after it.
  ``emergency = true`` ignores windows and blackout dates, never
  concurrency, gates or halts.
* Deadline: at or after it, no assignment (``Skip(deadline_passed)``); a
  host whose earliest possible assignment is at or after it gets
  ``Skip(deadline_unreachable)``.

Checks run in this order, so a host gets the most lasting reason first:
targeting, campaign ended, deadline, campaign state (not started, paused,
halted), a limit exceeded, ring gate, region order, window, concurrency.

`Wait.until` is a lower bound: for the same campaign, decide will not
assign the host before it, whatever the tallies do (bake ends only move
later, windows do not depend on tallies). ``None``: no time is known; ask
again when the tallies or the campaign's state change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from fleetpatch.debversion import version_key

from controller.campaigns.gates import evaluate_halt, region_waits_for, ring_open
from controller.campaigns.spec import HOST_LOCAL, CampaignSpec, WindowPolicy
from controller.campaigns.tallies import CampaignState, Tallies
from controller.campaigns.windows import (
    WindowCache,
    WindowOpen,
    WindowState,
    evaluate_windows,
    load_zone,
)


@dataclass(frozen=True)
class HostFacts:
    """What the scheduler needs to know about one host."""

    host_id: str
    region: str
    ring: int
    labels: Mapping[str, str]
    os_id: str
    timezone: str = ""  # IANA name reported by the host; for host-local windows
    last_seen: datetime | None = None  # for `is_silent`; decide does not read it
    agent_version: str = ""  # as the host's agent reports it; for rollout.min_agent_version
    package_manager: str = ""  # apt, dnf: which agent package it takes; decide does not read it


# Everything of HostFacts that `decide` reads: hosts alike in all of it get
# the same answer at the same instant with the same tallies.
DecisionKey = tuple[int, str, str, str, tuple[tuple[str, str], ...], str, str]


def decision_key(host: HostFacts) -> DecisionKey:
    """What `decide` reads of ``host`` (so hosts can be grouped by it), and
    its package manager: an agent-update campaign hands each family its own
    package, and `campaign show` tells the families that have none apart."""
    labels = tuple(sorted(host.labels.items()))
    return (host.ring, host.region, host.timezone, host.os_id, labels, host.agent_version,
            host.package_manager)  # fmt: skip


class WaitReason(StrEnum):
    """Stored and shown; values never change once released."""

    NOT_STARTED = "not_started"  # draft or approved, not running yet
    PAUSED = "paused"
    HALTED = "halted"
    RING_GATE = "ring_gate"  # an earlier ring has not met its gate
    REGION_ORDER = "region_order"  # sequential: another region of the ring goes first
    WINDOW_CLOSED = "window_closed"
    TIMEZONE_UNKNOWN = "timezone_unknown"  # host-local windows, host reports no zone
    BUDGET_FULL = "budget_full"  # concurrency: the ring or region has enough in flight
    AGENT_OUTDATED = "agent_outdated"  # rollout.min_agent_version: update the agent first


class SkipReason(StrEnum):
    """Stored and shown; values never change once released."""

    NOT_TARGETED = "not_targeted"
    CAMPAIGN_ENDED = "campaign_ended"
    DEADLINE_PASSED = "deadline_passed"
    DEADLINE_UNREACHABLE = "deadline_unreachable"


@dataclass(frozen=True)
class Assign:
    """Patch this host now. ``window_closes_at`` (UTC): no disruptive step
    may start after it; None when no window applies (emergency, no
    [windows], or a window open beyond the 14-day horizon)."""

    window_closes_at: datetime | None


@dataclass(frozen=True)
class Wait:
    """Not now. ``until``: the earliest time it could be Assign (None: unknown)."""

    reason: WaitReason
    until: datetime | None = None
    detail: str = ""


@dataclass(frozen=True)
class Skip:
    """This campaign will not patch this host."""

    reason: SkipReason
    detail: str = ""


Decision = Assign | Wait | Skip


def decide(
    campaign: CampaignSpec,
    host: HostFacts,
    tallies: Tallies,
    now: datetime,
    windows: WindowCache | None = None,
) -> Decision:
    """Whether ``host`` (not yet assigned by this campaign) may start now.

    ``windows`` answers the maintenance windows (`evaluate_windows` when
    None); a caller deciding for many hosts passes one. Raises ValueError
    when ``now`` is not timezone-aware. See the module docstring for the
    semantics and the order of the checks.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    for check in (_targeting, _campaign_state, _rollout_position, _agent_current):
        decision = check(campaign, host, tallies, now)
        if decision is not None:
            return decision
    closes_at: datetime | None = None
    if campaign.windows is not None and not campaign.emergency:
        window = _window(campaign, campaign.windows, host, now, windows or evaluate_windows)
        if not isinstance(window, WindowOpen):
            return window
        closes_at = window.closes_at
    full = _concurrency_full(campaign, host, tallies)
    if full:
        return Wait(WaitReason.BUDGET_FULL, None, full)
    return Assign(window_closes_at=closes_at)


def _targeting(
    campaign: CampaignSpec, host: HostFacts, tallies: Tallies, now: datetime
) -> Decision | None:
    mismatch = targeting_mismatch(campaign, host)
    return Skip(SkipReason.NOT_TARGETED, mismatch) if mismatch else None


def _campaign_state(
    campaign: CampaignSpec, host: HostFacts, tallies: Tallies, now: datetime
) -> Decision | None:
    state = tallies.state
    if state in (CampaignState.COMPLETED, CampaignState.ABORTED):
        return Skip(SkipReason.CAMPAIGN_ENDED, f"the campaign is {state}")
    deadline = campaign.deadline
    if deadline is not None and now >= deadline:
        return Skip(
            SkipReason.DEADLINE_PASSED, f"the deadline {deadline:%Y-%m-%d %H:%M} UTC passed"
        )
    if state in (CampaignState.DRAFT, CampaignState.APPROVED):
        return Wait(WaitReason.NOT_STARTED, None, f"the campaign is {state}")
    if state is CampaignState.PAUSED:
        return Wait(WaitReason.PAUSED, None, "the campaign is paused")
    if state is CampaignState.HALTED:
        return Wait(WaitReason.HALTED, None, "the campaign is halted until a person resumes it")
    halt = evaluate_halt(campaign, tallies)
    return Wait(WaitReason.HALTED, None, halt.message) if halt else None


def _rollout_position(
    campaign: CampaignSpec, host: HostFacts, tallies: Tallies, now: datetime
) -> Decision | None:
    gate = ring_open(campaign, tallies, host.ring, now)
    if not gate.met:
        return _wait(campaign, WaitReason.RING_GATE, gate.until, gate.detail)
    first = region_waits_for(campaign, tallies, host.ring, host.region)
    if first is not None:
        return Wait(WaitReason.REGION_ORDER, None, f"ring {host.ring}: region {first} goes first")
    return None


def _agent_current(
    campaign: CampaignSpec, host: HostFacts, tallies: Tallies, now: datetime
) -> Decision | None:
    """The seed's "patch the agents first": a host whose agent is older than
    the campaign requires waits (and holds its ring's gate) until an
    agent-update campaign has updated it. An unknown version is older."""
    wanted = campaign.rollout.min_agent_version
    if not wanted:
        return None
    try:
        current = version_key(host.agent_version) >= version_key(wanted)
    except ValueError:
        current = False
    if current:
        return None
    return Wait(
        WaitReason.AGENT_OUTDATED, None,
        f"its agent is {host.agent_version or 'of unknown version'}, older than {wanted}",
    )  # fmt: skip


def _window(
    campaign: CampaignSpec,
    policy: WindowPolicy,
    host: HostFacts,
    now: datetime,
    evaluate: Callable[..., WindowState],
) -> WindowOpen | Decision:
    zone = load_zone(host.timezone if policy.timezone == HOST_LOCAL else policy.timezone)
    if zone is None:
        return Wait(
            WaitReason.TIMEZONE_UNKNOWN,
            None,
            f"windows are host-local and the host reports no known time zone ({host.timezone!r})",
        )
    window = evaluate(policy.weekly, zone, policy.blackout, policy.cutoff, now)
    if isinstance(window, WindowOpen):
        return window
    if window.opens_at is None:
        detail = f"no window opens before {window.searched_until:%Y-%m-%d} UTC"
        return _wait(campaign, WaitReason.WINDOW_CLOSED, window.searched_until, detail)
    detail = f"the next window opens {window.opens_at:%Y-%m-%d %H:%M} UTC"
    return _wait(campaign, WaitReason.WINDOW_CLOSED, window.opens_at, detail)


def _wait(
    campaign: CampaignSpec, reason: WaitReason, until: datetime | None, detail: str
) -> Decision:
    deadline = campaign.deadline
    if until is not None and deadline is not None and until >= deadline:
        return Skip(
            SkipReason.DEADLINE_UNREACHABLE,
            f"{detail}, which is not before the deadline {deadline:%Y-%m-%d %H:%M} UTC",
        )
    return Wait(reason, until, detail)


def _concurrency_full(campaign: CampaignSpec, host: HostFacts, tallies: Tallies) -> str:
    stage = campaign.rollout.rings[campaign.rollout.positions[host.ring]]
    ring = tallies.ring(host.ring)
    limit = stage.concurrency.ceil_of(ring.eligible)
    if ring.in_flight >= limit:
        return (
            f"ring {host.ring}: {ring.in_flight} in flight, the limit is {limit} "
            f"({stage.concurrency})"
        )
    if stage.region_concurrency is not None:
        cell = tallies.cell(host.ring, host.region)
        limit = stage.region_concurrency.ceil_of(cell.eligible)
        if cell.in_flight >= limit:
            return (
                f"ring {host.ring}, region {host.region}: {cell.in_flight} in flight, "
                f"the limit is {limit} ({stage.region_concurrency})"
            )
    return ""


def targeting_mismatch(campaign: CampaignSpec, host: HostFacts) -> str:
    """Why ``host`` is not targeted by ``campaign`` ("" when it is)."""
    targets = campaign.targets
    if host.ring not in campaign.rollout.positions:
        return f"ring {host.ring} is not in the rollout"
    if targets.hosts and host.host_id not in targets.hosts:
        return "the host is not in [targets] hosts"
    if targets.regions and host.region not in targets.regions:
        return f"region {host.region!r} is not targeted"
    for key, values in targets.labels:
        if host.labels.get(key) not in values:
            return f"label {key}={host.labels.get(key, '')!r} does not match"
    if targets.os_ids and host.os_id not in targets.os_ids:
        return f"os {host.os_id!r} is not targeted"
    return ""


def is_targeted(campaign: CampaignSpec, host: HostFacts) -> bool:
    """Whether ``campaign`` patches ``host``: what ``eligible`` counts."""
    return not targeting_mismatch(campaign, host)


def is_silent(campaign: CampaignSpec, last_seen: datetime | None, now: datetime) -> bool:
    """Not seen for longer than ``rollout.silent_after`` (never seen: silent)."""
    return last_seen is None or now - last_seen > campaign.rollout.silent_after


def is_timed_out(campaign: CampaignSpec, last_report_at: datetime, now: datetime) -> bool:
    """In flight and no report (or assignment) for longer than ``report_timeout``."""
    return now - last_report_at > campaign.rollout.report_timeout


def is_complete(campaign: CampaignSpec, tallies: Tallies, now: datetime) -> bool:
    """Nothing in flight, and every eligible host has a final result or the
    deadline has passed. Unreachable hosts keep a campaign running: they are
    patched when they come back."""
    rings = [tallies.ring(stage.ring) for stage in campaign.rollout.rings]
    if any(ring.in_flight for ring in rings):
        return False
    if campaign.deadline is not None and now >= campaign.deadline:
        return True
    return all(ring.finished >= ring.eligible for ring in rings)
