"""`fleetpatch-sim load` against a real controller (issue 17): simulated
agents enrolled for real over mutual TLS, check-ins measured, orders of a
running campaign carried out and reported, and the same load on the bare
server for the ratio."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import psutil
import pytest

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


@pytest.mark.parametrize(
    "stopping",
    [signal.SIGINT, signal.SIGTERM],  # a terminal's Ctrl-C; `timeout`'s or a service manager's
)
def test_ctrl_c_stops_the_load_and_prints_the_figures_until_then(controller, stopping):
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
            os.killpg(load.pid, stopping)
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


def test_agents_given_several_controllers_move_past_one_that_is_down(controller):
    """Each agent starts on its own replica of those named, as a fleet
    spreads, and moves to the next when its own cannot be reached: one
    failed call each at most, not half the fleet failing all along."""
    agents = 6
    done = cli(
        "fleetpatch-sim", "load", "--data-dir", controller.data_dir,
        "--controller", f"127.0.0.1:1,{controller.address}", "--agents", str(agents),
        "--processes", "1", "--seconds", "3", "--ramp", "0", "--json",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cannot reach the controller at 127.0.0.1:1" in done.stderr  # the admin CLI's warning
    (run,) = json.loads(done.stdout)["runs"]
    assert sum(run["errors"].values()) <= agents, run["errors"]
    assert run["checkins_total"] > agents


def test_an_enrollment_that_fails_is_one_line_and_leaves_no_usable_token(controller):
    done = cli(
        "fleetpatch-sim", "load", "--data-dir", controller.data_dir, "--enroll", "127.0.0.1:1",
        "--agents", "4", "--processes", "2", "--seconds", "2", "--ramp", "0",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "enrolling simulated agents at 127.0.0.1:1 failed: UNAVAILABLE" in lines[0]
    tokens = controller.admin_json("token", "list")
    assert isinstance(tokens, list)
    (made,) = [t for t in tokens if t["region"] == "load"]
    assert made["revoked"] is True, made


def test_a_bare_server_that_cannot_start_is_one_line_after_the_figures(controller, tmp_path):
    """--bare from an admin's copy of the data dir, which has no server key:
    the controller's figures, measured already, are printed; then one line
    with the bare server's own reason, exit 1."""
    admin_dir = tmp_path / "admin-only"
    admin_dir.mkdir(mode=0o700)
    for name in ("controller.toml", "ca.pem", "admin.pem", "admin.key", "endpoints.json"):
        shutil.copy2(controller.data_dir / name, admin_dir / name)
    done = cli(
        "fleetpatch-sim", "load", "--data-dir", admin_dir, "--agents", "4", "--processes", "1",
        "--seconds", "2", "--ramp", "0", "--bare", "--json",
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert run["checkins_total"] > 0
    errors = [line for line in done.stderr.splitlines() if not line.startswith("enrolled ")]
    assert len(errors) == 1, done.stderr
    assert "--bare: the bare server did not start" in errors[0]
    assert "server.key" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--enroll", "garbage"], "--enroll: 'garbage' is not an address"),
        (["--enroll", "127.0.0.1:99999"], "--enroll: '127.0.0.1:99999' is not an address"),
        (["--database-pid", "999999999"], "--database-pid: no process 999999999"),
        (["--seconds", "nan"], "'nan' is not a finite number"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_made(controller, flags, needle):
    done = cli("fleetpatch-sim", "load", "--data-dir", controller.data_dir, *flags, timeout=120)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert controller.admin_json("token", "list") == []  # no token made for nothing


def test_a_load_killed_outright_leaves_no_process_behind(controller):
    """SIGKILL gives the load no chance to stop its workers (in process
    groups of their own) or its bare server: they end with it."""
    argv = [BIN / "fleetpatch-sim", "load", "--data-dir", controller.data_dir,
            "--agents", "4", "--processes", "2", "--seconds", "3600", "--ramp", "0"]  # fmt: skip
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    ) as load:  # fmt: skip
        try:
            parent = psutil.Process(load.pid)
            wait_until(
                "the load's workers run",
                lambda: sum("spawn_main" in " ".join(c.cmdline()) for c in parent.children()) == 2,
                timeout=120,
            )
            workers = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
            load.kill()
            load.communicate(timeout=scaled(30))  # every holder of its pipes is gone
        finally:
            stop_group(load)
    _, alive = psutil.wait_procs(workers, timeout=scaled(10))
    assert not alive, alive
