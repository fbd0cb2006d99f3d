"""Agent releases against a real controller: `fleetpatch release publish`
and `list`, every refusal as one line and an exit code, FetchArtifact over
real mutual TLS, and agent-update campaigns handing out orders that carry
the release. The .deb is any bytes with the right name, signed with
controller.releases.signed's own code: the controller never opens a package."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetpatch.envelope import WORK_ORDER_TYPE, open_envelope
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2

from agent.link.enrollment import enroll
from agent.statedir import StateDir
from controller.cli import schemas
from controller.releases.signed import keygen, sign_artifacts
from tests.support.controller import Controller, Result, cli

MiB = 1024 * 1024
VERSION = "0.2.0"
DEB = "fleetpatch-agent_0.2.0_all.deb"
RPM = "fleetpatch-agent-0.2.0-1.x86_64.rpm"

CAMPAIGN = """
[campaign]
name = "agent-0-2-0"

[agent_update]
version = "{version}"
rollback_after = "3m"

[verify]
timeout = "1m"

[[verify.checks]]
name = "sshd"
kind = "process"
process = "sshd"

[rollout]
rings = [{{ ring = 1, concurrency = "100%" }}]
"""


def _one_line(result: Result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _key(directory: Path, name: str = "release") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    keygen(directory / f"{name}.key")
    return directory / f"{name}.key"


def _release(directory: Path, key: Path, data: bytes, name: str = DEB) -> Path:
    """``data`` as a package named ``name``, with SHA256SUMS(.sig) beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    deb = directory / name
    deb.write_bytes(data)
    sign_artifacts([deb], key)
    return deb


def _publish(ctl: Controller, deb: Path, *options: str | Path) -> Result:
    return cli("fleetpatch", "release", "publish", deb, *options, "--data-dir", ctl.data_dir)


def _releases(ctl: Controller) -> list[dict[str, object]]:
    doc = ctl.admin_json("release", "list")
    assert isinstance(doc, list)
    return doc


def _admin_stub(ctl: Controller) -> Iterator[admin_pb2_grpc.AdminServiceStub]:
    d = ctl.data_dir
    creds = grpc.ssl_channel_credentials(
        (d / "ca.pem").read_bytes(), (d / "admin.key").read_bytes(), (d / "admin.pem").read_bytes()
    )
    with grpc.secure_channel(ctl.address, creds) as channel:
        yield admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
def admin(controller: Controller) -> Iterator[admin_pb2_grpc.AdminServiceStub]:
    yield from _admin_stub(controller)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return _key(tmp_path / "keys")


class Host:
    """An enrolled host speaking raw gRPC with its own certificate."""

    def __init__(self, ctl: Controller, state_dir: Path) -> None:
        self.state = StateDir(state_dir)
        done = enroll(self.state, ctl.address, ctl.token(), ctl.data_dir / "ca.pem", {})
        self.host_id = done.host_id
        s = self.state
        creds = grpc.ssl_channel_credentials(s.read(s.ca), s.read(s.key), s.read(s.cert))
        self.channel = grpc.secure_channel(ctl.address, creds)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)

    def fetch(self, sha256: bytes) -> list[agent_pb2.ArtifactChunk]:
        request = agent_pb2.FetchArtifactRequest(sha256=sha256)
        return list(self.stub.FetchArtifact(request, timeout=30))

    def check_in(self, package_manager: str = "apt") -> agent_pb2.CheckInResponse:
        facts = types_pb2.HostFacts(
            hostname="h1", os_id="debian", timezone="UTC", package_manager=package_manager
        )
        response: agent_pb2.CheckInResponse = self.stub.CheckIn(
            agent_pb2.CheckInRequest(facts=facts), timeout=30
        )
        return response


@pytest.fixture
def host(controller: Controller, tmp_path: Path) -> Iterator[Host]:
    h = Host(controller, tmp_path / "host")
    yield h
    h.channel.close()


# -- publish and list ----------------------------------------------------------------


def test_publish_list_republish_and_a_conflicting_package(controller, keys, tmp_path):
    data = os.urandom(200_000)
    deb = _release(tmp_path / "dist", keys, data)
    published = _publish(controller, deb, "--public-key", keys.with_suffix(".pub"))
    assert published.returncode == 0, published.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert f"published agent release {VERSION}: {DEB}" in published.stdout
    assert digest in published.stdout

    (listed,) = _releases(controller)
    assert listed["version"] == VERSION
    assert listed["artifact"] == DEB
    assert listed["sha256"] == digest
    assert listed["size"] == len(data)
    assert listed["key_fingerprint"] is None  # no [releases] public_key on this controller
    assert listed["published_by"] == "admin:admin"
    assert (controller.data_dir / "artifacts" / digest).read_bytes() == data
    assert VERSION in controller.admin("release", "list").stdout

    # Again, the same package: nothing changes.
    assert _publish(controller, deb).returncode == 0
    assert _releases(controller) == [listed]

    # The same version with other bytes, properly signed: a conflict.
    other = _release(tmp_path / "other", keys, os.urandom(1000))
    _one_line(_publish(controller, other), 6, f"agent release {VERSION} is already published")
    assert _releases(controller) == [listed]
    assert sorted(p.name for p in (controller.data_dir / "artifacts").iterdir()) == [digest]

    audit = controller.admin_json("audit", "export")
    assert isinstance(audit, list)
    publishes = [(r["action"], r["outcome"]) for r in audit if r["action"] == "release.publish"]
    assert publishes == [("release.publish", "ok"), ("release.publish", "unchanged")]
    assert "intact" in controller.admin("audit", "verify").stdout


