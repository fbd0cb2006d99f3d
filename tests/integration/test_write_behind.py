"""A real controller answers check-ins that bring nothing new from memory
and writes them behind ([checkin] write_behind): counted, written within the
interval or at shutdown, and a placement change made meanwhile by any
writer is honoured at the host's next check-in."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.datadir import DataDir
from controller.fleet.relabel import Relabel
from controller.model import Host
from controller.store import open_store
from tests.support.controller import Controller, free_port
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import scaled


def _configured(ctl: Controller, write_behind: str) -> str:
    """Set [checkin] write_behind and a metrics listener; its address."""
    config = ctl.data_dir / "controller.toml"
    text = config.read_text()
    assert '\nwrite_behind = "1s"\n' in text, "the template's [checkin] write_behind moved"
    metrics = f"127.0.0.1:{free_port()}"
    text = text.replace('\nwrite_behind = "1s"\n', f'\nwrite_behind = "{write_behind}"\n', 1)
    config.write_text(text.replace('\nlisten = ""', f'\nlisten = "{metrics}"', 1))
    return metrics


def _written_behind(metrics: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(r"^fleetpatch_checkins_written_behind_total (\S+)$", text, re.M)
    assert found, "the counter is not exposed"
    return float(found.group(1))


def _until_answered_from_memory(agent: InProcessAgent, metrics: str) -> int:
    """Check in (the first with inventory and scan, written through) until
    one is answered from memory, once the controller has read the placement
    generation (within a quarter of a second of starting): how many rounds."""
    deadline = time.monotonic() + scaled(30)
    agent.round()
    rounds = 1
    while _written_behind(metrics) == 0:
        assert time.monotonic() < deadline, "no check-in was answered from memory"
        agent.round()
        rounds += 1
    return rounds


def _host(ctl: Controller, host_id: str) -> Host:
    """The host as the database holds it (read beside the running controller)."""
    store = open_store("", DataDir(ctl.data_dir).database)
    try:
        return store.get_host(host_id)
    finally:
        store.close()


@pytest.fixture
def agents() -> Iterator[list[InProcessAgent]]:
    """The agents a test made, closed after it."""
    made: list[InProcessAgent] = []
    yield made
    for agent in made:
        agent.close()


def _world(
    tmp_path: Path, write_behind: str, made: list[InProcessAgent]
) -> tuple[Controller, InProcessAgent, str]:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    metrics = _configured(ctl, write_behind)
    ctl.start()
    backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
    agent = InProcessAgent(ctl, tmp_path / "agent", "eu", 0, backend, FakeProber([True]))
    made.append(agent)
    return ctl, agent, metrics


def test_nothing_new_is_answered_at_once_and_written_within_the_interval(tmp_path, agents):
    ctl, agent, metrics = _world(tmp_path, "1s", agents)
    try:
        rounds = _until_answered_from_memory(agent, metrics)
        assert _written_behind(metrics) == 1  # the last round alone
        deadline = time.monotonic() + scaled(30)
        while _host(ctl, agent.host_id).checkins < rounds:
            assert time.monotonic() < deadline, "the check-ins were not written behind"
            time.sleep(0.1)
        assert _host(ctl, agent.host_id).checkins == rounds
    finally:
        ctl.stop()


def test_a_placement_changed_by_another_writer_is_honoured_at_the_next_check_in(tmp_path, agents):
    """The host moves to ring 5 by SQL the controller never ran (as another
    replica's change is): its next check-ins are written through, and the
    store's answer carries ring 5; campaigns target it there."""
    ctl, agent, metrics = _world(tmp_path, "1s", agents)
    try:
        _until_answered_from_memory(agent, metrics)
        store = open_store("", DataDir(ctl.data_dir).database)
        try:
            store.relabel_host(
                agent.host_id, Relabel({}, ring=5), "admin:elsewhere", datetime.now(UTC)
            )
        finally:
            store.close()
        time.sleep(1.0)  # the generation is read every quarter of a second
        before = _written_behind(metrics)
        agent.round()
        assert _written_behind(metrics) == before  # written through: the held ring is stale
        hosts = json.loads(ctl.admin("hosts", "list", "--json").stdout)
        [listed] = [h for h in hosts if h["host_id"] == agent.host_id]
        assert listed["ring"] == 5
        agent.round()  # and from memory again, with ring 5 held
        assert _written_behind(metrics) == before + 1
    finally:
        ctl.stop()


def test_what_waits_at_shutdown_is_written_before_the_controller_exits(tmp_path, agents):
    ctl, agent, metrics = _world(tmp_path, "60s", agents)
    stopped = False
    try:
        rounds = _until_answered_from_memory(agent, metrics)
        # Those written through are in; the one answered from memory would
        # wait a minute, but:
        assert _host(ctl, agent.host_id).checkins == rounds - 1
        ctl.stop()
        stopped = True
        assert _host(ctl, agent.host_id).checkins == rounds
    finally:
        if not stopped:
            ctl.stop()


def test_an_admin_reading_hosts_sees_every_check_in_answered(tmp_path, agents):
    """`hosts show` and `hosts list` on the replica that answered: what it
    holds to write behind is written first, not up to a minute later."""
    ctl, agent, metrics = _world(tmp_path, "60s", agents)
    try:
        rounds = _until_answered_from_memory(agent, metrics)
        assert _host(ctl, agent.host_id).checkins == rounds - 1  # one still waits
        assert ctl.host(agent.host_id)["checkins"] == rounds
        # Again until one is answered from memory (a slow store sends a
        # check-in through it); then `hosts list` reads.
        deadline = time.monotonic() + scaled(30)
        while _written_behind(metrics) < 2:
            assert time.monotonic() < deadline, "no check-in was answered from memory"
            agent.round()
            rounds += 1
        listed = ctl.admin_json("hosts", "list")
        assert isinstance(listed, list)
        assert [h["checkins"] for h in listed if h["host_id"] == agent.host_id] == [rounds]
        assert _host(ctl, agent.host_id).checkins == rounds
    finally:
        ctl.stop()
