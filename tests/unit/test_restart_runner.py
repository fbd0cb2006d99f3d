"""The RESTART step in the runner: the real `Services` and `RestartSteps`
over a /proc tree and a systemctl the test plays (a real one needs a booted
systemd: tests/integration/test_archive_services.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import types_pb2

from agent.backends import subp
from agent.backends.base import Change, Plan, Snapshot
from agent.errors import CommandFailed
from agent.host.restarts import Services
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.orders.states import State
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.orders import sign, trusted, work_order

HOST = "h-00000000000000aa"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FILES = {"fp-demo": ["/usr/sbin/fp-demo", "/usr/lib/libfpdemo.so.1"]}


class Crash(BaseException):
    """The agent process dying in the middle of a step."""


class FakeHost:
    """Processes in a /proc tree: each maps files, runs in a cgroup; an
    update replacing a file marks it deleted in every process mapping it,
    and `systemctl restart` starts a unit's processes afresh."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "self" / "cgroup").write_text("0::/system.slice/fleetpatch-agent.service\n")
        self.procs: dict[int, tuple[str, str, list[str]]] = {}  # pid -> comm, cgroup, files
        self.replaced: set[str] = set()
        self.restarts: list[str] = []
        self.failing: set[str] = set()
        self.crash_on: str | None = None

    def spawn(self, pid: int, comm: str, cgroup: str, files: Sequence[str]) -> None:
        self.procs[pid] = (comm, cgroup, list(files))
        self._write(pid, fresh=True)

    def _write(self, pid: int, fresh: bool) -> None:
        comm, cgroup, files = self.procs[pid]
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cgroup").write_text(f"0::{cgroup}\n")
        lines = [
            f"7f00{i:08x}-7f01{i:08x} r-xp 00000000 08:01 {100 + i} {f}"
            + ("" if fresh or f not in self.replaced else " (deleted)")
            for i, f in enumerate(files)
        ]
        (d / "maps").write_text("\n".join(lines) + "\n")

    def replace(self, files: Sequence[str]) -> None:
        self.replaced |= set(files)
        for pid in self.procs:
            self._write(pid, fresh=False)

    def run(self, argv: Sequence[str], **options: Any) -> subp.Result:
        if list(argv) == ["systemctl", "daemon-reexec"]:
            argv = ["systemctl", "restart", "--", "init.scope"]  # PID 1 re-executes itself
        assert list(argv[:3]) == ["systemctl", "restart", "--"], argv
        unit = argv[3]
        if unit == self.crash_on:
            self.crash_on = None
            raise Crash(unit)
        if unit in self.failing:
            raise CommandFailed(list(argv), 1, "", f"Job for {unit} failed.")
        self.restarts.append(unit)
        for pid, (_, cgroup, _) in self.procs.items():
            if cgroup.endswith(f"/{unit}"):
                self._write(pid, fresh=True)
        return subp.Result(list(argv), 0, "", "")

    def services(self) -> Services:
        return Services(lambda names: [f for n in names for f in FILES.get(n, [])],
                        run=self.run, proc=self.proc)  # fmt: skip


