"""The states of one work order and the table of transitions between them.

State and event names are stored in the journal and sent to the
controller: once released they never change (add, never rename).

    RECEIVED -> PRECHECK -> SNAPSHOT -> APPLY -> VERIFY -> SUCCEEDED
    RECEIVED -> REVERT (a revert order: undo an earlier order from its snapshot)
                                          |         \\-> REVERT -> REVERTED | REVERT_FAILED
                                          \\-> REVERT (the transaction failed midway)
    PRECHECK/SNAPSHOT -> FAILED (nothing changed: unhealthy host, policy, no revertable copy)
    PRECHECK -> SUCCEEDED (nothing to do: already up to date)

LIVEPATCH, REBOOT, REBOOTED and PENDING_REBOOT are reserved here for the
reboot and live-patch work; no transition enters them yet.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RECEIVED = "RECEIVED"
    PRECHECK = "PRECHECK"
    SNAPSHOT = "SNAPSHOT"
    APPLY = "APPLY"
    LIVEPATCH = "LIVEPATCH"
    REBOOT = "REBOOT"
    REBOOTED = "REBOOTED"
    VERIFY = "VERIFY"
    REVERT = "REVERT"
    SUCCEEDED = "SUCCEEDED"
    PENDING_REBOOT = "PENDING_REBOOT"
    REVERTED = "REVERTED"
    REVERT_FAILED = "REVERT_FAILED"
    FAILED = "FAILED"


class Event(StrEnum):
    OK = "ok"
    FAIL = "fail"  # the step failed; what that means depends on the state
    ABORT = "abort"  # the step gave up before changing anything
    NOTHING_TO_DO = "nothing-to-do"
    LOOP = "loop"  # the state was re-entered too often (crash loop)
    REVERT_ORDERED = "revert-ordered"  # a revert order: undo an earlier order


TERMINAL = frozenset(
    {State.SUCCEEDED, State.PENDING_REBOOT, State.REVERTED, State.REVERT_FAILED, State.FAILED}
)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.RECEIVED, Event.OK): State.PRECHECK,
    (State.RECEIVED, Event.LOOP): State.FAILED,
    (State.RECEIVED, Event.FAIL): State.FAILED,
    (State.RECEIVED, Event.REVERT_ORDERED): State.REVERT,
    (State.PRECHECK, Event.OK): State.SNAPSHOT,
    (State.PRECHECK, Event.NOTHING_TO_DO): State.SUCCEEDED,
    (State.PRECHECK, Event.FAIL): State.FAILED,
    (State.PRECHECK, Event.LOOP): State.FAILED,
    (State.SNAPSHOT, Event.OK): State.APPLY,
    (State.SNAPSHOT, Event.FAIL): State.FAILED,
    (State.SNAPSHOT, Event.LOOP): State.FAILED,
    (State.APPLY, Event.OK): State.VERIFY,
    (State.APPLY, Event.FAIL): State.REVERT,
    (State.APPLY, Event.ABORT): State.FAILED,
    (State.APPLY, Event.LOOP): State.REVERT,
    (State.VERIFY, Event.OK): State.SUCCEEDED,
    (State.VERIFY, Event.FAIL): State.REVERT,
    (State.VERIFY, Event.LOOP): State.REVERT,
    (State.REVERT, Event.OK): State.REVERTED,
    (State.REVERT, Event.FAIL): State.REVERT_FAILED,
    (State.REVERT, Event.LOOP): State.REVERT_FAILED,
}


class Resume(StrEnum):
    """What an agent does, after a crash or restart, with an order it finds
    in a non-terminal state."""

    RERUN = "rerun"  # the step has no lasting side effect, or is idempotent
    RECOVER = "recover"  # repair the package manager, then verify or revert


RESUME: dict[State, Resume] = {
    State.RECEIVED: Resume.RERUN,
    State.PRECHECK: Resume.RERUN,
    State.SNAPSHOT: Resume.RERUN,
    State.APPLY: Resume.RECOVER,
    State.VERIFY: Resume.RERUN,
    State.REVERT: Resume.RERUN,
}

# Reserved for the reboot and live-patch work: named, not yet entered.
RESERVED = frozenset({State.LIVEPATCH, State.REBOOT, State.REBOOTED, State.PENDING_REBOOT})

# How often a state may be entered for one order before the loop guard
# steps in (a crash that repeats at the same step must not loop forever).
# Waiting on a package manager locked by someone else is not an entry.
MAX_ENTRIES = 3


def next_state(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; KeyError for an illegal pair."""
    return TRANSITIONS[(state, event)]
