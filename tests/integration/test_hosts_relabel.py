"""`fleetpatch hosts relabel` against a real controller: audited, once per
change, and the campaign engine sees it at the host's next check-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.orders.states import State
from tests.support.controller import Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent

CAMPAIGN = """
[campaign]
name = "web-only"

[targets]
labels = { role = "web" }

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [{ ring = 2, concurrency = "100%" }]
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Controller, InProcessAgent]]:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    ctl.start()
    backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
    agent = InProcessAgent(ctl, tmp_path / "agent", "eu", 0, backend, FakeProber([True]))
    try:
        yield ctl, agent
    finally:
        agent.close()
        ctl.stop()


def _relabels(ctl: Controller) -> list[dict[str, object]]:
    records = json.loads(ctl.admin("audit", "export", "--json").stdout)
    return [r for r in records if r["action"] == "host.relabel"]


def test_a_relabelled_host_is_targeted_at_its_next_check_in(world, tmp_path):
    ctl, agent = world
    # A web host the campaign waits for (it never checks in here): without
    # one, the campaign targets no host and completes at its first tick,
    # before the relabel when the machine is slow.
    backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
    waited_for = InProcessAgent(ctl, tmp_path / "web", "us", 2, backend, FakeProber([True]),
                                labels={"role": "web"})  # fmt: skip
    waited_for.close()
    spec = tmp_path / "web.toml"
    spec.write_text(CAMPAIGN)
    campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    assert agent.round() is None  # no role=web label, ring 0: not this campaign's
    done = ctl.admin("hosts", "relabel", agent.host_id, "--label", "role=web", "--ring", "2",
                     "--region", "us")  # fmt: skip
    assert f"host {agent.host_id}: region us, ring 2, role=web" in done.stdout
    host = json.loads(ctl.admin("hosts", "show", agent.host_id, "--json").stdout)
    assert (host["region"], host["ring"], host["labels"]) == ("us", 2, {"role": "web"})
    assert agent.round() is State.SUCCEEDED  # the next check-in brings the order
    (record,) = _relabels(ctl)
    assert record["target"] == agent.host_id
    assert record["detail"] == "ring 0 -> 2; region eu -> us; label role: - -> web"
    assert record["actor"] == "admin:admin"

    # Asked again: nothing changes, nothing more is audited (exit 0).
    ctl.admin("hosts", "relabel", agent.host_id, "--label", "role=web")
    assert len(_relabels(ctl)) == 1
    ctl.admin("hosts", "relabel", agent.host_id, "--unlabel", "role")
    assert json.loads(ctl.admin("hosts", "show", agent.host_id, "--json").stdout)["labels"] == {}
    assert _relabels(ctl)[-1]["detail"] == "label role: web -> -"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--label", "Role=web"], 2, "label key 'Role'"),
        (["--ring", "500"], 2, "ring 500 is out of range"),
        ([], 2, "nothing to change"),
    ],
)
def test_relabel_mistakes_are_one_line(world, args, code, needle):
    ctl, agent = world
    result = cli("fleetpatch", "hosts", "relabel", agent.host_id, *args,
                 "--data-dir", ctl.data_dir)  # fmt: skip
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert needle in result.stderr


def test_relabel_of_an_unknown_or_revoked_host(world):
    ctl, agent = world
    unknown = cli("fleetpatch", "hosts", "relabel", "h-0123456789abcdef", "--ring", "1",
                  "--data-dir", ctl.data_dir)  # fmt: skip
    assert unknown.returncode == 5, unknown.stderr
    ctl.admin("hosts", "revoke", agent.host_id)
    revoked = cli("fleetpatch", "hosts", "relabel", agent.host_id, "--ring", "1",
                  "--data-dir", ctl.data_dir)  # fmt: skip
    assert revoked.returncode == 6, revoked.stderr
    assert "is revoked" in revoked.stderr