class ReplacingBackend(FakeBackend):
    """Applying or reverting a package replaces its files on the FakeHost."""

    def __init__(self, host: FakeHost) -> None:
        super().__init__({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
        self.host = host

    def apply(self, plan: Plan) -> list[Change]:
        changes = super().apply(plan)
        self.host.replace([f for c in changes for f in FILES.get(c.name, [])])
        return changes

    def revert(self, snapshot: Snapshot) -> list[Change]:
        changes = super().revert(snapshot)
        self.host.replace([f for c in changes for f in FILES.get(c.name, [])])
        return changes


@pytest.fixture
def host(tmp_path) -> FakeHost:
    h = FakeHost(tmp_path)
    h.spawn(101, "fp-demo", "/system.slice/fp-demo.service", FILES["fp-demo"])
    h.spawn(102, "fp-demo", "/system.slice/fp-demo.service", FILES["fp-demo"][1:])
    h.spawn(200, "cron", "/system.slice/cron.service", ["/usr/sbin/cron"])
    return h


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "journal.db")
    yield j
    j.close()


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def runner_for(
    journal, host, tmp_path, prober=None, policy=None, services=True, backend=None
) -> Runner:
    return Runner(
        journal, backend or ReplacingBackend(host), prober or FakeProber(), policy or Policy(), [],
        tmp_path / "cache", clock=lambda: NOW, sleep=lambda s: None,
        busy_timeout=timedelta(seconds=1), services=host.services() if services else None,
    )  # fmt: skip


def run(runner, key, **order_args) -> tuple[str, State]:
    order = work_order(HOST, 1, now=NOW, **order_args)
    received = runner.receive(sign(order, key), trusted(key), HOST)
    return received.order_id, runner.run(received.order_id)


def detail(journal, order_id, state) -> str:
    return next(str(s.detail) for s in journal.steps(order_id) if s.state == state)


def test_auto_restarts_the_services_running_replaced_code_before_verify(journal, host, key,
                                                                        tmp_path):  # fmt: skip
    order_id, final = run(runner_for(journal, host, tmp_path), key)
    assert final is State.SUCCEEDED
    # One restart for the unit (two processes), none for the unrelated cron.
    assert host.restarts == ["fp-demo.service"]
    assert [s.state for s in journal.steps(order_id)][-3:] == ["RESTART", "VERIFY", "SUCCEEDED"]
    assert "restarted fp-demo.service" in detail(journal, order_id, "VERIFY")
    assert [(r.unit, r.result) for r in journal.restarts(order_id, "apply")] == [
        ("fp-demo.service", "restarted")
    ]


def test_report_restarts_nothing_and_ends_pending_restart(journal, host, key, tmp_path):
    order_id, final = run(runner_for(journal, host, tmp_path), key,
                          restart_services=types_pb2.RESTART_POLICY_REPORT)  # fmt: skip
    assert final is State.PENDING_RESTART
    assert host.restarts == []
    assert "restart pending: fp-demo.service (the order says restart_services=report)" in (
        journal.order(order_id).detail
    )


def test_never_does_not_look(journal, host, key, tmp_path):
    order_id, final = run(runner_for(journal, host, tmp_path), key,
                          restart_services=types_pb2.RESTART_POLICY_NEVER)  # fmt: skip
    assert final is State.SUCCEEDED
    assert host.restarts == []
    assert "restart_services=never" in detail(journal, order_id, "VERIFY")


def test_local_policy_and_the_agent_itself_hold_units_which_stay_pending(journal, host, key,
                                                                         tmp_path):  # fmt: skip
    host.spawn(300, "python3", "/system.slice/fleetpatch-agent.service", FILES["fp-demo"])
    host.spawn(400, "bash", "/user.slice/user-0.slice/session-1.scope", FILES["fp-demo"])
    policy = Policy(never_restart=("fp-*.service",))
    order_id, final = run(runner_for(journal, host, tmp_path, policy=policy), key)
    assert final is State.PENDING_RESTART
    assert host.restarts == []
    text = journal.order(order_id).detail
    assert "fp-demo.service (policy.never_restart 'fp-*.service')" in text
    assert "fleetpatch-agent.service (the agent's own unit)" in text
    assert "bash (pid 400, session-1.scope)" in text


def test_a_service_that_does_not_restart_on_the_update_is_reverted_and_restarted_back(
    journal, host, key, tmp_path
):
    host.failing.add("fp-demo.service")
    runner = runner_for(journal, host, tmp_path)
    order_id, final = run(runner, key)
    assert final is State.REVERTED
    assert "a service did not restart on the update" in detail(journal, order_id, "REVERT")
    # The revert replaced the files again; its own restart failed too, and says so.
    assert "fp-demo.service (its restart failed" in journal.order(order_id).detail
    host.failing.clear()


def test_a_revert_restarts_services_onto_the_old_code(journal, host, key, tmp_path):
    prober = FakeProber([True, False])  # healthy before, unhealthy after the update
    order_id, final = run(runner_for(journal, host, tmp_path, prober=prober), key,
                          verify_timeout=timedelta(0))  # fmt: skip
    assert final is State.REVERTED
    assert host.restarts == ["fp-demo.service", "fp-demo.service"]
    assert [r.result for r in journal.restarts(order_id, "revert")] == ["restarted"]
    assert "restarted fp-demo.service" in journal.order(order_id).detail


def test_a_crash_between_restarts_resumes_with_the_units_not_yet_restarted(journal, host, key,
                                                                           tmp_path):  # fmt: skip
    host.spawn(500, "fp-demo-worker", "/system.slice/fp-worker.service", FILES["fp-demo"])
    host.crash_on = "fp-worker.service"  # fp-demo.service first (sorted), then the crash
    backend = ReplacingBackend(host)  # the host's packages outlive the agent process
    with pytest.raises(Crash):
        run(runner_for(journal, host, tmp_path, backend=backend), key)
    order_id = f"o-{HOST}-1"
    assert journal.order(order_id).state == "RESTART"
    assert [(r.unit, r.result) for r in journal.restarts(order_id, "apply")] == [
        ("fp-demo.service", "restarted"), ("fp-worker.service", None),
    ]  # fmt: skip
    resumed = runner_for(journal, host, tmp_path, backend=backend).resume()
    assert resumed == [(order_id, State.SUCCEEDED)]
    assert host.restarts == ["fp-demo.service", "fp-worker.service"]
    assert "restarted fp-demo.service, fp-worker.service" in detail(journal, order_id, "VERIFY")


def test_a_unit_still_on_old_code_after_two_restarts_is_reported_not_looped(journal, host, key,
                                                                            tmp_path):  # fmt: skip
    services = host.services()
    services.restart = host.restarts.append
    runner = Runner(
        journal, ReplacingBackend(host), FakeProber(), Policy(), [], tmp_path / "cache",
        clock=lambda: NOW, sleep=lambda s: None, services=services,
    )  # fmt: skip
    order_id, final = run(runner, key)
    assert final is State.PENDING_RESTART
    assert "fp-demo.service (still runs replaced code after its restart)" in (
        journal.order(order_id).detail
    )
    assert host.restarts == ["fp-demo.service"]


def test_a_window_that_closed_during_apply_leaves_restarts_pending(journal, host, key, tmp_path):
    clock = [NOW]
    backend = ReplacingBackend(host)
    apply = backend.apply

    def slow_apply(plan: Plan) -> list[Change]:
        clock[0] = NOW + timedelta(hours=2)  # the transaction outlasted the window
        return apply(plan)

    backend.apply = slow_apply  # type: ignore[method-assign]
    runner = Runner(
        journal, backend, FakeProber(), Policy(), [], tmp_path / "cache",
        clock=lambda: clock[0], sleep=lambda s: None, services=host.services(),
    )  # fmt: skip
    order_id, final = run(runner, key, window_closes_at=NOW + timedelta(hours=1))
    assert final is State.PENDING_RESTART
    assert host.restarts == []
    assert "fp-demo.service (the maintenance window closed at 2026-12-01 13:00:00Z)" in (
        journal.order(order_id).detail
    )


def test_without_a_service_manager_restart_looks_at_nothing(journal, host, key, tmp_path):
    order_id, final = run(runner_for(journal, host, tmp_path, services=None), key)
    assert final is State.SUCCEEDED
    assert "no service manager" in detail(journal, order_id, "VERIFY")


def test_the_service_manager_itself_is_re_executed(journal, host, key, tmp_path):
    host.spawn(1, "systemd", "/init.scope", FILES["fp-demo"][1:])
    order_id, final = run(runner_for(journal, host, tmp_path), key)
    assert final is State.SUCCEEDED
    assert host.restarts == ["fp-demo.service", "init.scope"]
    held = Policy(never_restart=("init.scope",))
    host.replace(FILES["fp-demo"])
    journal2 = Journal.open(tmp_path / "journal2.db")
    backend = ReplacingBackend(host)
    backend.installed["fp-demo"] = "1.0"
    order_id, final = run(runner_for(journal2, host, tmp_path, policy=held, backend=backend), key)
    assert final is State.PENDING_RESTART
    record = journal2.order(order_id)
    assert record is not None
    assert "init.scope (policy.never_restart 'init.scope')" in record.detail
    journal2.close()
