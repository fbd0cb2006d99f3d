"""Push for urgent work (issue 17 part 3), against a real controller
process over real mutual TLS: agents whose next check-in is ten minutes
away get an emergency campaign's order within seconds of its approval, and
a revert within seconds of `campaign abort --revert`; an ordinary campaign
nudges nobody; a revoked host's stream is closed. The agents are the real
check-in loop and Watch stream of `fleetpatch-agent run` (agent.daemon),
run on threads over in-process agents (fake package manager)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fleetpatch.push import WATCH_OPEN
from fleetpatch.v1 import agent_pb2

from agent.link.checkin import CheckIns
from agent.link.watch import Watcher
from agent.orders.states import State
from tests.integration.test_enrollment import _enroll
from tests.integration.test_replicas import replica_of
from tests.support.controller import Controller
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import scaled

EMERGENCY = """
[campaign]
name = "urgent"
emergency = true

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%", gate = { bake = "1h" } },
  { ring = 1, concurrency = "100%" },
]
"""

ORDINARY = """
[campaign]
name = "routine"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[rollout]
rings = [{ ring = 1, concurrency = "100%" }]
"""


class Daemon:
    """What `fleetpatch-agent run` runs: the check-in loop (orders carried
    out by the real runner) and, beside it, the Watch stream. On a thread
    of its own, which opens the agent (its journal belongs to that thread,
    as the service's belongs to its main thread)."""

    def __init__(self, ctl: Controller, state_dir: Path, ring: int, address: str = "") -> None:
        self.ring = ring
        self.backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
        self.stop, self.wake = threading.Event(), threading.Event()
        self.checked_in = threading.Event()
        self.outcomes: list[State | None] = []
        self.agent = InProcessAgent(ctl, state_dir, "eu", ring, self.backend, FakeProber([True]),
                                    address=address or None)  # fmt: skip
        self.host_id = self.agent.host_id
        self.agent.close()  # opened again on the daemon's thread
        self.watcher: Watcher | None = None
        self._state_dir = state_dir
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        agent = InProcessAgent.reopen(self._state_dir, self.backend, FakeProber([True]))
        try:
            checkins = CheckIns(
                agent.agent.config, agent.journal, agent.client,
                collect_facts=agent.checkins._collect_facts,
                take_inventory=agent.checkins._take_inventory,
                on_order=lambda envelope: self.outcomes.append(agent.agent.handle(envelope)),
                between=agent.agent.between, after=self.checked_in.set,
            )  # fmt: skip
            self.watcher = Watcher(agent.client, self.wake, self.stop)
            self.watcher.start()
            checkins.run(self.stop, self.wake)
        finally:
            agent.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        if self.watcher is not None:
            self.watcher.close()
        self._thread.join(timeout=30)


def wait_until(what: str, check: object, timeout: float) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _started(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        daemon.start()
    for daemon in daemons:
        wait_until("the agent checked in and opened its stream",
                   lambda d=daemon: d.checked_in.is_set() and d.watcher is not None
                   and d.watcher.connected.is_set(), 30)  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Controller, list[Daemon]]]:
    ctl = Controller(tmp_path / "ctl")
    ctl.init(interval="10m")  # polling alone would take minutes
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    daemons: list[Daemon] = []
    try:
        for i, ring in enumerate((0, 0, 1)):
            daemons.append(Daemon(ctl, tmp_path / f"a{i}", ring))
        _started(daemons)
        yield ctl, daemons
    finally:
        for daemon in daemons:
            daemon.close()
        ctl.stop()


def _campaign(ctl: Controller, tmp_path: Path, text: str) -> str:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    return ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]


def _states(ctl: Controller, campaign_id: str) -> dict[str, str]:
    shown = ctl.admin_json("campaign", "show", campaign_id, "--hosts")
    assert isinstance(shown, list)
    return {h["host_id"]: h.get("state", h.get("status", "")) for h in shown}


def test_an_emergency_campaign_reaches_connected_agents_within_seconds(fleet, tmp_path):
    ctl, daemons = fleet
    ring0 = [d for d in daemons if d.ring == 0]
    ring1 = next(d for d in daemons if d.ring == 1)

    # An ordinary campaign nudges nobody: its hosts wait for their check-in.
    ordinary = _campaign(ctl, tmp_path, ORDINARY)
    ctl.admin("campaign", "approve", ordinary)
    # A tick and more later, still nothing assigned and no nudge received.
    time.sleep(3)
    assert ring1.watcher is not None
    assert ring1.watcher.nudges == 0
    assert ring1.backend.installed["fp-demo"] == "1.0"

    # Ring 0 first; ring 1 (the ordinary campaign's host) after a bake of
    # an hour, so it is not nudged now.
    ctl.admin("campaign", "abort", ordinary)
    urgent = _campaign(ctl, tmp_path, EMERGENCY)
    approved = time.monotonic()
    ctl.admin("campaign", "approve", urgent)
    took = wait_until("both ring-0 hosts patched", lambda: all(d.outcomes for d in ring0), 20)
    # Without the nudge, the next check-in was ten minutes away.
    assert took < 15, took
    assert all(d.outcomes == [State.SUCCEEDED] for d in ring0)
    assert all(d.backend.installed["fp-demo"] == "1.1" for d in ring0)
    assert all(d.watcher is not None and d.watcher.nudges == 1 for d in ring0)
    assert ring1.watcher is not None
    assert ring1.watcher.nudges == 0  # its ring has not opened
    assert ring1.outcomes == []
    # The result reached the controller too (reports are sent by the loop).
    wait_until(
        "the results are in", lambda: set(_states(ctl, urgent).values()) == {"succeeded"}, 15
    )
    print(f"approval to patched: {time.monotonic() - approved:.1f}s")

    # A revert ordered now reaches them as fast.
    ctl.admin("campaign", "abort", urgent, "--revert")
    wait_until("both ring-0 hosts reverted", lambda: all(len(d.outcomes) == 2 for d in ring0), 20)
    assert all(d.backend.installed["fp-demo"] == "1.0" for d in ring0)
    assert all(d.watcher is not None and d.watcher.nudges == 2 for d in ring0)


