"""The transition table of a work order: complete, closed, and stable."""

from __future__ import annotations

from agent.orders.states import (
    RESERVED,
    RESUME,
    TERMINAL,
    TRANSITIONS,
    Event,
    Resume,
    State,
    next_state,
)

ACTIVE = [s for s in State if s not in TERMINAL and s not in RESERVED]


def test_stored_state_names_never_change():
    # These strings are in journals and databases in the field.
    assert [s.value for s in State] == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "LIVEPATCH", "RESTART", "REBOOT", "REBOOTED",
        "VERIFY", "REVERT", "SUCCEEDED", "PENDING_REBOOT", "PENDING_RESTART", "REVERTED",
        "REVERT_FAILED", "FAILED",
    ]  # fmt: skip
    assert [e.value for e in Event] == [
        "ok", "fail", "abort", "nothing-to-do", "loop", "revert-ordered",
        "livepatch", "reboot", "defer", "pending-reboot", "pending-restart", "reverting",
    ]  # fmt: skip


def test_every_active_state_has_a_resume_rule():
    assert set(RESUME) == set(ACTIVE)


def test_every_active_state_has_a_way_out_of_a_crash_loop():
    for state in ACTIVE:
        assert (state, Event.LOOP) in TRANSITIONS, state


def test_terminal_states_have_no_way_out():
    assert not [k for k in TRANSITIONS if k[0] in TERMINAL]


def test_every_state_but_the_reserved_ones_is_reachable():
    seen, frontier = {State.RECEIVED}, [State.RECEIVED]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State) - RESERVED
    assert RESERVED & seen == set()


def test_a_host_that_may_have_changed_always_goes_through_revert():
    for state in (State.APPLY, State.LIVEPATCH, State.RESTART, State.REBOOT, State.REBOOTED,
                  State.VERIFY):  # fmt: skip
        assert next_state(state, Event.FAIL) is State.REVERT
        assert next_state(state, Event.LOOP) is State.REVERT
    # Only a step that gave up before touching anything may end in FAILED.
    assert next_state(State.APPLY, Event.ABORT) is State.FAILED
    assert (State.VERIFY, Event.ABORT) not in TRANSITIONS


def test_failures_before_apply_end_without_a_revert():
    for state in (State.PRECHECK, State.SNAPSHOT):
        assert next_state(state, Event.FAIL) is State.FAILED


def test_revert_ends_reverted_or_says_it_failed():
    assert next_state(State.REVERT, Event.OK) is State.REVERTED
    assert next_state(State.REVERT, Event.FAIL) is State.REVERT_FAILED
    assert next_state(State.REVERT, Event.LOOP) is State.REVERT_FAILED


def test_no_state_is_reserved_any_more():
    assert not RESERVED


def test_the_decision_after_apply_leads_to_restarts_livepatch_or_reboot():
    # Without a reboot, services running replaced code restart before VERIFY.
    assert next_state(State.APPLY, Event.OK) is State.RESTART
    assert next_state(State.APPLY, Event.LIVEPATCH) is State.LIVEPATCH
    assert next_state(State.APPLY, Event.REBOOT) is State.REBOOT
    assert next_state(State.LIVEPATCH, Event.OK) is State.RESTART
    assert next_state(State.RESTART, Event.OK) is State.VERIFY
    assert next_state(State.LIVEPATCH, Event.REBOOT) is State.REBOOT


def test_a_reboot_comes_back_to_verify_or_reverts():
    assert next_state(State.REBOOT, Event.OK) is State.REBOOTED
    assert next_state(State.REBOOTED, Event.OK) is State.VERIFY
    assert next_state(State.REBOOT, Event.FAIL) is State.REVERT  # it never happened
    assert next_state(State.REBOOTED, Event.FAIL) is State.REVERT  # the wrong kernel


def test_a_reboot_that_may_not_happen_now_ends_pending_after_verification():
    # Never silently: the update is verified, then the order says so.
    assert next_state(State.REBOOT, Event.DEFER) is State.VERIFY
    assert next_state(State.LIVEPATCH, Event.DEFER) is State.RESTART
    assert next_state(State.VERIFY, Event.PENDING) is State.PENDING_REBOOT
    assert State.PENDING_REBOOT in TERMINAL


def test_services_left_on_replaced_code_end_pending_restart_after_verification():
    assert next_state(State.VERIFY, Event.PENDING_RESTART) is State.PENDING_RESTART
    assert State.PENDING_RESTART in TERMINAL
    assert RESUME[State.RESTART] is Resume.RERUN


def test_a_kernel_revert_reboots_once_and_comes_back_to_revert():
    assert next_state(State.REVERT, Event.REBOOT) is State.REBOOT
    assert next_state(State.REBOOTED, Event.REVERTING) is State.REVERT
    assert next_state(State.REVERT, Event.DEFER) is State.PENDING_REBOOT


def test_reboot_resumes_by_boot_id_and_the_rest_rerun():
    assert RESUME[State.REBOOT] is Resume.BOOT
    assert RESUME[State.REBOOTED] is Resume.RERUN
    assert RESUME[State.LIVEPATCH] is Resume.RERUN
    assert RESUME[State.APPLY] is Resume.RECOVER
