"""The states of one work order and the table of transitions between them.

State and event names are stored in the journal and sent to the
controller: once released they never change (add, never rename).

    RECEIVED -> PRECHECK -> SNAPSHOT -> APPLY -> RESTART -> VERIFY -> SUCCEEDED
                                          |  \\-> LIVEPATCH -> RESTART       | PENDING_REBOOT
                                          |  \\-> REBOOT -> REBOOTED -> VERIFY | PENDING_RESTART
                                          \\-> REVERT (the transaction failed midway)
    RESTART, VERIFY, LIVEPATCH, REBOOT, REBOOTED -> REVERT
    REVERT -> REVERTED | REVERT_FAILED | PENDING_REBOOT
    REVERT -> REBOOT -> REBOOTED -> REVERT (back to the previous kernel, once)
    RECEIVED -> REVERT (a revert order: undo an earlier order from its snapshot)
    PRECHECK/SNAPSHOT -> FAILED (nothing changed: unhealthy host, policy, no revertable copy)
    PRECHECK -> SUCCEEDED (nothing to do: already up to date)

After APPLY the agent decides (`decide.decide`) whether the host needs
nothing more, a live patch, or a reboot. A reboot that may not happen now
(order or local policy, a closed window) is not skipped silently: the
order is verified and ends PENDING_REBOOT, a terminal state the controller
sees (like SSM's InstalledPendingReboot).

RESTART restarts the services that still run code the update replaced
(`restartsteps`), so VERIFY judges the new code; a service that fails to
start on it is reverted. Services it may not restart (the order says
"report", local policy holds them) leave the order PENDING_RESTART once
verified. After a reboot nothing old runs: REBOOTED goes straight to VERIFY.

A reboot is journaled (REBOOT, with the boot id it leaves) before it is
asked for. After a restart, an order found in REBOOT is resumed by its boot
id: a new one means the host rebooted (-> REBOOTED); the same one after the
reboot timeout means the reboot never happened (-> REVERT, reported).
"""

from __future__ import annotations

from enum import StrEnum

from fleetpatch.orderspec import OrderState

State = OrderState  # the agent's name for it (fleetpatch.orderspec)


class Event(StrEnum):
    OK = "ok"
    FAIL = "fail"  # the step failed; what that means depends on the state
    ABORT = "abort"  # the step gave up before changing anything
    NOTHING_TO_DO = "nothing-to-do"
    LOOP = "loop"  # the state was re-entered too often (crash loop)
    REVERT_ORDERED = "revert-ordered"  # a revert order: undo an earlier order
    LIVEPATCH = "livepatch"  # a live patch stands in for the reboot the update needs
    REBOOT = "reboot"  # the host must reboot now (into the update, or back from it)
    DEFER = "defer"  # a reboot is owed but may not happen now: verify, end pending
    PENDING = "pending-reboot"  # verified, and a reboot is still owed
    PENDING_RESTART = "pending-restart"  # verified; services still run replaced code
    REVERTING = "reverting"  # back from a reboot made for a revert: the revert goes on


TERMINAL = frozenset(
    {
        State.SUCCEEDED,
        State.PENDING_REBOOT,
        State.PENDING_RESTART,
        State.REVERTED,
        State.REVERT_FAILED,
        State.FAILED,
    }
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
    (State.APPLY, Event.OK): State.RESTART,
    (State.APPLY, Event.FAIL): State.REVERT,
    (State.APPLY, Event.ABORT): State.FAILED,
    (State.APPLY, Event.LOOP): State.REVERT,
    (State.APPLY, Event.LIVEPATCH): State.LIVEPATCH,
    (State.APPLY, Event.REBOOT): State.REBOOT,
    # The live patch did not take: reboot instead, or end pending if that
    # may not happen now. A half-applied patch is reverted.
    (State.LIVEPATCH, Event.OK): State.RESTART,
    (State.LIVEPATCH, Event.REBOOT): State.REBOOT,
    (State.LIVEPATCH, Event.DEFER): State.RESTART,
    (State.LIVEPATCH, Event.FAIL): State.REVERT,
    (State.LIVEPATCH, Event.LOOP): State.REVERT,
    # A service that does not come back on the new code fails the update.
    (State.RESTART, Event.OK): State.VERIFY,
    (State.RESTART, Event.FAIL): State.REVERT,
    (State.RESTART, Event.LOOP): State.REVERT,
    # OK: the boot id changed under the step itself (an in-process rebooter,
    # the simulator). A real reboot ends the process; resume goes on.
    (State.REBOOT, Event.OK): State.REBOOTED,
    (State.REBOOT, Event.DEFER): State.VERIFY,
    (State.REBOOT, Event.FAIL): State.REVERT,
    (State.REBOOT, Event.LOOP): State.REVERT,
    (State.REBOOTED, Event.OK): State.VERIFY,
    (State.REBOOTED, Event.REVERTING): State.REVERT,
    (State.REBOOTED, Event.FAIL): State.REVERT,
    (State.REBOOTED, Event.LOOP): State.REVERT,
    (State.VERIFY, Event.OK): State.SUCCEEDED,
    (State.VERIFY, Event.PENDING): State.PENDING_REBOOT,
    (State.VERIFY, Event.PENDING_RESTART): State.PENDING_RESTART,
    (State.VERIFY, Event.FAIL): State.REVERT,
    (State.VERIFY, Event.LOOP): State.REVERT,
    (State.REVERT, Event.OK): State.REVERTED,
    (State.REVERT, Event.REBOOT): State.REBOOT,
    (State.REVERT, Event.DEFER): State.PENDING_REBOOT,
    (State.REVERT, Event.FAIL): State.REVERT_FAILED,
    (State.REVERT, Event.LOOP): State.REVERT_FAILED,
}


class Resume(StrEnum):
    """What an agent does, after a crash or restart, with an order it finds
    in a non-terminal state."""

    RERUN = "rerun"  # the step has no lasting side effect, or is idempotent
    RECOVER = "recover"  # repair the package manager, then verify or revert
    BOOT = "boot"  # compare boot ids: rebooted -> REBOOTED; not after the timeout -> REVERT


RESUME: dict[State, Resume] = {
    State.RECEIVED: Resume.RERUN,
    State.PRECHECK: Resume.RERUN,
    State.SNAPSHOT: Resume.RERUN,
    State.APPLY: Resume.RECOVER,
    State.LIVEPATCH: Resume.RERUN,  # loading a loaded patch is a no-op
    State.RESTART: Resume.RERUN,  # restarted services no longer run old code
    State.REBOOT: Resume.BOOT,
    State.REBOOTED: Resume.RERUN,
    State.VERIFY: Resume.RERUN,
    State.REVERT: Resume.RERUN,
}

# States named but not yet entered by any transition (none at the moment).
RESERVED: frozenset[State] = frozenset()

# How often a state may be entered for one order before the loop guard
# steps in (a crash that repeats at the same step must not loop forever).
# Waiting on a package manager locked by someone else is not an entry.
MAX_ENTRIES = 3

# Reboots one order may make: into the update, and once back from it. A
# revert that would need a third is reported failed instead (reboot loop).
MAX_REBOOTS = 2


def next_state(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; KeyError for an illegal pair."""
    return TRANSITIONS[(state, event)]
