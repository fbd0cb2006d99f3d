"""A real Prometheus scraping a real controller (real TLS, real SQLite)
through a small campaign whose canary fails: the SLIs, the rollback, the
halt and the shipped alert appear in Prometheus with the right values; the
shipped rules pass promtool; every dashboard query parses and returns
data; an agent's textfile is valid exposition format."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.orders.states import State
from tests.support.controller import Controller, cli, free_port
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.prometheus import RULES, Prometheus, binary
from tests.support.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "packaging" / "grafana").glob("*.json"))

CAMPAIGN = """
[campaign]
name = "canary-fails"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%", gate = { failure_budget = 0 } },
  { ring = 1, concurrency = "100%" },
]
"""
# Ring 0: two canaries that verify, then one that fails verification and
# reverts (last, so that all three are assigned before the halt); ring 1 waits.
LAYOUT = [(0, True), (0, True), (0, False), (1, True), (1, True)]


def _promtool() -> str:
    exe = binary("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian package prometheus: make deps)")
    return exe


def test_the_shipped_rules_pass_promtool_check_and_their_unit_tests():
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", str(ROOT / "tests" / "prometheus" / "rules_test.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@dataclass
class Scraped:
    prometheus: Prometheus
    controller: Controller
    campaign_id: str
    textfile: Path


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """The campaign run to its halt, with Prometheus scraping the controller."""
    tmp = tmp_path_factory.mktemp("scraped")
    ctl = Controller(tmp / "ctl")
    ctl.init()
    metrics = f"127.0.0.1:{free_port()}"
    config = ctl.data_dir / "controller.toml"
    text = config.read_text().replace('tick = "10s"', 'tick = "1s"')
    config.write_text(text.replace('\nlisten = ""', f'\nlisten = "{metrics}"', 1))
    ctl.start()
    prometheus.set_targets([metrics])
    agents: list[InProcessAgent] = []
    textfile = tmp / "fleetpatch.prom"
    try:
        for i, (ring, healthy) in enumerate(LAYOUT):
            agents.append(InProcessAgent(
                ctl, tmp / f"agent-{i}", "eu", ring,
                FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}),
                FakeProber([True] if healthy else [True, False]),
                textfile=textfile if i == 2 else None,
            ))  # fmt: skip
        spec = tmp / "campaign.toml"
        spec.write_text(CAMPAIGN)
        campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", campaign_id)
        state = ""
        for _ in range(5):
            for agent in agents:
                agent.round()
            doc = ctl.admin_json("campaign", "show", campaign_id)
            assert isinstance(doc, dict)
            state = str(doc["state"])
            if state == "halted":
                break
        assert state == "halted"
        assert [a.outcomes for a in agents[:3]] == [
            [State.SUCCEEDED],
            [State.SUCCEEDED],
            [State.REVERTED],
        ]
        yield Scraped(prometheus, ctl, campaign_id, textfile)
    finally:
        prometheus.set_targets([])
        for agent in agents:
            agent.close()
        ctl.stop()


def test_prometheus_sees_the_success_rate_the_rollback_and_the_halt(scraped):
    prom, cid = scraped.prometheus, scraped.campaign_id
    # M1: two of the three finished canaries succeeded.
    prom.wait_for(f'fleetpatch_campaign_success_ratio{{campaign="{cid}"}}', 2 / 3)
    prom.wait_for("fleetpatch:patch_success:ratio", 2 / 3)  # the shipped recording rule
    # M3: one of three canaries failed.
    prom.wait_for(f'fleetpatch_campaign_canary_failure_ratio{{campaign="{cid}",ring="0"}}', 1 / 3)
    # M4: one rollback, counted as it happened and in the campaign's counts.
    prom.wait_for('fleetpatch_order_results_total{kind="patch",status="reverted"}', 1)
    prom.wait_for('fleetpatch_order_results_total{kind="patch",status="succeeded"}', 2)
    prom.wait_for(f'fleetpatch_campaign_hosts{{campaign="{cid}",ring="0",status="reverted"}}', 1)
    # The halt: by kind, in the campaigns by state, and the campaign's own state.
    prom.wait_for('fleetpatch_campaign_halts_total{kind="failure_budget"}', 1)
    prom.wait_for('fleetpatch_campaign_halts_total{kind="silent_hosts"}', 0)
    prom.wait_for('fleetpatch_campaigns{state="halted"}', 1)
    prom.wait_for(f'fleetpatch_campaign_state{{campaign="{cid}",state="halted"}}', 1)
    # Ring 1 never opened; five hosts, all reporting (M8).
    prom.wait_for(f'fleetpatch_campaign_hosts{{campaign="{cid}",ring="1",status="eligible"}}', 2)
    prom.wait_for(f'fleetpatch_campaign_hosts{{campaign="{cid}",ring="1",status="in_flight"}}', 0)
    prom.wait_for('sum(fleetpatch_hosts{status="active"})', 5)
    prom.wait_for("fleetpatch:hosts_reporting:ratio", 1)
    # M6: the two verified patches were timed from APPLY.
    prom.wait_for("fleetpatch_apply_to_verified_seconds_count", 2)
    # Check-ins and the store's batches were measured.
    assert (prom.value("fleetpatch_checkin_duration_seconds_count") or 0) >= len(LAYOUT)
    assert (prom.value("fleetpatch_store_checkin_batch_size_sum") or 0) >= len(LAYOUT)
    # Load and push: nothing shed in so small a fleet, no nudge left waiting.
    prom.wait_for("fleetpatch_calls_shed_total", 0)
    prom.wait_for("fleetpatch_nudges_waiting", 0)
    assert (prom.value("fleetpatch_capacity_light_calls_per_second") or 0) > 0
    # Never a host id in a label.
    series = prom.api("series", **{"match[]": '{job="fleetpatch-controller"}'})
    assert not [s for s in series if any(v.startswith("h-") for v in s.values())]


def test_the_shipped_alerts_fire(scraped):
    prom, cid = scraped.prometheus, scraped.campaign_id
    for alert in ("FleetpatchCampaignHalted", "FleetpatchCanaryFailureRateOverBudget"):
        prom.wait_for(f'ALERTS{{alertname="{alert}",alertstate="firing",campaign="{cid}"}}', 1)
    # The test's agents stop checking in once the campaign halts, so hosts
    # may already count as dark here (the alert pending, on a slow run), but
    # the rule waits 15 minutes before it pages anybody.
    assert prom.value('ALERTS{alertname="FleetpatchHostsDark",alertstate="firing"}') is None


def _queries() -> list[tuple[str, str]]:
    return [
        (f"{path.stem}: {panel['title']}", target["expr"])
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def test_three_dashboards_ship_and_every_panel_has_a_query():
    assert [p.stem for p in DASHBOARDS] == [
        "fleetpatch-debug",
        "fleetpatch-executive",
        "fleetpatch-oncall",
    ]
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["uid"] == path.stem
        assert all(panel["targets"] for panel in doc["panels"])


def test_every_dashboard_query_parses_and_returns_data(scraped):
    prom = scraped.prometheus
    empty = []
    for where, expr in _queries():
        # Grafana's own variable, as it would fill it in for a short range.
        query = re.sub(r"\$__rate_interval", "1m", expr)
        assert "$" not in query, (where, query)
        deadline = time.monotonic() + scaled(20)
        while not prom.query(query) and time.monotonic() < deadline:
            time.sleep(0.5)  # rates need two scrapes of the change
        if not prom.query(query):
            empty.append(f"{where}: {query}")
    assert empty == []


def test_an_agents_textfile_is_valid_exposition_and_says_what_happened(scraped):
    text = scraped.textfile.read_text()
    checked = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "fleetpatch_agent_last_checkin_success 1" in text
    assert (
        f'fleetpatch_agent_order_state{{campaign="{scraped.campaign_id}",state="REVERTED"}} 1'
        in text
    )
    assert "fleetpatch_agent_last_verify_success 0" in text
    assert "fleetpatch_agent_order_in_progress 0" in text


def test_a_metrics_port_in_use_is_one_clear_line_at_start_up(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        config = ctl.data_dir / "controller.toml"
        config.write_text(config.read_text().replace('\nlisten = ""', f'\nlisten = "{busy}"', 1))
        result = cli("fleetpatch", "controller", "serve", "--data-dir", ctl.data_dir,
                     "--listen", ctl.address, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"fleetpatch: error: cannot listen for metrics on {busy}: Address already in use "
        "(set [metrics] listen in controller.toml)"
    ]
