"""controller.campaigns.lifecycle: the rules the engine and the simulator share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.campaigns import CampaignState, CellTally, Tallies, parse_campaign
from controller.campaigns.gates import HaltKind
from controller.campaigns.lifecycle import (
    Complete,
    Halt,
    accepted_on_resume,
    host_silent,
    order_timed_out,
    report_due_by,
    revert_due,
    silence_counts_from,
    silent_after,
    verdict,
)

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
SPEC = parse_campaign(
    """
[campaign]
name = "life"
[patch]
packages = ["openssl"]
[rollout]
silent_after = "20m"
report_timeout = "45m"
silent_threshold = 0
rings = [{ ring = 0, concurrency = "100%", gate = { failure_budget = 1 } }, { ring = 1 }]
""",
    "life.toml",
)
MIN = timedelta(minutes=1)


def test_silence_is_counted_from_the_last_check_in_for_a_controller_that_always_watched():
    assert silence_counts_from(T0, None) == T0
    assert silence_counts_from(None, None) is None
    assert silent_after(SPEC, T0, None) == T0 + 20 * MIN
    assert not host_silent(SPEC, T0, None, T0 + 20 * MIN)
    assert host_silent(SPEC, T0, None, T0 + 20 * MIN + timedelta(microseconds=1))
    assert host_silent(SPEC, None, None, T0)  # never seen


def test_silence_is_counted_from_a_restart_at_the_earliest():
    restart = T0 + 60 * MIN  # down for an hour: nobody could check in
    assert silence_counts_from(T0, restart) == restart
    assert silence_counts_from(None, restart) == restart
    assert silence_counts_from(restart + MIN, restart) == restart + MIN
    assert not host_silent(SPEC, T0, restart, restart + 10 * MIN)
    assert not host_silent(SPEC, None, restart, restart + 20 * MIN)
    # A host that really went dark is silent silent_after past the restart.
    assert host_silent(SPEC, T0, restart, restart + 21 * MIN)


def test_report_time_outs_are_counted_from_a_restart_at_the_earliest():
    assert report_due_by(SPEC, T0, None) == T0 + 45 * MIN
    assert order_timed_out(SPEC, T0, None, T0 + 46 * MIN)
    assert not order_timed_out(SPEC, T0, None, T0 + 45 * MIN)
    restart = T0 + 60 * MIN
    assert report_due_by(SPEC, T0, restart) == restart + 45 * MIN
    assert not order_timed_out(SPEC, T0, restart, restart + 44 * MIN)
    assert order_timed_out(SPEC, T0, restart, restart + 46 * MIN)
    assert report_due_by(SPEC, restart + MIN, restart) == restart + 46 * MIN


def _tallies(ring0: CellTally, ring1: CellTally, **accepted: dict[int, int]) -> Tallies:
    return Tallies(
        CampaignState.RUNNING, {(0, "eu"): ring0, (1, "eu"): ring1},
        accepted_failures=accepted.get("failures", {}), accepted_silent=accepted.get("silent", {}),
    )  # fmt: skip


def test_the_verdict_halts_first_then_completes_else_goes_on():
    done = CellTally(eligible=4, succeeded=4)
    assert verdict(SPEC, _tallies(done, done), T0) == Complete()
    going = CellTally(eligible=4, succeeded=2, in_flight=2)
    assert verdict(SPEC, _tallies(done, going), T0) is None
    # Two failures on a budget of one: a halt, even with every host finished.
    failed = CellTally(eligible=4, succeeded=2, reverted=2)
    halted = verdict(SPEC, _tallies(failed, done), T0)
    assert isinstance(halted, Halt)
    assert halted.reason.kind is HaltKind.FAILURE_BUDGET
    assert halted.reason.ring == 0
    silent = CellTally(eligible=4, succeeded=4, silent=1)
    halted = verdict(SPEC, _tallies(done, silent), T0)
    assert isinstance(halted, Halt)
    assert halted.reason.kind is HaltKind.SILENT_HOSTS


def test_a_resume_accepts_what_halted_it_and_the_limits_apply_on_top():
    failed = CellTally(eligible=10, succeeded=2, reverted=2, timed_out=1, in_flight=5)
    quiet = CellTally(eligible=4, silent=1)
    tallies = _tallies(failed, quiet)
    assert isinstance(verdict(SPEC, tallies, T0), Halt)
    accepted = accepted_on_resume(SPEC, tallies)
    assert accepted.failures == {0: 3, 1: 0}
    assert accepted.silent == {0: 0, 1: 1}
    resumed = _tallies(
        failed, quiet, failures=dict(accepted.failures), silent=dict(accepted.silent)
    )
    assert verdict(SPEC, resumed, T0) is None
    worse = CellTally(eligible=10, succeeded=2, reverted=4, timed_out=1, in_flight=3)
    again = _tallies(worse, quiet, failures=dict(accepted.failures), silent=dict(accepted.silent))
    assert isinstance(verdict(SPEC, again, T0), Halt)  # 2 more failures, budget 1


def test_an_aborted_revert_campaign_reverts_each_patched_host_once():
    assert revert_due(patched=True, already_reverting=False)
    assert not revert_due(patched=True, already_reverting=True)
    assert not revert_due(patched=False, already_reverting=False)
