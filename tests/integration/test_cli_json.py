"""Every `--json` output of the admin CLI, from a real controller (mutual
TLS, SQLite) with a host, a finished campaign, a token, a release and an
audit trail, held to its documented schema (controller/cli/schemas.py)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agent import schemas as agent_schemas
from controller.cli import schemas
from controller.releases.signed import keygen, sign_artifacts
from tests.support.controller import BIN, Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import scaled

CAMPAIGN = """
[campaign]
name = "json-1"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [{ ring = 0, concurrency = "100%" }]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[Controller, str, str]]:
    """(controller, host id, finished campaign id)."""
    root = tmp_path_factory.mktemp("json")
    ctl = Controller(root / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    backend = FakeBackend({"fp-demo": "1.0", "libc6": "2.36"}, {"fp-demo": "1.1"})
    agent = InProcessAgent(ctl, root / "agent", "eu", 0, backend, FakeProber([True]))
    try:
        agent.round()
        spec = root / "json.toml"
        spec.write_text(CAMPAIGN)
        campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", campaign_id)
        for _ in range(30):
            agent.round()
            if _json(ctl, "campaign", "show", campaign_id)["state"] == "completed":
                break
        key = root / "keys" / "release.key"
        key.parent.mkdir()
        keygen(key)
        deb = root / "dist" / "fleetpatch-agent_0.2.0_all.deb"
        deb.parent.mkdir()
        deb.write_bytes(os.urandom(1000))
        sign_artifacts([deb], key)
        ctl.admin("release", "publish", deb)
        ctl.admin("admin", "add", "vic", "--role", "viewer", "--out", root / "vic")
        ctl.admin("admin", "revoke", "vic")  # a revoked admin too, in admin list
        yield ctl, agent.host_id, campaign_id
    finally:
        agent.close()
        ctl.stop()


def _json(ctl: Controller, *argv: str) -> Any:
    return json.loads(ctl.admin(*argv, "--json").stdout)


def _holds(doc: object, schema: schemas.Schema) -> None:
    problems = schemas.check(doc, schema)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("argv", "schema"),
    [
        (["token", "list"], schemas.array(schemas.TOKEN)),
        (["hosts", "list"], schemas.array(schemas.HOST)),
        (["hosts", "show", "{host}"], schemas.HOST_SHOWN),
        (["campaign", "list"], schemas.array(schemas.CAMPAIGN)),
        (["campaign", "show", "{campaign}"], schemas.CAMPAIGN),
        (["campaign", "show", "{campaign}", "--hosts"], schemas.array(schemas.CAMPAIGN_HOST)),
        (["release", "list"], schemas.array(schemas.RELEASE)),
        (["audit", "export"], schemas.array(schemas.AUDIT_RECORD)),
        (["admin", "list"], schemas.array(schemas.ADMIN)),
        (["token", "create", "--region", "eu", "--ring", "0"], schemas.TOKEN_CREATED),
        (["hosts", "relabel", "{host}", "--label", "env=test"], schemas.HOST),
    ],
)
def test_every_json_output_holds_to_its_schema(world, argv, schema):
    ctl, host_id, campaign_id = world
    argv = [a.format(host=host_id, campaign=campaign_id) for a in argv]
    doc = _json(ctl, *argv)
    _holds(doc, schema)
    if isinstance(doc, list):
        assert doc, f"{argv} printed an empty list: the check would hold to nothing"


