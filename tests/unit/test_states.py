"""The transition table of a work order: complete, closed, and stable."""

from __future__ import annotations

from agent.states import (
    RESERVED,
    RESUME,
    TERMINAL,
    TRANSITIONS,
    Event,
    State,
    next_state,
)

ACTIVE = [s for s in State if s not in TERMINAL and s not in RESERVED]


def test_stored_state_names_never_change():
    # These strings are in journals and databases in the field.
    assert [s.value for s in State] == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "LIVEPATCH", "REBOOT", "REBOOTED",
        "VERIFY", "REVERT", "SUCCEEDED", "PENDING_REBOOT", "REVERTED", "REVERT_FAILED", "FAILED",
    ]  # fmt: skip
    assert [e.value for e in Event] == [
        "ok", "fail", "abort", "nothing-to-do", "loop", "revert-ordered",
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
    for state in (State.APPLY, State.VERIFY):
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
