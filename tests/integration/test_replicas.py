"""Two controller replicas on one PostgreSQL database (issue 17, part 2):
the second set up from the first's data dir (the same CA, signing key and
admin trust), one leading the campaign tick, agents that list both, a
campaign running, the leader SIGKILLed mid-ring: the agents fail over, the
survivor takes the tick over, the campaign completes through it, no host is
assigned twice and the audit chain verifies. Real processes, real gRPC with
mutual TLS, real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from cryptography import x509
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from agent.errors import TransientError
from controller.fleet.lineage import ca_mark
from tests.integration.test_cli_errors import _one_line
from tests.integration.test_enrollment import Raw, _enroll
from tests.support.controller import BIN, Controller, cli, free_port, ok
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import wait_for

CAMPAIGN = """
[campaign]
name = "replicas"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%" },
  { ring = 1, concurrency = 2 },
]
"""
LEADING = "leading: this controller runs the campaign tick"
FOLLOWING = "another controller replica runs the campaign tick"


def replica_of(
    first: Controller, data_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> Controller:
    """A second replica, as the README says to make one: the first's data
    dir copied (keys, CA, settings with the shared [store] url), without its
    SQLite file and its endpoints, listening on an address of its own."""
    shutil.copytree(first.data_dir, data_dir,
                    ignore=shutil.ignore_patterns("controller.db*", "endpoints.json"))  # fmt: skip
    return Controller(data_dir, port=port or free_port(), store_url=first.store_url, host=host)


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Controller, Controller]]:
    first = Controller(tmp_path / "a", store_url=postgres_url)
    first.init()
    config = first.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    second = replica_of(first, tmp_path / "b")
    first.start()
    wait_for("the first replica to lead", first.log.read_text, lambda t: LEADING in t,
             timeout=30)  # fmt: skip
    second.start()
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


class PatchRun:
    """Six agents (two in ring 0, four in ring 1) with fp-demo 1.0 to
    update, enrolled through ``ctl``; each carries an order out the round
    after it comes, so that it stays in flight meanwhile. ``address``: the
    agents' controller address(es), ``ctl``'s by default."""

    def __init__(self, ctl: Controller, tmp_path: Path, address: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.agents = [
            InProcessAgent(
                ctl,
                tmp_path / f"agent-{i}",
                "eu",
                ring,
                FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}),
                FakeProber([True]),
                defer=True,
                address=address,
            )
            for i, ring in enumerate((0, 0, 1, 1, 1, 1))
        ]
        self.campaign_id = ""

    def approve(self, ctl: Controller) -> None:
        """CAMPAIGN created and approved through ``ctl``; then ring 0's two
        orders delivered, not carried out yet."""
        spec = self.tmp_path / "c.toml"
        spec.write_text(CAMPAIGN)
        self.campaign_id = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", self.campaign_id)

        def ring_0_in_flight() -> bool:
            for agent in self.agents[:2]:
                if agent._pending is None:
                    agent.round()
            return all(agent._pending for agent in self.agents[:2])

        wait_for("ring 0 to be assigned", ring_0_in_flight, timeout=30, interval=0.5)

    def complete_through(self, ctl: Controller, what: str) -> None:
        """Agent rounds until the campaign, as ``ctl`` shows it, completes."""

        def state() -> str:
            for agent in self.agents:
                agent.round()
            doc = ctl.admin_json("campaign", "show", self.campaign_id)
            assert isinstance(doc, dict)
            return str(doc["state"])

        wait_for(what, state, lambda s: s == "completed", timeout=120, interval=0.2)

    def assert_each_host_patched_once(self, ctl: Controller) -> None:
        with ctl.database() as conn:
            per_host = conn.execute(
                "SELECT host_id, count(*) FROM assignments WHERE kind = 'patch' GROUP BY host_id"
            ).fetchall()
        assert sorted(n for _, n in per_host) == [1] * len(self.agents)
        assert [len(a.outcomes) for a in self.agents] == [1] * len(self.agents)

    def close(self) -> None:
        for agent in self.agents:
            agent.close()


def test_the_survivor_of_a_killed_leader_completes_the_campaign(replicas, tmp_path):
    first, second = replicas
    wait_for("the second replica to follow", second.log.read_text, lambda t: FOLLOWING in t,
             timeout=30)  # fmt: skip
    # The agents list both replicas, the first (leading) first.
    run = PatchRun(first, tmp_path, address=f"{first.address},{second.address}")
    try:
        run.approve(first)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # mid-ring: ring 0's orders in flight
        first.proc.wait()
        first.proc = None
        wait_for("the survivor to lead", second.log.read_text, lambda t: LEADING in t,
                 timeout=60)  # fmt: skip
        run.complete_through(second, "the campaign to complete through the survivor")
        assert {agent.client.address for agent in run.agents} == {second.address}  # failed over
    finally:
        run.close()
    run.assert_each_host_patched_once(second)
    assert second.admin("audit", "verify").stdout.startswith("audit trail intact")
    assert "Traceback" not in second.log.read_text()


def _report_via(ctl: Controller, host: Raw) -> grpc.StatusCode:
    """An empty progress report as ``host`` through ``ctl``: its answer."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        private_key=host.key_pem,
        certificate_chain=host.cert_pem,
    )
    with grpc.secure_channel(ctl.address, creds) as channel:
        try:
            agent_pb2_grpc.AgentServiceStub(channel).ReportProgress(
                agent_pb2.ReportProgressRequest(), timeout=30
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_replica_whose_keys_are_not_the_fleets_does_not_serve_it(replicas, tmp_path):
    """A replica made by an `init` of its own, or left with a copy from
    before another replica's rotate-key, would sign orders the agents
    refuse: serve refuses it in one line, exit 2; one running meanwhile
    stops within a tick with that line, and its agents move to the other
    replica. Copied again, it serves."""
    first, stale = replicas
    # An agent listing both replicas, the one to be left behind first.
    both = f"{stale.address},{first.address}"
    agent = InProcessAgent(
        first, tmp_path / "agent", "eu", 1, FakeBackend({}, {}), FakeProber([True]), address=both
    )
    try:
        agent.round()
        assert agent.client.address == stale.address
        first.stop()
        ca = ca_mark(x509.load_pem_x509_certificate((first.data_dir / "ca.pem").read_bytes()))
        ca = ca[3:19]
        own = Controller(tmp_path / "own", store_url=first.store_url)
        own.init()
        _one_line(own.serve_to_exit(), 2, "this data dir is not the fleet's",
                  "not a `controller init` of its own")  # fmt: skip

        rotated = ok("fleetpatch", "controller", "rotate-key", "--data-dir", first.data_dir)
        old, new = rotated.stdout.split()[2], rotated.stdout.split()[6].rstrip(",")
        first.start()
        moved = f"signing key {new} (rotated from CA {ca}, signing key {old}): the other replicas"
        assert moved in first.log.read_text()
        behind = f"it has CA {ca}, signing key {old}, the fleet has CA {ca}, signing key {new}"
        assert stale.proc is not None
        assert stale.proc.wait(timeout=30) == 2  # a tick is 1 s here
        stale.proc = None
        said = stale.log.read_text()
        assert f"{behind} (another replica ran rotate-key" in said
        assert "this replica stops serving" in said
        last = said.strip().splitlines()[-1]  # the exit's one line
        assert last == (
            f"fleetpatch: error: this data dir is older than the fleet's: {behind} (another "
            "replica ran rotate-key or rotate-ca); copy the data dir again from that replica"
        )
        assert "Traceback" not in said

        def checks_in() -> bool:
            try:
                agent.round()
            except TransientError:
                return False
            return True

        wait_for("the agent to check in through the other replica", checks_in, timeout=30)
        assert agent.client.address == first.address
        assert new in agent.state.trusted_signing_keys()  # from the replica that rotated
    finally:
        agent.close()
    _one_line(stale.serve_to_exit(), 2, f"this data dir is older than the fleet's: {behind}")
    again = replica_of(first, tmp_path / "again")
    again.start()
    assert again.stop() == 0
    first.stop()


def test_a_replica_left_behind_by_a_ca_rotation_stops(replicas):
    """The same for `rotate-ca` on another replica: one left running would
    renew host certificates from the CA the fleet is leaving and never
    offer the new one, so it stops within a tick, exit 2."""
    first, stale = replicas
    first.stop()
    ok("fleetpatch", "controller", "rotate-ca", "--data-dir", first.data_dir)
    first.start()
    assert stale.proc is not None
    assert stale.proc.wait(timeout=30) == 2
    stale.proc = None
    last = stale.log.read_text().strip().splitlines()[-1]
    assert last.startswith("fleetpatch: error: this data dir is older than the fleet's: it has CA ")
    assert "another replica ran rotate-key or rotate-ca" in last
    assert first.proc is not None
    assert first.proc.poll() is None  # the rotated one serves on
    assert first.admin("hosts", "list").returncode == 0


def test_a_host_revoked_through_one_replica_is_refused_by_the_other(replicas):
    first, second = replicas
    host = _enroll(first, first.token())
    assert _report_via(second, host) is grpc.StatusCode.OK
    first.admin("hosts", "revoke", host.host_id)
    assert _report_via(first, host) is grpc.StatusCode.PERMISSION_DENIED
    # The other replica learns it from the database within a tick (1 s here).
    wait_for("the second replica to refuse the revoked host", lambda: _report_via(second, host),
             lambda code: code is grpc.StatusCode.PERMISSION_DENIED, timeout=30)  # fmt: skip


def test_the_admin_cli_fails_over_to_the_replica_that_answers(replicas, tmp_path):
    """The admin CLI given both replicas, the first stopped: reads, a
    write that creates (certainly not sent to the stopped one: no
    connection) and an idempotent verb all go to the second; the list can
    come from the data dir's [cli] controllers too. Both stopped: exit 3
    naming both. A replica of another CA first in the list: exit 7, no
    failover."""
    first, second = replicas
    both = f"{first.address},{second.address}"
    spec = tmp_path / "c.toml"
    spec.write_text(CAMPAIGN)
    ask = first.admin("hosts", "list", "--controller", both)
    assert "warning" not in ask.stderr, "the first answers: no failover"
    first.stop()

    listed = first.admin("token", "list", "--controller", both, "--json")
    assert f"cannot reach the controller at {first.address}" in listed.stderr
    assert f"using {second.address}" in listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    made = first.admin("token", "create", "--region", "eu", "--ring", "0", "--controller", both)
    assert made.stdout.strip()
    campaign_id = first.admin("campaign", "create", spec, "--controller", both).stdout.split()[-1]
    first.admin("campaign", "approve", campaign_id, "--controller", both)
    tokens = first.admin_json("token", "list", "--controller", both)
    assert isinstance(tokens, list)
    token_id = tokens[0]["token_id"]
    first.admin("token", "revoke", token_id, "--controller", both)
    shown = second.admin_json("campaign", "show", campaign_id)
    assert isinstance(shown, dict)
    assert shown["state"] in ("running", "completed")
    with second.database() as conn:
        audited = conn.execute(
            "SELECT action, target FROM audit WHERE action IN ('campaign.approve', 'token.revoke')"
        ).fetchall()
    # Each asked once, done once: the stopped replica was never sent them.
    assert sorted(tuple(row) for row in audited) == [
        ("campaign.approve", campaign_id),
        ("token.revoke", token_id),
    ]

    # The list in the data dir's settings, as an admin's workstation keeps it.
    config = first.data_dir / "controller.toml"
    config.write_text(config.read_text() + f'\n[cli]\ncontrollers = ["{first.address}", '
                                           f'"{second.address}"]\n')  # fmt: skip
    assert first.admin("hosts", "list").returncode == 0

    # A controller our CA does not vouch for, first in the list: a
    # configuration error, not a reason to try the next.
    stranger = Controller(tmp_path / "stranger")
    stranger.init()
    stranger.start()
    try:
        trust = cli("fleetpatch", "hosts", "list", "--data-dir", first.data_dir,
                    "--controller", f"{stranger.address},{second.address}")  # fmt: skip
    finally:
        stranger.stop()
    assert trust.returncode == 7, trust.stderr
    assert "TLS trust fails" in trust.stderr
    assert "Traceback" not in trust.stderr

    second.stop()
    down = cli("fleetpatch", "hosts", "list", "--data-dir", first.data_dir, "--controller", both)
    assert down.returncode == 3, down.stderr
    assert first.address in down.stderr
    assert second.address in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


# One name with two address records, as a DNS name for the replicas would
# have: given to a host as its only controller address, through the host's
# own /etc/hosts (the sandbox's), which the resolver gRPC uses reads.
NAME = "ctl.fleet.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")  # loopback: all of 127/8 is
AGENT = str(BIN / "fleetpatch-agent")
STATE = "/var/lib/fleetpatch/agent"