def test_refusals_before_anything_is_sent_are_one_line(controller, keys, tmp_path):
    deb = _release(tmp_path / "dist", keys, b"package")
    pub = keys.with_suffix(".pub")

    deb.write_bytes(b"tampered")
    _one_line(_publish(controller, deb), 4, "does not match the signed manifest")

    wrong = _key(tmp_path / "wrong")
    deb = _release(tmp_path / "signed-by-another", wrong, b"package")
    _one_line(_publish(controller, deb, "--public-key", pub), 4, "is not signed by release key")

    unsigned = _release(tmp_path / "unsigned", keys, b"package")
    (unsigned.parent / "SHA256SUMS.sig").unlink()
    _one_line(_publish(controller, unsigned), 4, "no signature")

    misnamed = _release(tmp_path / "misnamed", keys, b"package", "agent.deb")
    _one_line(_publish(controller, misnamed), 2, "is not an agent package name")

    _one_line(_publish(controller, tmp_path / "nope" / DEB), 2, "does not exist")
    assert _releases(controller) == []


def test_the_controller_checks_what_the_cli_cannot_be_trusted_to(controller, keys, admin, tmp_path):
    deb = _release(tmp_path / "dist", keys, b"package")
    manifest = (deb.parent / "SHA256SUMS").read_bytes()
    signature = (deb.parent / "SHA256SUMS.sig").read_bytes()

    def send(*messages: admin_pb2.PublishAgentReleaseRequest) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            admin.PublishAgentRelease(iter(messages), timeout=30)
        return caught.value

    def header(size: int = 7, artifact: str = DEB) -> admin_pb2.PublishAgentReleaseRequest:
        return admin_pb2.PublishAgentReleaseRequest(
            header=admin_pb2.PublishAgentReleaseHeader(
                artifact=artifact, manifest=manifest, signature=signature, size=size
            )
        )

    def data(payload: bytes) -> admin_pb2.PublishAgentReleaseRequest:
        return admin_pb2.PublishAgentReleaseRequest(data=payload)

    cases = [
        ((data(b"package"),), "the first message must be the release header"),
        ((header(), data(b"PACKAGE")), "do not match the release's SHA256SUMS"),
        ((header(), data(b"pack")), "4 bytes received, 7 announced"),
        ((header(), data(b"package"), header()), "only the first message may be a header"),
        ((header(size=2**28 + 1),), "more than the 256 MiB"),
        ((header(artifact="fleetpatch-agent_0.3.0_all.deb"),), "has no line for"),
    ]
    for messages, words in cases:
        error = send(*messages)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (words, error)
        assert words in (error.details() or ""), (words, error.details())
    assert _releases(controller) == []
    assert list((controller.data_dir / "artifacts").iterdir()) == []  # no upload left behind


def test_a_configured_release_key_refuses_other_signers(controller, keys, tmp_path):
    controller.stop()
    config = controller.data_dir / "controller.toml"
    text = config.read_text()
    commented = '# public_key = "/etc/fleetpatch/release.pub"'
    assert commented in text
    config.write_text(text.replace(commented, f'public_key = "{keys.with_suffix(".pub")}"'))
    controller.start()

    wrong = _key(tmp_path / "wrong")
    other = _release(tmp_path / "other", wrong, b"package")
    _one_line(_publish(controller, other), 4, "is not signed by release key")

    deb = _release(tmp_path / "dist", keys, b"package")
    assert _publish(controller, deb).returncode == 0
    (listed,) = _releases(controller)
    assert str(listed["key_fingerprint"]).startswith("SHA256:")

    controller.stop()
    config.write_text(config.read_text().replace(".pub", ".missing"))
    serve = cli("fleetpatch", "controller", "serve", "--data-dir", controller.data_dir)
    _one_line(serve, 2, "releases.public_key", "does not exist")


# -- FetchArtifact ------------------------------------------------------------------


