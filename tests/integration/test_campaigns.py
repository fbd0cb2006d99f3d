"""A whole campaign against a real controller: two regions, three rings,
a failing canary in ring 1 that halts it, a person resuming it, ring 2
patched, the audit trail intact. Agents run in-process over real mTLS."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetpatch.orderspec import UNREADABLE_ORDER
from fleetpatch.v1 import types_pb2

from agent.orders.states import State
from agent.orders.workorder import OrderRefused
from tests.conftest import STORES
from tests.support.controller import BIN, Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent, tokens_for

CAMPAIGN = """
[campaign]
name = "demo-1-1"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%", gate = { min_success = 1.0, failure_budget = 0 } },
  { ring = 1, concurrency = 2, gate = { min_success = 0.5, failure_budget = 0 } },
  { ring = 2, concurrency = "50%" },
]
region_order = "parallel"
"""

LAYOUT = [  # (region, ring, healthy after the update)
    ("eu", 0, True), ("us", 0, True),
    ("eu", 1, True), ("eu", 1, False), ("us", 1, True), ("us", 1, True),
    ("eu", 2, True), ("eu", 2, True), ("eu", 2, True), ("us", 2, True), ("us", 2, True),
    ("us", 2, True),
]  # fmt: skip


pytestmark = pytest.mark.parametrize("store_url", STORES, indirect=True)


@pytest.fixture
def fleet(tmp_path: Path, store_url: str) -> Iterator[tuple[Controller, list[InProcessAgent]]]:
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    agents = []
    try:
        tokens = tokens_for(ctl, [(region, ring) for region, ring, _ in LAYOUT])
        for i, (region, ring, healthy) in enumerate(LAYOUT):
            backend = FakeBackend({"fp-demo": "1.0", "libc6": "2.36"}, {"fp-demo": "1.1"})
            prober = FakeProber([True] if healthy else [True, False])
            agents.append(
                InProcessAgent(ctl, tmp_path / f"agent-{i}", region, ring, backend, prober,
                               token=tokens[region, ring])
            )  # fmt: skip
        yield ctl, agents
    finally:
        for agent in agents:
            agent.close()
        ctl.stop()


def _rounds(agents: list[InProcessAgent], ctl: Controller, campaign_id: str, n: int) -> str:
    state = ""
    for _ in range(n):
        for agent in agents:
            agent.round()
        state = str(_show(ctl, campaign_id)["state"])
        if state in ("halted", "completed"):
            return state
    return state


def _show(ctl: Controller, campaign_id: str) -> dict:  # type: ignore[type-arg]
    doc = ctl.admin_json("campaign", "show", campaign_id)
    assert isinstance(doc, dict)
    return doc


def test_campaign_halts_on_a_failing_ring_and_completes_after_resume(fleet, tmp_path):
    ctl, agents = fleet
    spec = tmp_path / "demo.toml"
    spec.write_text(CAMPAIGN)
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]

    # Nothing is assigned before approval.
    for agent in agents:
        assert agent.round() is None
    assert _show(ctl, campaign_id)["state"] == "draft"

    ctl.admin("campaign", "approve", campaign_id)
    assert _rounds(agents, ctl, campaign_id, 10) == "halted"
    shown = _show(ctl, campaign_id)
    assert shown["halt_kind"] == "failure_budget"
    assert "ring 1" in shown["halt_reason"]
    by_ring: dict[int, list[State]] = {a.ring: [] for a in agents}
    for agent in agents:
        by_ring[agent.ring] += agent.outcomes
    assert by_ring[0] == [State.SUCCEEDED, State.SUCCEEDED]
    # Ring 1 runs two at a time: the first pair holds the broken host, whose
    # revert exceeds the budget of 0 and halts before the second pair.
    assert sorted(by_ring[1]) == sorted([State.SUCCEEDED, State.REVERTED])
    assert by_ring[2] == []  # ring 2 never opened
    broken = next(a for a in agents if a.ring == 1 and a.outcomes == [State.REVERTED])
    assert broken.backend.installed["fp-demo"] == "1.0"

    # A halted campaign assigns nothing until a person resumes it.
    assert _rounds(agents, ctl, campaign_id, 2) == "halted"
    assert all(a.outcomes == [] for a in agents if a.ring == 2)

    ctl.admin("campaign", "resume", campaign_id)
    assert _rounds(agents, ctl, campaign_id, 10) == "completed"
    for agent in agents:
        if agent is not broken:
            assert agent.outcomes == [State.SUCCEEDED]
            assert agent.backend.installed["fp-demo"] == "1.1"
    table = ctl.admin("campaign", "show", campaign_id).stdout
    assert "COMPLETED" in table
    assert ctl.admin("audit", "verify").stdout.startswith("audit trail intact")

    # Every assignment, result, the halt and the resume are in the audit
    # trail, and no ring opened before the one before it was done.
    records = ctl.admin_json("audit", "export")
    assert isinstance(records, list)
    actions = [r["action"] for r in records]
    for action in ("campaign.create", "campaign.approve", "campaign.halt", "campaign.resume",
                   "campaign.complete"):  # fmt: skip
        assert action in actions
    assert actions.count("order.assign.patch") == len(agents)
    ring_of = {a.host_id: a.ring for a in agents}
    assigned_rings = [
        ring_of[r["detail"].split("host ")[1].split()[0]]
        for r in records if r["action"] == "order.assign.patch"
    ]  # fmt: skip
    assert assigned_rings == sorted(assigned_rings)
    assert all(r["outcome"] != "timed_out" for r in records)


def test_concurrency_limits_hosts_in_flight(fleet, tmp_path):
    """Ring 1 allows 2 hosts at once, ring 2 50% of its 6: with agents that
    keep each order in flight for a whole round, the limits are reached and
    never exceeded."""
    ctl, agents = fleet
    for agent in agents:
        agent.defer = True
    spec = tmp_path / "demo.toml"
    spec.write_text(
        CAMPAIGN.replace(
            "failure_budget = 0 } },\n  { ring = 2", "failure_budget = 5 } },\n  { ring = 2"
        )
    )
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    peak: dict[int, int] = {}
    with ctl.database() as conn:
        for _ in range(12):
            for agent in agents:
                agent.round()
                for ring, n in conn.execute(
                    "SELECT ring, count(*) FROM assignments WHERE status = 'in_flight'"
                    " GROUP BY ring"
                ):
                    peak[ring] = max(peak.get(ring, 0), n)
    assert peak[0] == 2
    assert peak[1] == 2
    assert peak[2] == 3  # 50% of 6
    assert _show(ctl, campaign_id)["state"] == "completed"


def test_bad_campaign_files_are_refused_with_the_field(fleet, tmp_path):
    ctl, _ = fleet
    spec = tmp_path / "bad.toml"
    spec.write_text(CAMPAIGN.replace("[verify]", "[verfy]"))
    result = cli("fleetpatch", "campaign", "create", spec, "--data-dir", ctl.data_dir)
    assert result.returncode == 2
    assert "verfy" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(ctl.admin("campaign", "list", "--json").stdout) == []


def test_abort_with_revert_orders_patched_hosts_back(fleet, tmp_path):
    ctl, agents = fleet
    spec = tmp_path / "demo.toml"
    spec.write_text(CAMPAIGN)
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    ring0 = [a for a in agents if a.ring == 0]
    for agent in ring0:
        assert agent.round() is State.SUCCEEDED
    ctl.admin("campaign", "abort", campaign_id, "--revert")
    for agent in ring0:
        assert agent.round() is State.REVERTED
        assert agent.backend.installed["fp-demo"] == "1.0"
    for agent in agents:
        if agent.ring:
            assert agent.round() is None
    assert _show(ctl, campaign_id)["state"] == "aborted"


def test_a_controller_restart_mid_campaign_loses_nothing_and_assigns_nobody_twice(fleet, tmp_path):
    ctl, agents = fleet
    for agent in agents:
        agent.defer = True  # orders stay in flight across the restart
    spec = tmp_path / "demo.toml"
    spec.write_text(
        CAMPAIGN.replace(
            "min_success = 0.5, failure_budget = 0", "min_success = 0.5, failure_budget = 5"
        )
    )
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    for _ in range(3):
        for agent in agents:
            agent.round()
    before = _show(ctl, campaign_id)
    assert sum(c["in_flight"] for c in before["cells"]) > 0

    assert ctl.stop() == 0
    ctl.start()
    assert _rounds(agents, ctl, campaign_id, 12) == "completed"

    with ctl.database() as conn:
        per_host = conn.execute(
            "SELECT host_id, count(*) FROM assignments WHERE kind = 'patch' GROUP BY host_id"
        ).fetchall()
        reports = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM progress_reports"
        ).fetchone()
    assert sorted(n for _, n in per_host) == [1] * len(agents)
    assert reports[0] == reports[1]
    assert all(len(a.outcomes) == 1 for a in agents)
    assert ctl.admin("audit", "verify").stdout.startswith("audit trail intact")


def test_watch_follows_a_campaign_until_it_completes(fleet, tmp_path):
    ctl, agents = fleet
    spec = tmp_path / "demo.toml"
    spec.write_text(
        CAMPAIGN.replace(
            "min_success = 0.5, failure_budget = 0", "min_success = 0.5, failure_budget = 5"
        )
    )
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    watcher = subprocess.Popen(
        [str(BIN / "fleetpatch"), "campaign", "watch", campaign_id, "--interval", "0.2",
         "--data-dir", str(ctl.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert _rounds(agents, ctl, campaign_id, 12) == "completed"
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert any(f"campaign {campaign_id} running:" in line for line in lines)
    assert f"campaign {campaign_id} completed: eligible 12," in lines[-1]
    assert not any(line.lstrip().startswith("RING") for line in lines)  # lines, no table


AGENTS_FIRST = """
[campaign]
name = "after-the-agents"