def _free_on_all(addresses: tuple[str, ...]) -> int:
    """A port that, with the next (enrollment), nobody listens on at any of
    ``addresses``."""
    for _ in range(100):
        port = free_port()
        try:
            for address in addresses:
                for p in (port, port + 1):
                    with socket.socket() as probe:
                        probe.bind((address, p))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {addresses}")


def _connected_to(port: int) -> set[str]:
    """The addresses among ADDRESSES that a connection to ``port`` is
    established with (the agent's: the replicas dial only PostgreSQL)."""
    found = {
        c.raddr.ip.removeprefix("::ffff:")  # gRPC's sockets are IPv6, v4-mapped
        for c in psutil.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }
    return found & set(ADDRESSES)


def test_an_agent_given_one_name_of_two_replicas_moves_to_the_survivor(
    tmp_path, postgres_url, host_sandbox
):
    """The real agent in a host sandbox, its controller address a name
    with an address record for each replica: it checks in through one;
    that one SIGKILLed, its check-ins go on through the other, on the
    name alone (gRPC tries the name's next address), without a restart."""
    port = _free_on_all(ADDRESSES)
    first = Controller(tmp_path / "a", port=port, store_url=postgres_url, host=ADDRESSES[0])
    first.init(interval="2s", hostname=",".join((NAME, *ADDRESSES)))
    config = first.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    second = replica_of(first, tmp_path / "b", host=ADDRESSES[1], port=port)
    replicas = {ADDRESSES[0]: first, ADDRESSES[1]: second}
    first.start()
    second.start()
    log = (tmp_path / "agent.log").open("ab")
    try:
        sandbox = host_sandbox
        sandbox.path("/etc/hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in ADDRESSES)
        )
        sandbox.path("/root/ca.pem").write_bytes((first.data_dir / "ca.pem").read_bytes())
        sandbox.run([
            AGENT, "enroll", "--controller", f"{NAME}:{port}", "--token", first.token(),
            "--ca-cert", "/root/ca.pem", "--state-dir", STATE,
        ])  # fmt: skip
        agent_toml = sandbox.path(f"{STATE}/agent.toml")
        assert f'address = "{NAME}:{port}"' in agent_toml.read_text()
        agent_toml.write_text(
            agent_toml.read_text().replace('retry_interval = "5s"', 'retry_interval = "1s"')
        )
        status = sandbox.run([AGENT, "status", "--json", "--state-dir", STATE])
        host_id = json.loads(status.stdout)["host_id"]
        sandbox.spawn([AGENT, "run", "--state-dir", STATE], stdout=log, stderr=subprocess.STDOUT)

        (used,) = wait_for("the agent to connect through the name", lambda: _connected_to(port),
                           lambda found: len(found) == 1, timeout=60)  # fmt: skip
        victim = replicas[used]
        survivor = next(r for r in replicas.values() if r is not victim)

        def counted() -> int:
            store = survivor.open_store()
            try:
                return int(store.get_host(host_id).checkins)
            finally:
                store.close()

        before = wait_for("check-ins to be recorded", counted, lambda n: n >= 2, timeout=60)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        victim.proc = None

        wait_for("the agent to connect to the survivor", lambda: _connected_to(port),
                 lambda found: found == {survivor.listen_host}, timeout=60)  # fmt: skip
        wait_for("check-ins through the survivor", counted,
                 lambda n: n >= before + 3, timeout=60)  # fmt: skip
    finally:
        log.close()
        for replica in replicas.values():
            replica.stop()
    agent_log = (tmp_path / "agent.log").read_text(errors="replace")
    assert "Traceback" not in agent_log
    assert "Traceback" not in survivor.log.read_text()
