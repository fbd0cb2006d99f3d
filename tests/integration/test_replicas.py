"""Two controller replicas on one PostgreSQL database (issue 17, part 2):
the second set up from the first's data dir (the same CA, signing key and
admin trust), one leading the campaign tick, agents that list both, a
campaign running, the leader SIGKILLed mid-ring: the agents fail over, the
survivor takes the tick over, the campaign completes through it, no host is
assigned twice and the audit chain verifies. Real processes, real gRPC with
mutual TLS, real PostgreSQL."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from tests.integration.test_enrollment import Raw, _enroll
from tests.support.controller import Controller, free_port
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import wait_for

CAMPAIGN = """
[campaign]
name = "replicas"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%" },
  { ring = 1, concurrency = 2 },
]
"""
LEADING = "leading: this controller runs the campaign tick"
FOLLOWING = "another controller replica runs the campaign tick"


def replica_of(first: Controller, data_dir: Path) -> Controller:
    """A second replica, as the README says to make one: the first's data
    dir copied (keys, CA, settings with the shared [store] url), without its
    SQLite file and its endpoints, listening on an address of its own."""
    shutil.copytree(first.data_dir, data_dir,
                    ignore=shutil.ignore_patterns("controller.db*", "endpoints.json"))  # fmt: skip
    return Controller(data_dir, port=free_port(), store_url=first.store_url)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Controller, Controller]]:
    first = Controller(tmp_path / "a", store_url=postgres_url)
    first.init()
    config = first.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    second = replica_of(first, tmp_path / "b")
    first.start()
    wait_for("the first replica to lead", first.log.read_text, lambda t: LEADING in t,
             timeout=30)  # fmt: skip
    second.start()
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


def test_the_survivor_of_a_killed_leader_completes_the_campaign(replicas, tmp_path):
    first, second = replicas
    wait_for("the second replica to follow", second.log.read_text, lambda t: FOLLOWING in t,
             timeout=30)  # fmt: skip
    # The agents list both replicas, the first (leading) first.
    agents = [
        InProcessAgent(
            first,
            tmp_path / f"agent-{i}",
            "eu",
            ring,
            FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}),
            FakeProber([True]),
            defer=True,
            address=f"{first.address},{second.address}",
        )
        for i, ring in enumerate((0, 0, 1, 1, 1, 1))
    ]
    try:
        spec = tmp_path / "c.toml"
        spec.write_text(CAMPAIGN)
        campaign_id = first.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        first.admin("campaign", "approve", campaign_id)

        def ring_0_in_flight() -> bool:
            for agent in agents[:2]:
                if agent._pending is None:
                    agent.round()
            return all(agent._pending for agent in agents[:2])

        wait_for("ring 0 to be assigned", ring_0_in_flight,
                 timeout=30, interval=0.5)  # fmt: skip
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # mid-ring: ring 0's orders in flight
        first.proc.wait()
        first.proc = None
        wait_for("the survivor to lead", second.log.read_text, lambda t: LEADING in t,
                 timeout=60)  # fmt: skip

        def state() -> str:
            for agent in agents:
                agent.round()
            doc = second.admin_json("campaign", "show", campaign_id)
            assert isinstance(doc, dict)
            return str(doc["state"])

        wait_for("the campaign to complete through the survivor", state,
                 lambda s: s == "completed", timeout=120, interval=0.2)  # fmt: skip
        assert {agent.client.address for agent in agents} == {second.address}  # failed over
    finally:
        for agent in agents:
            agent.close()
    with second.database() as conn:
        per_host = conn.execute(
            "SELECT host_id, count(*) FROM assignments WHERE kind = 'patch' GROUP BY host_id"
        ).fetchall()
    assert sorted(n for _, n in per_host) == [1] * len(agents)
    assert [len(a.outcomes) for a in agents] == [1] * len(agents)
    assert second.admin("audit", "verify").stdout.startswith("audit trail intact")
    assert "Traceback" not in second.log.read_text()


def _report_via(ctl: Controller, host: Raw) -> grpc.StatusCode:
    """An empty progress report as ``host`` through ``ctl``: its answer."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        private_key=host.key_pem,
        certificate_chain=host.cert_pem,
    )
    with grpc.secure_channel(ctl.address, creds) as channel:
        try:
            agent_pb2_grpc.AgentServiceStub(channel).ReportProgress(
                agent_pb2.ReportProgressRequest(), timeout=30
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_host_revoked_through_one_replica_is_refused_by_the_other(replicas):
    first, second = replicas
    host = _enroll(first, first.token())
    assert _report_via(second, host) is grpc.StatusCode.OK
    first.admin("hosts", "revoke", host.host_id)
    assert _report_via(first, host) is grpc.StatusCode.PERMISSION_DENIED
    # The other replica learns it from the database within a tick (1 s here).
    wait_for("the second replica to refuse the revoked host", lambda: _report_via(second, host),
             lambda code: code is grpc.StatusCode.PERMISSION_DENIED, timeout=30)  # fmt: skip
