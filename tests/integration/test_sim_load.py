"""`fleetpatch-sim load` against a real controller (issue 17): simulated
agents enrolled for real over mutual TLS, check-ins measured, orders of a
running campaign carried out and reported, and the same load on the bare
server for the ratio."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from tests.support.controller import BIN, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import scaled, sigint_not_ignored, stop_group, wait_until

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


def test_ctrl_c_stops_the_load_and_prints_the_figures_until_then(controller):
    agents = 6
    argv = [BIN / "fleetpatch-sim", "load", "--data-dir", controller.data_dir,
            "--agents", str(agents), "--processes", "2", "--seconds", "3600", "--ramp", "0",
            "--bare", "--json"]  # fmt: skip

    def checked_in() -> bool:  # every agent's first check-in (its inventory) was answered
        with controller.database() as db:
            row = db.execute(
                "SELECT count(*) FROM hosts WHERE region = 'load' AND inventory_hash != ''"
            ).fetchone()
        return bool(row[0] == agents)

    # A session of its own, so that SIGINT goes to its whole process group
    # (the load's worker processes included), as a terminal's Ctrl-C does.
    with sigint_not_ignored(), subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    ) as load:  # fmt: skip
        try:
            wait_until("the simulated agents check in", checked_in, timeout=120)
            os.killpg(load.pid, signal.SIGINT)
            stdout, stderr = load.communicate(timeout=scaled(60))
        finally:
            stop_group(load)
    assert load.returncode == 130, stderr
    assert "Traceback" not in stderr
    # The controller's figures until Ctrl-C, and no bare run after it.
    (run,) = json.loads(stdout)["runs"]
    assert run["interrupted"] is True
    assert 0 < run["seconds"] < 3600
    assert run["checkins_per_second"] > 0
    assert run["checkins_total"] >= agents
    assert run["errors"] == {}  # the calls it cancelled to stop are not the controller's errors
