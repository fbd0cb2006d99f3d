"""The decision after an update, table-driven: every combination of the
order's policy (reboot x livepatch), the host's policy (allow_reboot), the
host's signals and the maintenance window."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from fleetpatch.v1 import types_pb2

from agent.boot.decide import Action, Decision, LiveOffer, OrderPolicy, Reason, Signals, decide
from agent.orders.policy import Policy
from agent.orders.workorder import Livepatch, Reboot, from_pb
from tests.support.orders import work_order

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
KERNEL = Reason("kernel", "kernel 6.1.0-17-amd64 is installed", kernel=True)
LIBC = Reason("reboot-required", "/run/reboot-required names libc6")
OFFER = LiveOffer("kpatch", "kpatch_6_1_0_13_1", covered_until=date(2027, 1, 1))
EXPIRED = LiveOffer("canonical-livepatch", "104.1", covered_until=date(2026, 11, 1))

# name -> host signals
SIGNALS = {
    "none": Signals(),
    "kernel+patch": Signals((KERNEL,), OFFER),
    "kernel": Signals((KERNEL,)),
    "kernel+expired": Signals((KERNEL,), EXPIRED),
    "libc+patch": Signals((KERNEL, LIBC), OFFER),
}
OPEN, CLOSED = NOW + timedelta(hours=1), NOW - timedelta(minutes=1)

N, L, R, P = Action.NONE, Action.LIVEPATCH, Action.REBOOT, Action.PENDING_REBOOT
NEVER, IFREQ, ALWAYS = Reboot.NEVER, Reboot.IF_REQUIRED, Reboot.ALWAYS
LP_NEVER, PREFER, ONLY = Livepatch.NEVER, Livepatch.PREFER, Livepatch.ONLY

# (signals, reboot, livepatch, allow_reboot, window open) -> action, words in the reason
TABLE = [
    # Nothing needed: nothing, unless the order asks for a reboot always.
    ("none", IFREQ, LP_NEVER, True, True, N, "no reboot needed"),
    ("none", NEVER, PREFER, True, True, N, "no reboot needed"),
    ("none", ALWAYS, LP_NEVER, True, True, R, "asks for a reboot always"),
    ("none", ALWAYS, PREFER, True, True, R, "asks for a reboot always"),
    ("none", ALWAYS, LP_NEVER, False, True, P, "allow_reboot is false"),
    ("none", ALWAYS, LP_NEVER, True, False, P, "window closed"),
    ("none", ALWAYS, ONLY, True, True, N, "livepatch=only"),
    # A kernel update with a live patch on offer.
    ("kernel+patch", IFREQ, PREFER, True, True, L, "live patch kpatch kpatch_6_1_0_13_1"),
    ("kernel+patch", NEVER, PREFER, True, True, L, "stands in for the reboot"),
    ("kernel+patch", IFREQ, PREFER, False, False, L, "stands in"),
    ("kernel+patch", ALWAYS, PREFER, True, True, R, "reboot needed"),
    ("kernel+patch", ALWAYS, ONLY, True, True, L, "stands in"),
    ("kernel+patch", IFREQ, ONLY, False, False, L, "stands in"),
    ("kernel+patch", IFREQ, LP_NEVER, True, True, R, "kernel 6.1.0-17-amd64"),
    ("kernel+patch", NEVER, LP_NEVER, True, True, P, "reboot=never"),
    # A kernel update and no live patch.
    ("kernel", IFREQ, PREFER, True, True, R, "reboot needed"),
    ("kernel", IFREQ, PREFER, True, False, P, "maintenance window closed"),
    ("kernel", IFREQ, PREFER, False, True, P, "allow_reboot is false"),
    ("kernel", NEVER, PREFER, True, True, P, "reboot=never"),
    ("kernel", IFREQ, ONLY, True, True, P, "no live-patch provider has a patch"),
    ("kernel", ALWAYS, ONLY, True, True, P, "livepatch=only forbids it"),
    # Coverage that has ended is no coverage.
    ("kernel+expired", IFREQ, PREFER, True, True, R, "reboot needed"),
    ("kernel+expired", IFREQ, ONLY, True, True, P, "stopped covering this kernel on 2026-11-01"),
    # More than the kernel needs the reboot: a live patch cannot stand in.
    ("libc+patch", IFREQ, PREFER, True, True, R, "libc6"),
    ("libc+patch", IFREQ, ONLY, True, True, P, "more than the running kernel"),
    ("libc+patch", IFREQ, PREFER, False, True, P, "allow_reboot is false"),
    ("libc+patch", NEVER, LP_NEVER, True, True, P, "reboot=never"),
]


def _decide(signals: str, reboot, livepatch, allow: bool, window_open: bool) -> Decision:
    order = OrderPolicy(reboot, livepatch, OPEN if window_open else CLOSED)
    return decide(SIGNALS[signals], order, Policy(allow_reboot=allow), NOW)


@pytest.mark.parametrize(
    ("signals", "reboot", "livepatch", "allow", "window_open", "action", "words"), TABLE
)
def test_decision_table(signals, reboot, livepatch, allow, window_open, action, words):
    decision = _decide(signals, reboot, livepatch, allow, window_open)
    assert decision.action is action, decision.reason
    assert words in decision.reason


MATRIX = list(
    itertools.product(SIGNALS, Reboot, Livepatch, (True, False), (True, False))
)  # 5 x 3 x 3 x 2 x 2 = 180


@pytest.mark.parametrize(("signals", "reboot", "livepatch", "allow", "window_open"), MATRIX)
def test_every_combination_keeps_the_promises(signals, reboot, livepatch, allow, window_open):
    decision = _decide(signals, reboot, livepatch, allow, window_open)
    host = SIGNALS[signals]
    covered = host.kernel_only and host.livepatch is not None and signals != "kernel+expired"
    assert decision.reason
    if decision.action is R:  # a reboot only when everyone allows it, now
        assert reboot is not NEVER
        assert livepatch is not ONLY
        assert allow
        assert window_open
        assert host.needed or reboot is ALWAYS
    if decision.action is L:  # a live patch only where asked for and it covers
        assert livepatch is not LP_NEVER
        assert covered
    if decision.action is N:  # nothing only when nothing is owed
        assert not host.needed
        assert reboot is not ALWAYS or livepatch is ONLY
    if decision.action is P:  # never silently: something was owed and blocked
        assert host.needed or reboot is ALWAYS


def test_the_order_policy_comes_from_the_work_order():
    pb = work_order("h-1", 1, reboot=types_pb2.REBOOT_POLICY_IF_REQUIRED)
    pb.livepatch = types_pb2.LIVEPATCH_POLICY_PREFER
    pb.window_closes_at.FromDatetime(OPEN)
    policy = OrderPolicy.of(from_pb(pb))
    assert policy == OrderPolicy(Reboot.IF_REQUIRED, Livepatch.PREFER, OPEN)
