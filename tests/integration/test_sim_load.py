"""`fleetpatch-sim load` against a real controller (issue 17): simulated
agents enrolled for real over mutual TLS, check-ins measured, orders of a
running campaign carried out and reported, and the same load on the bare
server for the ratio."""

from __future__ import annotations

import json

from tests.support.controller import cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent

CAMPAIGN = """
[campaign]
name = "load-orders"
[patch]
packages = ["pkg1"]
[targets]
labels = { load = "sim" }
[rollout]
concurrency = "100%"
[[rollout.rings]]
ring = 0
gate = { min_success = 0.0 }
"""


def test_load_measures_check_ins_and_carries_out_orders(controller, tmp_path):
    # A targeted host the campaign waits for (it never checks in again), in
    # the load's region and ring: without one, the campaign targets no host
    # until the load's agents enroll, and its first tick may complete it
    # before they do.
    backend = FakeBackend({"pkg1": "1.0"}, {"pkg1": "1.1"})
    waited_for = InProcessAgent(controller, tmp_path / "waited-for", "load", 0, backend,
                                FakeProber([True]), labels={"load": "sim"})  # fmt: skip
    waited_for.close()
    spec = tmp_path / "campaign.toml"
    spec.write_text(CAMPAIGN)
    campaign_id = controller.admin("campaign", "create", spec).stdout.strip()
    controller.admin("campaign", "approve", campaign_id)

    done = cli(
        "fleetpatch-sim", "load", "--data-dir", controller.data_dir, "--agents", "24",
        "--processes", "2", "--seconds", "4", "--ramp", "2", "--failure-rate", "0.5",
        "--bare", "--json",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    ctl, bare = doc["runs"]
    assert ctl["agents"] == 24
    assert ctl["checkins_per_second"] > 10
    assert ctl["errors"] == {}
    assert bare["checkins_per_second"] > 10
    assert 0 < doc["ratio"] < 5
    # The controller ran here: its CPU and memory are measured.
    assert ctl["controller_rss_mib"] > 10

    # Every agent was enrolled for real and got the campaign's order.
    listed = controller.admin_json("hosts", "list", "--region", "load")
    assert isinstance(listed, list)
    hosts = [h for h in listed if h["host_id"] != waited_for.host_id]
    assert len(hosts) == 24
    assert {h["labels"]["load"] for h in hosts} == {"sim"}
    # Each order was taken once (hosts enrolled during the run join the
    # campaign at its next tick: not every one may have had its turn).
    shown = controller.admin_json("campaign", "show", campaign_id)
    assert isinstance(shown, dict)
    totals = shown["totals"]
    assert 0 < ctl["orders"] == totals["in_flight"] + totals["succeeded"] + totals["failed"]
    # Reports come 1-5 simulated seconds after the order: some may still be out.
    assert totals["succeeded"] + totals["failed"] == ctl["reports"]
    assert ctl["reports"] > 0