[patch]
packages = ["fp-demo"]

[verify]
timeout = "1s"

[rollout]
min_agent_version = "9.0.0"
rings = [{ ring = 0, concurrency = "100%" }]
"""


def test_hosts_with_an_outdated_agent_wait_until_it_is_updated(tmp_path, store_url):
    """rollout.min_agent_version: the seed's "patch the agents first" (F3),
    with the host's version as its agent reports it at check-in."""
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    ctl.start()
    agents = [
        InProcessAgent(
            ctl,
            tmp_path / f"agent-{i}",
            "eu",
            0,
            FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}),
            FakeProber(),
            agent_version=version,
        )
        for i, version in enumerate(("9.0.0", "8.9.1"))
    ]
    try:
        spec = tmp_path / "c.toml"
        spec.write_text(AGENTS_FIRST)
        campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", campaign_id)
        assert _rounds(agents, ctl, campaign_id, 3) == "running"
        current, outdated = agents
        assert (current.outcomes, outdated.outcomes) == ([State.SUCCEEDED], [])
        (cell,) = _show(ctl, campaign_id)["cells"]
        assert cell["waiting_reasons"] == {"agent_outdated": 1}

        outdated.agent_version = "9.0.0"  # an agent-update campaign did its work
        assert _rounds(agents, ctl, campaign_id, 5) == "completed"
        assert outdated.outcomes == [State.SUCCEEDED]
    finally:
        for agent in agents:
            agent.close()
        ctl.stop()


