"""`fleetpatch campaign watch` against a real controller: its exit code says
how the campaign ended, it prints a line (or a JSON object) per change
without a terminal, and it follows the campaign across a controller
restart."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controller import BIN, Controller
from tests.support.waiting import scaled

CAMPAIGN = """
[campaign]
name = "watched"

[patch]
packages = ["fp-demo"]

[rollout]
rings = [{ ring = 0, concurrency = "100%" }]
"""


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    yield ctl
    ctl.stop()


def _create(ctl: Controller, tmp_path: Path) -> str:
    spec = tmp_path / "watched.toml"
    spec.write_text(CAMPAIGN)
    return ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]


def _watch(ctl: Controller, campaign_id: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "fleetpatch"), "campaign", "watch", campaign_id, "--interval", "0.2",
         "--data-dir", str(ctl.data_dir), *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def test_a_completed_campaign_exits_0_with_one_json_object_per_change(ctl, tmp_path):
    campaign_id = _create(ctl, tmp_path)
    ctl.admin("campaign", "approve", campaign_id)  # no hosts: it completes at the next tick
    watch = _watch(ctl, campaign_id, "--json")
    out, err = watch.communicate(timeout=scaled(60))
    assert watch.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[-1]["state"] == "completed"
    assert all(d["campaign_id"] == campaign_id for d in docs)
    assert len({json.dumps(d["state"]) for d in docs}) == len(docs)  # a line per change only


def test_watch_follows_a_restart_and_exits_8_when_the_campaign_is_aborted(ctl, tmp_path):
    campaign_id = _create(ctl, tmp_path)  # a draft: watch follows it
    watch = _watch(ctl, campaign_id, "--reconnect-for", "2m")
    try:
        time.sleep(scaled(1))
        ctl.stop()
        time.sleep(scaled(2))  # watch finds the controller gone and retries
        ctl.start()
        ctl.admin("campaign", "abort", campaign_id)
        out, err = watch.communicate(timeout=scaled(90))
    finally:
        watch.kill()
    assert watch.returncode == 8, err
    assert "reconnecting in" in err
    assert "reconnected after" in err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert f"campaign {campaign_id} draft: eligible 0," in lines[0]
    assert f"campaign {campaign_id} aborted" in lines[-1]
    assert "{" not in out  # plain lines, not a dict repr
    assert err.strip().splitlines()[-1] == f"fleetpatch: error: campaign {campaign_id} was aborted"


def test_watch_of_a_controller_that_stays_away_exits_3(ctl, tmp_path):
    campaign_id = _create(ctl, tmp_path)
    ctl.stop()
    watch = _watch(ctl, campaign_id, "--reconnect-for", "3s")
    _, err = watch.communicate(timeout=scaled(60))
    assert watch.returncode == 3, err
    assert "gave up after" in err.strip().splitlines()[-1]