@pytest.mark.parametrize(
    ("argv", "schema"),
    [
        (["status", "--state-dir", "{state}"], agent_schemas.STATUS),
        (["check", "--state-dir", "{state}"], agent_schemas.CHECK),
        (["inventory"], agent_schemas.INVENTORY),
    ],
)
def test_every_agent_json_output_holds_to_its_schema(world, argv, schema):
    ctl, _, _ = world
    state = ctl.data_dir.parent / "agent"
    done = cli("fleetpatch-agent", *[a.format(state=state) for a in argv], "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    _holds(doc, schema)
    if "orders" in doc:
        assert doc["orders"], "the agent carried out an order: status lists it"


def test_the_json_is_what_the_tables_say(world):
    ctl, host_id, campaign_id = world
    (host,) = _json(ctl, "hosts", "list")
    assert host["status"] == "active"
    assert host["host_id"] == host_id
    assert host["last_seen"].endswith("Z")
    shown = _json(ctl, "hosts", "show", host_id)
    extra = ("packages", "updates", "exposures")
    assert {k: v for k, v in shown.items() if k not in extra} == host
    campaign = _json(ctl, "campaign", "show", campaign_id)
    assert campaign["state"] == "completed"
    assert campaign["halt_reason"] is None
    (listed,) = _json(ctl, "campaign", "list")
    assert set(listed) == set(campaign)


def test_campaign_show_hosts_says_what_each_host_did(world):
    ctl, host_id, campaign_id = world
    (host,) = _json(ctl, "campaign", "show", campaign_id, "--hosts")
    assert host["host_id"] == host_id
    assert host["status"] == "succeeded"
    assert host["kind"] == "patch"
    assert {"name": "fp-demo", "from_version": "1.0", "to_version": "1.1"} in host["changes"]
    table = ctl.admin("campaign", "show", campaign_id, "--hosts").stdout
    assert "fp-demo 1.0 -> 1.1" in table
    assert host_id in table
    assert _json(ctl, "campaign", "show", campaign_id, "--hosts", "--state", "failed") == []
    bad = cli("fleetpatch", "campaign", "show", campaign_id, "--hosts", "--state", "broken",
              "--data-dir", ctl.data_dir)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "--state 'broken' is not one of in_flight" in bad.stderr


def test_watch_json_is_one_schema_object_per_line(world):
    ctl, _, campaign_id = world
    done = subprocess.run(
        [str(BIN / "fleetpatch"), "campaign", "watch", campaign_id, "--json",
         "--data-dir", str(ctl.data_dir)],
        capture_output=True, text=True, timeout=scaled(60), check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines
    for line in lines:
        _holds(json.loads(line), schemas.WATCH_EVENT)


def test_the_checker_finds_what_breaks_a_schema():
    good = {"seq": 1, "at": "2026-12-01T12:00:00Z", "actor": "a", "action": "b", "target": None,
            "outcome": "ok", "detail": None, "prev_hash": "p", "hash": "h"}  # fmt: skip
    assert schemas.check(good, schemas.AUDIT_RECORD) == []
    changes: list[tuple[dict[str, object], str]] = [
        ({"at": "2026-12-01T12:00:00+00:00"}, "does not match"),
        ({"detail": ""}, "empty string"),
        ({"seq": "1"}, "is not integer"),
        ({"extra": 1}, "not in the documented schema"),
    ]
    for change, needle in changes:
        problems = schemas.check({**good, **change}, schemas.AUDIT_RECORD)
        assert any(needle in p for p in problems), (change, problems)
    missing = dict(good)
    del missing["hash"]
    assert schemas.check(missing, schemas.AUDIT_RECORD) == ["$: 'hash' missing"]
    assert schemas.check([{"status": "HOST_STATUS_ACTIVE"}], schemas.array(schemas.HOST))


def test_hosts_list_warns_when_hosts_share_a_machine_id(tmp_path):
    """In-process agents on one machine report its machine-id: clones."""
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    ctl.start()
    agents = []
    try:
        for n in range(2):
            if n == 1:
                assert "share machine-id" not in ctl.admin("hosts", "list").stderr  # one host
            backend = FakeBackend({"libc6": "2.36"}, {})
            agents.append(
                InProcessAgent(ctl, tmp_path / f"a{n}", "eu", 0, backend, FakeProber([True]))
            )
        listed = ctl.admin("hosts", "list")
        (warning,) = [line for line in listed.stderr.splitlines() if "warning" in line]
        assert "2 hosts share machine-id" in warning
        assert all(agent.host_id in warning for agent in agents)
        assert "share machine-id" in ctl.admin("hosts", "list", "--json").stderr
        # A third clone is told at enrollment, and enrolled all the same.
        third = ctl.enroll(tmp_path / "c", ctl.token())
        assert third.returncode == 0, third.stderr
        assert "2 enrolled host(s) report this host's machine-id too" in third.stderr
        assert all(agent.host_id in third.stderr for agent in agents)
        assert "as 2 other host(s) do" in ctl.log.read_text()
        ctl.admin("hosts", "revoke", agents[1].host_id)
        third_id = third.stdout.split()[2]
        ctl.admin("hosts", "revoke", third_id)
        assert "share machine-id" not in ctl.admin("hosts", "list").stderr
    finally:
        for agent in agents:
            agent.close()
        ctl.stop()