def test_a_revoked_hosts_stream_is_closed(fleet):
    ctl, daemons = fleet
    watcher = daemons[0].watcher
    assert watcher is not None
    opened = watcher.opened
    ctl.admin("hosts", "revoke", daemons[0].host_id)
    wait_until("the stream closed", lambda: not watcher.connected.is_set(), 10)
    # It is refused when it tries again (reconnecting within a few seconds).
    time.sleep(4)
    assert watcher.opened == opened
    assert not watcher.connected.is_set()


def test_watch_calls_whose_request_never_comes_hold_one_stream_per_host(tmp_path):
    """A host opening Watch calls and never sending their request (a
    hostile or broken one): each call is registered at once, so each ends
    the one before and the controller holds one; a revocation meanwhile
    closes the one it holds."""
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    ctl.start()
    try:
        host = _enroll(ctl, ctl.token())
        creds = grpc.ssl_channel_credentials(
            root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
            private_key=host.key_pem,
            certificate_chain=host.cert_pem,
        )
        release = threading.Event()

        def never() -> Iterator[agent_pb2.WatchRequest]:
            release.wait()  # the request is never sent while the test runs
            yield from ()

        service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
        with grpc.secure_channel(ctl.address, creds) as channel:
            watch = channel.stream_stream(
                f"/{service}/Watch",
                request_serializer=agent_pb2.WatchRequest.SerializeToString,
                response_deserializer=agent_pb2.Nudge.FromString,
            )
            calls = []
            try:
                for _ in range(20):
                    call = watch(never(), timeout=scaled(60))
                    assert (WATCH_OPEN, "1") in (call.initial_metadata() or ()), call.code()
                    calls.append(call)
                wait_until("each call to end the one before",
                           lambda: not any(c.is_active() for c in calls[:-1]), 10)  # fmt: skip
                assert {c.code() for c in calls[:-1]} == {grpc.StatusCode.OK}
                assert calls[-1].is_active()
                ctl.admin("hosts", "revoke", host.host_id)
                wait_until(
                    "the revoked host's stream to end", lambda: not calls[-1].is_active(), 10
                )
                assert calls[-1].code() is grpc.StatusCode.OK
                refused = watch(never(), timeout=scaled(60))
                assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
            finally:
                release.set()
                for call in calls:
                    call.cancel()
    finally:
        ctl.stop()
    assert "Traceback" not in ctl.log.read_text()


def test_a_key_revoked_at_a_restart_reaches_the_connected_agents_within_seconds(fleet):
    """`rotate-key --revoke-old` takes effect at a restart: each agent's
    stream, opened again, is nudged (paced with every other nudge), and the
    agent checks in to learn of it, its next check-in ten minutes away."""
    ctl, daemons = fleet
    nudged = [d.watcher.nudges if d.watcher is not None else 0 for d in daemons]
    assert ctl.stop() == 0
    out = ctl.admin("controller", "rotate-key", "--revoke-old").stdout
    assert "revoked" in out, out
    for daemon in daemons:
        daemon.checked_in.clear()
    ctl.start()
    took = wait_until(
        "every agent nudged and checked in",
        lambda: all(
            d.watcher is not None and d.watcher.nudges > n and d.checked_in.is_set()
            for d, n in zip(daemons, nudged, strict=True)
        ),
        # The agents' streams retry with a growing random delay while the
        # controller is down (seconds here, up to 120 s at worst).
        120,
    )
    print(f"restart to every agent checked in: {took:.1f}s")


def test_an_approval_on_one_replica_nudges_the_agents_of_another(tmp_path, postgres_url):
    first = Controller(tmp_path / "a", store_url=postgres_url)
    first.init(interval="10m")
    config = first.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    second = replica_of(first, tmp_path / "b")
    first.start()
    second.start()
    daemons: list[Daemon] = []
    try:
        # Both hosts watch the second replica only.
        daemons = [Daemon(first, tmp_path / f"a{i}", 0, second.address) for i in range(2)]
        _started(daemons)
        urgent = _campaign(first, tmp_path, EMERGENCY)
        first.admin("campaign", "approve", urgent)  # through the first replica
        # The second one notices at its next tick (1 s) and nudges its streams.
        took = wait_until("both hosts patched", lambda: all(d.outcomes for d in daemons), 20)
        assert took < 15, took
        assert all(d.outcomes == [State.SUCCEEDED] for d in daemons)
        assert "nudging 2 connected host(s)" in second.log.read_text()
    finally:
        for daemon in daemons:
            daemon.close()
        second.stop()
        first.stop()
