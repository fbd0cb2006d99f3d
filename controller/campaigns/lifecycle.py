"""A running campaign's lifecycle: the rules the controller applies between
decisions, as pure functions that its engine and the simulator both call.

    silence     a host counts as silent ``rollout.silent_after`` after its
                last check-in, but never counted from before the controller
                (re)started watching: nobody could check in while it was
                down, so an outage must not make the fleet look dark
    time-outs   an order in flight times out ``rollout.report_timeout``
                after its last report (or its assignment), counted from the
                restart at the earliest, for the same reason
    verdict     after every change: halt when a ring's failures or silent
                hosts exceed their limits (`gates.evaluate_halt`), else
                complete when `scheduler.is_complete`, else go on
    resume      a person resuming a halted campaign accepts the failures and
                silent hosts that halted it; the limits apply to what comes
                on top
    revert      an aborted campaign with ``--revert`` sends a revert to each
                host it patched, once

``watching_since`` is when this controller started watching (its start,
or the end of a simulated outage); None means "always has".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.campaigns.gates import HaltReason, evaluate_halt
from controller.campaigns.scheduler import is_complete
from controller.campaigns.spec import CampaignSpec
from controller.campaigns.tallies import Tallies


def silence_counts_from(
    last_seen: datetime | None, watching_since: datetime | None
) -> datetime | None:
    """The instant a host's silence is measured from: its last check-in,
    but not before ``watching_since``. None: never seen by a controller
    that has always watched (silent at once)."""
    if watching_since is None:
        return last_seen
    if last_seen is None or last_seen < watching_since:
        return watching_since
    return last_seen


def silent_after(
    campaign: CampaignSpec, last_seen: datetime | None, watching_since: datetime | None
) -> datetime | None:
    """The instant after which the host counts as silent unless it checks in
    (None: it already does, whatever the time)."""
    since = silence_counts_from(last_seen, watching_since)
    return None if since is None else since + campaign.rollout.silent_after


def host_silent(
    campaign: CampaignSpec,
    last_seen: datetime | None,
    watching_since: datetime | None,
    now: datetime,
) -> bool:
    """Whether a host last seen at ``last_seen`` counts as silent at ``now``."""
    after = silent_after(campaign, last_seen, watching_since)
    return after is None or now > after


def report_due_by(
    campaign: CampaignSpec, last_report_at: datetime, watching_since: datetime | None
) -> datetime:
    """The instant after which an order in flight whose last report (or
    assignment) was at ``last_report_at`` times out."""
    since = last_report_at if watching_since is None else max(last_report_at, watching_since)
    return since + campaign.rollout.report_timeout


def order_timed_out(
    campaign: CampaignSpec,
    last_report_at: datetime,
    watching_since: datetime | None,
    now: datetime,
) -> bool:
    """Whether an order in flight has gone without a report for too long."""
    return now > report_due_by(campaign, last_report_at, watching_since)


@dataclass(frozen=True)
class Halt:
    """The campaign must halt, and why."""

    reason: HaltReason


@dataclass(frozen=True)
class Complete:
    """Every eligible host is done (or the deadline passed): it completes."""


Verdict = Halt | Complete | None


def verdict(campaign: CampaignSpec, tallies: Tallies, now: datetime) -> Verdict:
    """What a running campaign's counts call for at ``now``: a halt (checked
    first: a breached budget stops even the last ring), completion, or
    nothing (None: it goes on)."""
    halt = evaluate_halt(campaign, tallies)
    if halt is not None:
        return Halt(halt)
    if is_complete(campaign, tallies, now):
        return Complete()
    return None


@dataclass(frozen=True)
class Acceptance:
    """What a resume accepts, per ring: the failures and silent hosts counted
    when it was resumed (the halt limits apply on top of these)."""

    failures: Mapping[int, int]
    silent: Mapping[int, int]


def accepted_on_resume(campaign: CampaignSpec, tallies: Tallies) -> Acceptance:
    """What resuming a halted campaign with these counts accepts."""
    rings = [stage.ring for stage in campaign.rollout.rings]
    return Acceptance(
        failures={r: tallies.ring(r).failures for r in rings},
        silent={r: tallies.ring(r).silent for r in rings},
    )


def revert_due(patched: bool, already_reverting: bool) -> bool:
    """Whether an aborted ``--revert`` campaign sends this host a revert: it
    was patched (succeeded, or pending its reboot) and has no revert yet."""
    return patched and not already_reverting