def test_a_refused_unreadable_order_never_blocks_a_hosts_later_reports(tmp_path, store_url):
    """Issue 12: an order refused before its id could be read used to queue
    a report the controller rejected, and every later report of that host
    stayed stuck behind it. Now the refusal is stored under a placeholder,
    and the host's real order reports all the way to the campaign's end."""
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    ctl.start()
    try:
        backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
        agent = InProcessAgent(ctl, tmp_path / "a", "eu", 0, backend, FakeProber([True]))
        forged = types_pb2.SignedEnvelope(payload=b"\xff not a work order", key_id="nobody")
        with pytest.raises(OrderRefused):
            agent.runner.receive(forged, agent.state.trusted_signing_keys(), agent.host_id)
        assert agent.round() is None  # reports the refusal; nothing to run
        assert agent.journal.pending_reports() == []  # delivered, not stuck
        spec = tmp_path / "one.toml"
        spec.write_text(CAMPAIGN.replace("concurrency = 2, ", "concurrency = 1, "))
        campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", campaign_id)
        assert agent.round() is State.SUCCEEDED
        assert agent.journal.pending_reports() == []
        assert _show(ctl, campaign_id)["state"] == "completed"
        audit = ctl.admin_json("audit", "export")
        assert isinstance(audit, list)
        refused = [r for r in audit if r["action"] == "order.refused"]
        assert [r["target"] for r in refused] == [UNREADABLE_ORDER]
        agent.close()
    finally:
        ctl.stop()
