"""End to end: a real controller and real agents, each in its own host
sandbox, patching with real apt, through whole campaigns and the failures
operators fear. Needs root and namespaces (CI runs as root)."""

from __future__ import annotations

import signal
import sqlite3
import time
from concurrent import futures

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from tests.support.orders import sign, work_order
from tests.support.waiting import wait_for

from .harness import E2EFleet, E2EHost, campaign_text

pytestmark = pytest.mark.root

LAYOUT = [("web-eu-0", "eu", 0), ("web-us-0", "us", 0), ("web-eu-1", "eu", 1),
          ("web-us-1", "us", 1), ("web-eu-2", "eu", 2), ("web-us-2", "us", 2)]  # fmt: skip


def _final_reports(e2e: E2EFleet, order_id: str) -> list[str]:
    conn = sqlite3.connect(e2e.controller.data_dir / "controller.db")
    rows = conn.execute(
        "SELECT outcome FROM progress_reports WHERE order_id = ? AND final = 1", (order_id,)
    ).fetchall()
    conn.close()
    return [r[0] for r in rows]


def _orders(host: E2EHost) -> list[dict]:  # type: ignore[type-arg]
    return list(host.status()["orders"])


def test_the_demo_story(e2e: E2EFleet):
    """Ring 0 succeeds; ring 1 holds a host that 1.1 breaks, which verifies,
    fails, reverts to 1.0 by itself and reports; the failure budget halts
    the campaign before ring 2."""
    hosts = {name: e2e.add_host(name, region, ring) for name, region, ring in LAYOUT}
    hosts["web-eu-1"].break_it()
    e2e.start_agents()
    campaign_id = e2e.create_campaign(campaign_text())
    e2e.controller.admin("campaign", "approve", campaign_id)

    shown = e2e.wait_for(campaign_id, ("halted", "completed"))
    assert shown["state"] == "halted"
    assert shown["halt_kind"] == "failure_budget"
    assert {n: h.installed() for n, h in hosts.items()} == {
        "web-eu-0": "1.1", "web-us-0": "1.1", "web-eu-1": "1.0", "web-us-1": "1.1",
        "web-eu-2": "1.0", "web-us-2": "1.0",
    }  # fmt: skip
    broken = _orders(hosts["web-eu-1"])
    assert [o["state"] for o in broken] == ["REVERTED"]
    assert "fp-demo 1.1: refusing to start" in broken[0]["detail"]
    assert _final_reports(e2e, broken[0]["order_id"]) == ["REVERTED"]
    assert _orders(hosts["web-eu-2"]) == []
    assert _orders(hosts["web-us-2"]) == []
    assert e2e.controller.admin("audit", "verify").stdout.startswith("audit trail intact")


def test_a_partitioned_host_finishes_offline_and_reports_when_the_link_returns(e2e: E2EFleet):
    host = e2e.add_host("edge-1", "eu", 0)
    host.break_it()
    host.start_agent()
    campaign_id = e2e.create_campaign(campaign_text(verify="6s"))
    e2e.controller.admin("campaign", "approve", campaign_id)
    wait_for("the host has an order", lambda: _orders(host), interval=0.1, explain=host.log)
    host.relay.cut()  # the order is running; the controller is gone for this host
    order = wait_for(
        "the order ends",
        lambda: _orders(host)[0],
        lambda order: order["state"] in ("REVERTED", "REVERT_FAILED", "SUCCEEDED", "FAILED"),
        explain=host.log,
    )
    assert order["state"] == "REVERTED"  # reverted by itself, offline
    assert host.installed() == "1.0"
    assert host.status()["reports_queued"] > 0
    assert _final_reports(e2e, order["order_id"]) == []

    host.relay.heal()
    wait_for(
        "the queued reports are delivered",
        lambda: host.status()["reports_queued"],
        lambda queued: queued == 0,
        interval=0.5,
        explain=host.log,
    )
    assert _final_reports(e2e, order["order_id"]) == ["REVERTED"]
    assert e2e.wait_for(campaign_id, ("halted",))["halt_kind"] == "failure_budget"


def test_an_agent_killed_during_apply_and_restarted_ends_consistent(e2e: E2EFleet):
    host = e2e.add_host("db-1", "us", 0)
    host.start_agent(env={"FLEETPATCH_FAULT": "done:APPLY"})
    campaign_id = e2e.create_campaign(campaign_text())
    e2e.controller.admin("campaign", "approve", campaign_id)
    assert host.process is not None
    assert host.process.wait(timeout=90) == -signal.SIGKILL or host.process.returncode != 0
    host.stop_agent()
    order = _orders(host)[0]
    assert order["state"] == "APPLY"  # killed after dpkg ran, before it was journaled
    assert host.installed() == "1.1"

    host.start_agent()
    assert e2e.wait_for(campaign_id, ("completed", "halted"))["state"] == "completed"
    order = _orders(host)[0]
    assert order["state"] == "SUCCEEDED"
    assert any(
        "resumed after a crash in APPLY: the update landed in full" in (s["detail"] or "")
        for s in order["steps"]
    )
    assert host.installed() == "1.1"
    assert host.sandbox.run(["dpkg", "--audit"]).stdout.strip() == ""
    assert _final_reports(e2e, order["order_id"]) == ["SUCCEEDED"]