def test_fetch_artifact_streams_the_exact_bytes_in_chunks(controller, keys, host, tmp_path):
    data = os.urandom(2 * MiB + 12345)
    deb = _release(tmp_path / "dist", keys, data)
    assert _publish(controller, deb).returncode == 0

    chunks = host.fetch(hashlib.sha256(data).digest())
    assert b"".join(c.data for c in chunks) == data
    assert all(len(c.data) <= MiB for c in chunks)
    assert len(chunks) == 3
    assert chunks[0].size == len(data)

    with pytest.raises(grpc.RpcError) as caught:
        host.fetch(hashlib.sha256(b"never published").digest())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    controller.admin("hosts", "revoke", host.host_id)
    with pytest.raises(grpc.RpcError) as caught:
        host.fetch(hashlib.sha256(data).digest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (caught.value.details() or "")


def test_fetch_artifact_needs_a_host_certificate(controller, keys, tmp_path):
    data = b"package"
    assert _publish(controller, _release(tmp_path / "dist", keys, data)).returncode == 0
    d = controller.data_dir
    creds = grpc.ssl_channel_credentials(
        (d / "ca.pem").read_bytes(), (d / "admin.key").read_bytes(), (d / "admin.pem").read_bytes()
    )
    with grpc.secure_channel(controller.address, creds) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        request = agent_pb2.FetchArtifactRequest(sha256=hashlib.sha256(data).digest())
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.FetchArtifact(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- agent-update campaigns -------------------------------------------------------------


def test_an_agent_update_campaign_hands_out_the_published_release(controller, keys, host, tmp_path):
    spec = tmp_path / "agent-update.toml"
    spec.write_text(CAMPAIGN.format(version=VERSION))
    _one_line(
        cli("fleetpatch", "campaign", "create", spec, "--data-dir", controller.data_dir),
        5, f"agent release {VERSION} is not published", "fleetpatch release publish",
    )  # fmt: skip

    data = os.urandom(50_000)
    deb = _release(tmp_path / "dist", keys, data)
    assert _publish(controller, deb).returncode == 0
    campaign_id = controller.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
    assert f"agent-update {VERSION}" in controller.admin("campaign", "list").stdout
    shown = controller.admin_json("campaign", "show", campaign_id)
    assert isinstance(shown, dict)
    assert shown["kind"] == f"agent-update {VERSION}"
    assert shown["agent_update"] == {"version": VERSION, "rollback_after": "3m", "no_release": {}}
    # The list says the same without carrying the file (a list of megabyte
    # plans passed any answer limit).
    (listed,) = controller.admin_json("campaign", "list")
    assert (listed["kind"], listed["agent_update"]) == (shown["kind"], shown["agent_update"])
    controller.admin("campaign", "approve", campaign_id)

    envelope = host.check_in().work_order
    order = types_pb2.WorkOrder.FromString(
        open_envelope(envelope, WORK_ORDER_TYPE, host.state.trusted_signing_keys())
    )
    assert order.action == types_pb2.WORK_ORDER_ACTION_AGENT_UPDATE
    assert (order.host_id, order.campaign_id, order.sequence) == (host.host_id, campaign_id, 1)
    assert order.reboot == types_pb2.REBOOT_POLICY_NEVER
    assert not order.HasField("patch")
    assert [c.name for c in order.checks] == ["sshd"]
    assert order.verify_timeout.ToSeconds() == 60
    assert order.expires_at.ToSeconds() > order.issued_at.ToSeconds()
    update = order.agent_update
    assert update.version == VERSION
    assert update.artifact == DEB
    assert update.sha256 == hashlib.sha256(data).digest()
    assert update.size == len(data)
    assert update.release_manifest == (deb.parent / "SHA256SUMS").read_bytes()
    assert update.release_signature == (deb.parent / "SHA256SUMS.sig").read_bytes()
    assert update.rollback_after.ToSeconds() == 180
    # What the order names is what FetchArtifact serves.
    assert b"".join(c.data for c in host.fetch(update.sha256)) == data

    # The result is counted as a patch order's would be.
    report = types_pb2.ProgressReport(
        idempotency_key="k1", order_id=order.order_id, step="SUCCEEDED", final=True,
        outcome="SUCCEEDED", detail="now 0.2.0", sequence=1, campaign_id=campaign_id,
    )  # fmt: skip
    host.stub.ReportProgress(agent_pb2.ReportProgressRequest(reports=[report]), timeout=30)
    shown = controller.admin_json("campaign", "show", campaign_id)
    assert isinstance(shown, dict)
    assert shown["totals"]["succeeded"] == 1
    assert shown["state"] == "completed"

    audit = controller.admin_json("audit", "export")
    assert isinstance(audit, list)
    assert [r["action"] for r in audit].count("order.assign.agent-update") == 1
    assert (
        "kind: agent-update 0.2.0 (rollback after 3m)"
        in controller.admin("campaign", "show", campaign_id).stdout
    )
    _one_line(
        cli("fleetpatch", "campaign", "abort", campaign_id, "--revert",
            "--data-dir", controller.data_dir),
        2, "--revert cannot undo",
    )  # fmt: skip


def _order(host: Host, package_manager: str) -> types_pb2.WorkOrder | None:
    response = host.check_in(package_manager)
    if not response.HasField("work_order"):
        return None
    return types_pb2.WorkOrder.FromString(
        open_envelope(response.work_order, WORK_ORDER_TYPE, host.state.trusted_signing_keys())
    )


def _shows_hosts_waiting_for_an_rpm(controller: Controller, campaign_id: str) -> None:
    """`campaign show` names the dnf host waiting for an .rpm, and the host
    of no family, rather than count them ready."""
    shown = controller.admin("campaign", "show", campaign_id).stdout
    assert (
        f"waiting: 1 dnf host(s): no rpm release of {VERSION} published "
        f"(fleetpatch release publish fleetpatch-agent-{VERSION}-1.<arch>.rpm)"
    ) in shown
    assert "waiting: 1 host(s) of no package family the agent is packaged for" in shown
    assert "1 no_rpm_release" in shown
    doc: Any = controller.admin_json("campaign", "show", campaign_id)
    assert not schemas.check(doc, schemas.CAMPAIGN)
    assert doc["agent_update"]["no_release"] == {"none": 1, "rpm": 1}
    assert sum(c["waiting_reasons"].get("no_rpm_release", 0) for c in doc["cells"]) == 1


def _lists_both_families(controller: Controller) -> None:
    releases = _releases(controller)
    assert not schemas.check(releases, schemas.array(schemas.RELEASE))
    listed = {(r["version"], r["family"], r["artifact"]) for r in releases}
    assert listed == {(VERSION, "deb", DEB), (VERSION, "rpm", RPM)}
    table = controller.admin("release", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["VERSION", "FAMILY", "ARTIFACT"]
    assert sorted(line.split()[1] for line in table[1:]) == ["deb", "rpm"]


def test_each_host_is_handed_the_package_of_its_own_family(controller, keys, tmp_path):
    """One signed release lists a .deb and an .rpm; each is published. An
    apt host is handed the .deb, a dnf host the .rpm, a host of neither
    family nothing; a family published later reaches its hosts then."""
    dist = tmp_path / "dist"
    dist.mkdir()
    deb_data, rpm_data = os.urandom(40_000), os.urandom(30_000)
    (dist / DEB).write_bytes(deb_data)
    (dist / RPM).write_bytes(rpm_data)
    sign_artifacts([dist / DEB, dist / RPM], keys)
    assert _publish(controller, dist / DEB).returncode == 0

    hosts = {name: Host(controller, tmp_path / name) for name in ("apt", "dnf", "zypper")}
    try:
        spec = tmp_path / "agent-update.toml"
        spec.write_text(CAMPAIGN.format(version=VERSION))
        created = controller.admin("campaign", "create", spec)
        assert "no .rpm package published: dnf hosts wait until it is" in created.stderr
        campaign_id = created.stdout.strip().splitlines()[-1]
        controller.admin("campaign", "approve", campaign_id)

        apt = _order(hosts["apt"], "apt")
        assert apt is not None
        assert apt.agent_update.artifact == DEB
        assert apt.agent_update.sha256 == hashlib.sha256(deb_data).digest()
        assert _order(hosts["dnf"], "dnf") is None, "no .rpm published yet: it waits"
        assert _order(hosts["zypper"], "zypper") is None
        _shows_hosts_waiting_for_an_rpm(controller, campaign_id)

        published = _publish(controller, dist / RPM)
        assert published.returncode == 0, published.stderr
        assert f"published agent release {VERSION}: {RPM}" in published.stdout
        dnf = _order(hosts["dnf"], "dnf")
        assert dnf is not None
        update = dnf.agent_update
        assert (update.version, update.artifact, update.size) == (VERSION, RPM, len(rpm_data))
        assert update.sha256 == hashlib.sha256(rpm_data).digest()
        assert update.release_manifest == (dist / "SHA256SUMS").read_bytes()
        assert b"".join(c.data for c in hosts["dnf"].fetch(update.sha256)) == rpm_data
        assert _order(hosts["zypper"], "zypper") is None
        doc = controller.admin_json("campaign", "show", campaign_id)
        assert doc["agent_update"]["no_release"] == {"none": 1}
        assert "no rpm release" not in controller.admin("campaign", "show", campaign_id).stdout

        _lists_both_families(controller)
        # Each family's package is published once.
        other = _release(tmp_path / "other", keys, b"another rpm", RPM)
        _one_line(_publish(controller, other), 6, "the .rpm package of agent release 0.2.0")
    finally:
        for h in hosts.values():
            h.channel.close()
