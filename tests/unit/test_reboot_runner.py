"""The runner's kernel and reboot paths with stand-in machines: deciding
after APPLY, live patching, rebooting (in process and across a restart),
reboots that never come, pending reboots, and reverting a kernel. The same
paths on a real sandboxed host are in tests/integration/test_reboot_agent.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import types_pb2

from agent.backends.base import Change, Plan, Snapshot
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.orders.states import State
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.orders import sign, trusted, work_order
from tests.support.reboot_fakes import FakeBootloader, FakeMachine, FakeProvider, FakeRebooter
from tests.unit.test_runner import HOST, Clock

NEW = "6.1.0-17-amd64"
OLD = "6.1.0-13-amd64"
IF_REQUIRED = types_pb2.REBOOT_POLICY_IF_REQUIRED


class KernelBackend(FakeBackend):
    """Upgrading linux-image-amd64 installs kernel NEW (and says a reboot
    is needed); reverting it removes NEW again."""

    def __init__(self, machine: FakeMachine) -> None:
        super().__init__({"linux-image-amd64": "1.0"}, {"linux-image-amd64": "1.1"})
        self.machine = machine

    def apply(self, plan: Plan) -> list[Change]:
        changes = super().apply(plan)
        self.machine.needs_kernel(NEW)
        return changes

    def revert(self, snapshot: Snapshot) -> list[Change]:
        changes = super().revert(snapshot)
        if NEW in self.machine.installed:
            self.machine.installed.remove(NEW)
        return changes


class BrokenOn(FakeProber):
    """Health checks that fail while ``kernel`` runs."""

    def __init__(self, machine: FakeMachine, kernel: str) -> None:
        super().__init__()
        self.machine, self.kernel = machine, kernel

    def run_all(self, specs):
        self.answers = [self.machine.kernel != self.kernel]
        return super().run_all(specs)


class Died(BaseException):
    """The agent process ends (the shutdown of a real reboot)."""


class DyingRebooter(FakeRebooter):
    def wait(self, timeout: timedelta) -> None:
        self.waited.append(timeout)
        raise Died


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


def boot_runner(journal, machine, backend=None, *, rebooter="default", prober=None, policy=None,
                clock=None, providers=(), bootloader=None):  # fmt: skip
    clock = clock or Clock()
    if rebooter == "default":
        rebooter = FakeRebooter(machine)
    return Runner(
        journal, backend or KernelBackend(machine), prober or FakeProber(), policy or Policy(), [],
        Path("/tmp/cache"), clock=clock, sleep=clock.sleep, retry_interval=5,
        boot_id=lambda: machine.boot_id, kernel=lambda: machine.kernel,
        reboot_signals=lambda: list(machine.reasons), livepatch=providers, rebooter=rebooter,
        bootloader=lambda: bootloader or FakeBootloader(machine),
        kernels=lambda: list(machine.installed), reboot_timeout=timedelta(minutes=10),
    )  # fmt: skip


def order_for(clock=None, reboot=IF_REQUIRED, livepatch=None, **kwargs):
    order = work_order(HOST, 1, (("linux-image-amd64", ""),), now=(clock or Clock()).now,
                       reboot=reboot, **kwargs)  # fmt: skip
    if livepatch is not None:
        order.livepatch = livepatch
    return order


def run(runner, key, order):
    return runner.run(runner.receive(sign(order, key), trusted(key), HOST).order_id)


def states(journal, order):
    return [s.state for s in journal.steps(order.order_id)]


def detail(journal, order, state=None):
    if state is None:
        return journal.order(order.order_id).detail
    return next(s.detail for s in journal.steps(order.order_id) if s.state == state)


def test_no_reboot_needed_no_reboot_asked(journal, key):
    machine = FakeMachine()
    backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
    runner = boot_runner(journal, machine, backend)
    order = work_order(HOST, 1, now=Clock().now, reboot=IF_REQUIRED)
    assert run(runner, key, order) is State.SUCCEEDED
    assert machine.boots == 0
    assert states(journal, order) == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY", "SUCCEEDED"
    ]  # fmt: skip


def test_a_kernel_update_reboots_into_the_new_kernel_then_verifies(journal, key):
    machine = FakeMachine()
    order = order_for()
    assert run(boot_runner(journal, machine), key, order) is State.SUCCEEDED
    assert states(journal, order) == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "REBOOT", "REBOOTED", "VERIFY", "SUCCEEDED",
    ]  # fmt: skip
    assert machine.kernel == NEW
    assert machine.boots == 1
    assert f"kernel: kernel {NEW} is installed" in detail(journal, order, "REBOOT")
    # The intent and the boot id it leaves were journaled with REBOOT itself.
    boot = journal.order(order.order_id).snapshot["boot"]
    assert boot["kernel"] == OLD
    assert boot["reboot_purpose"] == "apply"
    assert boot["expect_kernel"] == NEW


def test_a_reboot_that_ends_the_process_resumes_at_rebooted(journal, key):
    machine = FakeMachine()
    backend = KernelBackend(machine)  # the host's packages outlive the agent
    order = order_for()
    with pytest.raises(Died):
        run(boot_runner(journal, machine, backend, rebooter=DyingRebooter(machine)), key, order)
    assert journal.order(order.order_id).state == "REBOOT"
    machine.reboot()  # the host comes back; a new agent process starts
    resumed = boot_runner(journal, machine, backend).resume()
    assert resumed == [(order.order_id, State.SUCCEEDED)]
    assert states(journal, order)[-4:] == ["REBOOT", "REBOOTED", "VERIFY", "SUCCEEDED"]


def test_resumed_in_reboot_with_the_same_boot_id_it_asks_again(journal, key):
    machine = FakeMachine()
    backend = KernelBackend(machine)
    order = order_for()
    with pytest.raises(Died):
        run(boot_runner(journal, machine, backend, rebooter=DyingRebooter(machine)), key, order)
    rebooter = FakeRebooter(machine)  # the agent restarted, the host did not
    assert boot_runner(journal, machine, backend, rebooter=rebooter).resume() == [
        (order.order_id, State.SUCCEEDED)
    ]
    assert rebooter.asked == 1
    assert states(journal, order).count("REBOOT") == 2


def test_a_reboot_still_missing_after_the_timeout_is_reverted_and_said(journal, key):
    machine = FakeMachine()
    backend = KernelBackend(machine)
    clock = Clock()
    order = order_for(clock)
    with pytest.raises(Died):
        run(boot_runner(journal, machine, backend, rebooter=DyingRebooter(machine), clock=clock),
            key, order)  # fmt: skip
    clock.now += timedelta(minutes=11)
    rebooter = FakeRebooter(machine)
    resumed = boot_runner(journal, machine, backend, rebooter=rebooter, clock=clock).resume()
    assert resumed == [(order.order_id, State.REVERTED)]
    assert rebooter.asked == 0
    assert "did not happen within 600s" in detail(journal, order, "REVERT")
    assert NEW not in machine.installed


def test_a_reboot_that_never_comes_is_reverted(journal, key):
    machine = FakeMachine()
    rebooter = FakeRebooter(machine, reboots=False)
    order = order_for()
    assert run(boot_runner(journal, machine, rebooter=rebooter), key, order) is State.REVERTED
    assert rebooter.waited == [timedelta(minutes=10)]
    assert "did not happen within" in detail(journal, order, "REVERT")


def test_a_refused_reboot_is_reverted(journal, key):
    machine = FakeMachine()
    rebooter = FakeRebooter(machine, refuse=True)
    order = order_for()
    assert run(boot_runner(journal, machine, rebooter=rebooter), key, order) is State.REVERTED
    assert "the reboot was refused" in detail(journal, order, "REVERT")
    assert machine.kernel == OLD


@pytest.mark.parametrize(
    ("reboot", "policy", "rebooter", "why"),
    [
        (types_pb2.REBOOT_POLICY_NEVER, Policy(), "default", "reboot=never"),
        (IF_REQUIRED, Policy(allow_reboot=False), "default", "policy.allow_reboot is false"),
        (IF_REQUIRED, Policy(), None, "no way to reboot"),
    ],
)
def test_a_reboot_that_may_not_happen_ends_pending_after_verification(
    journal, key, reboot, policy, rebooter, why
):
    machine = FakeMachine()
    runner = boot_runner(journal, machine, policy=policy, rebooter=rebooter)
    order = order_for(reboot=reboot)
    assert run(runner, key, order) is State.PENDING_REBOOT
    assert states(journal, order)[-4:] == ["APPLY", "RESTART", "VERIFY", "PENDING_REBOOT"]
    assert machine.boots == 0
    assert why in detail(journal, order)
    assert "healthy after the update" in detail(journal, order)
    report = types_pb2.ProgressReport.FromString(journal.pending_reports()[-1][1])
    assert (report.step, report.final) == ("PENDING_REBOOT", True)


def test_a_window_that_closes_during_apply_leaves_the_reboot_pending(journal, key):
    machine = FakeMachine()
    clock = Clock()

    class SlowBackend(KernelBackend):
        def apply(self, plan):
            clock.now += timedelta(hours=1)  # a long transaction
            return super().apply(plan)

    order = order_for(clock, window_closes_at=clock.now + timedelta(minutes=30))
    runner = boot_runner(journal, machine, SlowBackend(machine), clock=clock)
    assert run(runner, key, order) is State.PENDING_REBOOT
    assert "maintenance window closed" in detail(journal, order)
    assert machine.boots == 0


def test_a_live_patch_stands_in_for_the_reboot(journal, key):
    machine = FakeMachine()
    provider = FakeProvider()
    order = order_for(livepatch=types_pb2.LIVEPATCH_POLICY_PREFER)
    runner = boot_runner(journal, machine, providers=[provider])
    assert run(runner, key, order) is State.SUCCEEDED
    assert states(journal, order)[-5:] == ["APPLY", "LIVEPATCH", "RESTART", "VERIFY", "SUCCEEDED"]
    assert machine.boots == 0
    final = detail(journal, order)
    assert "live patch kpatch kpatch_6_1_0_13_1" in final
    boot = journal.order(order.order_id).snapshot["boot"]
    assert (boot["live_provider"], boot["live_patch"], boot["live_ours"]) == (
        "kpatch", "kpatch_6_1_0_13_1", True,
    )  # fmt: skip


def test_a_live_patch_that_fails_falls_back_to_a_reboot(journal, key):
    machine = FakeMachine()
    provider = FakeProvider(fail="kpatch: module verification failed")
    order = order_for(livepatch=types_pb2.LIVEPATCH_POLICY_PREFER)
    assert run(boot_runner(journal, machine, providers=[provider]), key, order) is State.SUCCEEDED
    assert states(journal, order)[4:7] == ["LIVEPATCH", "REBOOT", "REBOOTED"]
    assert "module verification failed" in detail(journal, order, "REBOOT")


def test_livepatch_only_without_a_patch_never_reboots(journal, key):
    machine = FakeMachine()
    order = order_for(livepatch=types_pb2.LIVEPATCH_POLICY_ONLY,
                      reboot=types_pb2.REBOOT_POLICY_ALWAYS)  # fmt: skip
    assert run(boot_runner(journal, machine), key, order) is State.PENDING_REBOOT
    assert machine.boots == 0
    assert "livepatch=only forbids it" in detail(journal, order)


def test_a_regression_under_a_live_patch_unloads_it(journal, key):
    machine = FakeMachine()
    provider = FakeProvider()
    order = order_for(livepatch=types_pb2.LIVEPATCH_POLICY_PREFER,
                      verify_timeout=timedelta(seconds=10))  # fmt: skip
    runner = boot_runner(journal, machine, prober=FakeProber([True, False]), providers=[provider])
    assert run(runner, key, order) is State.REVERTED
    assert provider.calls == ["load kpatch_6_1_0_13_1", "unload kpatch_6_1_0_13_1"]
    assert "live patch kpatch_6_1_0_13_1 unloaded" in detail(journal, order)


def test_a_provider_that_cannot_unload_is_said_so_in_the_revert(journal, key):
    machine = FakeMachine()
    provider = FakeProvider("canonical-livepatch", "104.1", can_unload=False)
    order = order_for(livepatch=types_pb2.LIVEPATCH_POLICY_PREFER,
                      verify_timeout=timedelta(seconds=10))  # fmt: skip
    runner = boot_runner(journal, machine, prober=FakeProber([True, False]), providers=[provider])
    assert run(runner, key, order) is State.REVERTED
    assert "cannot unload live patch 104.1" in detail(journal, order)


def test_a_regression_on_the_new_kernel_reboots_back_once(journal, key):
    machine = FakeMachine()
    loader = FakeBootloader(machine)
    order = order_for(verify_timeout=timedelta(seconds=10))
    prober = BrokenOn(machine, NEW)
    runner = boot_runner(journal, machine, prober=prober, bootloader=loader)
    assert run(runner, key, order) is State.REVERTED
    assert states(journal, order)[3:] == [
        "APPLY", "REBOOT", "REBOOTED", "VERIFY", "REVERT", "REBOOT", "REBOOTED", "REVERT",
        "REVERTED",
    ]  # fmt: skip
    assert loader.defaults == [OLD]
    assert (machine.kernel, machine.boots) == (OLD, 2)
    final = detail(journal, order)
    assert final.startswith("reverted because unhealthy after the update")
    assert "after revert the host is healthy" in final


def test_a_kernel_revert_the_boot_loader_cannot_do_is_reported_failed(journal, key):
    machine = FakeMachine()
    loader = FakeBootloader(machine, error="neither grubby nor /boot/grub/grub.cfg is here")
    order = order_for(verify_timeout=timedelta(seconds=10))
    runner = boot_runner(journal, machine, prober=FakeProber([True, False]), bootloader=loader)
    assert run(runner, key, order) is State.REVERT_FAILED
    assert "neither grubby nor /boot/grub/grub.cfg" in detail(journal, order)
    assert machine.boots == 1  # no second reboot pretending to go back


def test_coming_back_on_the_wrong_kernel_after_the_revert_reboot_is_a_failed_revert(journal, key):
    machine = FakeMachine()

    class Lying(FakeBootloader):
        def set_default(self, kernel):
            return "says it did"  # but the machine boots the newest kernel anyway

    machine.installed.append("6.1.0-99-amd64")  # a kernel the revert does not remove
    order = order_for(verify_timeout=timedelta(seconds=10))
    runner = boot_runner(journal, machine, prober=FakeProber([True, False]),
                         bootloader=Lying(machine))  # fmt: skip
    assert run(runner, key, order) is State.REVERT_FAILED
    assert "came back on 6.1.0-99-amd64" in detail(journal, order)
    assert machine.boots == 2  # bounded: no third reboot


def test_back_on_the_old_kernel_after_the_update_reboot_reverts_without_another(journal, key):
    machine = FakeMachine()
    machine.next_kernel = OLD  # the boot loader fell back to the old kernel
    order = order_for()
    assert run(boot_runner(journal, machine), key, order) is State.REVERTED
    assert f"came back on kernel {OLD}, not on the new {NEW}" in detail(journal, order, "REVERT")
    assert machine.boots == 1


def test_a_crash_loop_in_reboot_is_broken(journal, key):
    machine = FakeMachine()
    backend = KernelBackend(machine)
    order = order_for()
    for _ in range(3):  # the agent dies right after journaling REBOOT, three times
        runner = boot_runner(journal, machine, backend, rebooter=DyingRebooter(machine))
        first = journal.order(order.order_id) is None
        with pytest.raises(Died):
            run(runner, key, order) if first else runner.resume()
    resumed = boot_runner(journal, machine, backend).resume()
    assert resumed == [(order.order_id, State.REVERTED)]
    assert "loop guard" in detail(journal, order, "REVERT")


def test_resume_in_apply_with_the_update_landed_still_decides_the_reboot(journal, key):
    machine = FakeMachine()
    order = order_for()
    runner = boot_runner(journal, machine)
    runner.receive(sign(order, key), trusted(key), HOST)
    plan = Plan((Change("linux-image-amd64", "all", "1.0", "1.1", "local"),))
    journal.enter(order.order_id, "PRECHECK", "", lambda k: b"", plan=plan.to_json())
    snapshot = runner._boot.snapshot_doc().into({"saved": [], "new": []})
    journal.enter(order.order_id, "SNAPSHOT", "", lambda k: b"", snapshot=snapshot)
    journal.enter(order.order_id, "APPLY", "", lambda k: b"")
    backend = KernelBackend(machine)
    backend.apply(plan)  # dpkg finished before the crash
    resumed = boot_runner(journal, machine, backend).resume()
    assert resumed == [(order.order_id, State.SUCCEEDED)]
    assert states(journal, order)[-4:] == ["REBOOT", "REBOOTED", "VERIFY", "SUCCEEDED"]