def test_the_controller_killed_mid_campaign_loses_nothing_and_assigns_nobody_twice(
    e2e: E2EFleet,
):
    hosts = [e2e.add_host(name, region, ring) for name, region, ring in LAYOUT[:4]]
    e2e.start_agents()
    campaign_id = e2e.create_campaign(campaign_text())
    e2e.controller.admin("campaign", "approve", campaign_id)
    wait_for("a host has an order", lambda: any(_orders(h) for h in hosts), interval=0.1)
    proc = e2e.controller.proc
    assert proc is not None
    proc.kill()  # no graceful shutdown
    proc.wait()
    e2e.controller.proc = None
    time.sleep(3)  # agents back off, finish offline, queue their reports
    e2e.controller.start()
    assert e2e.wait_for(campaign_id, ("completed", "halted"))["state"] == "completed"
    assert all(h.installed() == "1.1" for h in hosts)
    conn = sqlite3.connect(e2e.controller.data_dir / "controller.db")
    per_host = dict(conn.execute(
        "SELECT host_id, count(*) FROM assignments WHERE kind = 'patch' GROUP BY host_id"
    ).fetchall())  # fmt: skip
    finals = conn.execute(
        "SELECT order_id, count(*) FROM progress_reports WHERE final = 1 GROUP BY order_id"
    ).fetchall()
    conn.close()
    assert sorted(per_host) == sorted(h.host_id for h in hosts)
    assert set(per_host.values()) == {1}
    assert {n for _, n in finals} == {1}
    assert e2e.controller.admin("audit", "verify").stdout.startswith("audit trail intact")


class _Impostor(agent_pb2_grpc.AgentServiceServicer):
    """A controller whose TLS key was stolen but not its signing key: it
    hands out whatever order it likes."""

    def __init__(self, envelopes):
        self.envelopes = list(envelopes)
        self.reports: list[agent_pb2.ReportProgressRequest] = []

    def CheckIn(self, request, context):
        response = agent_pb2.CheckInResponse()
        response.next_checkin.FromSeconds(1)
        response.known_inventory_hash = request.inventory_hash
        if self.envelopes:
            response.work_order.CopyFrom(self.envelopes.pop(0))
        return response

    def Enroll(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "an impostor enrolls nobody")

    def FetchArtifact(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "an impostor serves no artifacts")

    def Renew(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "an impostor renews nothing")

    def Watch(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "an impostor pushes nothing")

    def ReportProgress(self, request, context):
        self.reports.append(request)
        return agent_pb2.ReportProgressResponse(
            acknowledged_keys=[r.idempotency_key for r in request.reports]
        )


def test_tampered_and_forged_orders_are_refused_and_the_host_is_untouched(e2e: E2EFleet):
    host = e2e.add_host("edge-2", "eu", 0)
    ctl = e2e.controller
    from cryptography.hazmat.primitives import serialization

    real_key = serialization.load_pem_private_key(
        (ctl.data_dir / "signing.key").read_bytes(), password=None
    )
    assert isinstance(real_key, Ed25519PrivateKey)
    genuine = sign(work_order(host.host_id, 1, (("fp-demo", ""),)), real_key)
    tampered = agent_pb2.CheckInResponse().work_order
    tampered.CopyFrom(genuine)
    tampered.payload = genuine.payload.replace(b"fp-demo", b"fp-dem0")
    forged = sign(work_order(host.host_id, 2, (("fp-demo", ""),)), Ed25519PrivateKey.generate())
    impostor = _Impostor([tampered, forged])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(impostor, server)
    creds = grpc.ssl_server_credentials(
        [((ctl.data_dir / "server.key").read_bytes(), (ctl.data_dir / "server.pem").read_bytes())],
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        host.relay.target = ("127.0.0.1", port)
        before = set(host.sandbox.upper_changes())
        host.start_agent()
        wait_for(
            "the agent has refused both orders",
            lambda: host.status()["refusals"],
            lambda refusals: len(refusals) >= 2,
            explain=host.log,
        )
        host.stop_agent()
    finally:
        server.stop(0)
    refusals = host.status()["refusals"]
    assert sorted(r["reason"] for r in refusals) == ["bad-signature", "unknown-key"]
    assert host.installed() == "1.0"
    assert _orders(host) == []
    changed = set(host.sandbox.upper_changes()) - before
    assert all(p.startswith("/var/lib/fleetpatch/") for p in changed), changed
    reported = [r.step for req in impostor.reports for r in req.reports]
    assert reported.count("REFUSED") == 2
