"""Enrollment as the controller sees it, over real TLS: a host is pending
until its first mutual-TLS call, one that never makes it expires and gives
its token use back, and refused enrollments are audited and rate-limited."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.overload import RETRY_AFTER_KEY
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from controller.api import limits
from tests.conftest import STORES
from tests.support.controller import Controller
from tests.support.waiting import scaled, wait_for

pytestmark = pytest.mark.parametrize("store_url", STORES, indirect=True)


@dataclass(frozen=True)
class Raw:
    """What an agent holds after enrolling, kept in memory only."""

    host_id: str
    key_pem: bytes
    cert_pem: bytes


def _enroll(ctl: Controller, token: str) -> Raw:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw")]))
        .sign(key, hashes.SHA256())
    )
    creds = grpc.ssl_channel_credentials(root_certificates=(ctl.data_dir / "ca.pem").read_bytes())
    with grpc.secure_channel(ctl.enroll_address, creds) as channel:
        response = agent_pb2_grpc.AgentServiceStub(channel).Enroll(
            agent_pb2.EnrollRequest(
                token=token, csr_pem=csr.public_bytes(serialization.Encoding.PEM)
            ),
            timeout=10,
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Raw(response.host_id, key_pem, bytes(response.certificate_pem))


def _check_in(ctl: Controller, host: Raw) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ctl.data_dir / "ca.pem").read_bytes(),
        private_key=host.key_pem,
        certificate_chain=host.cert_pem,
    )
    with grpc.secure_channel(ctl.address, creds) as channel:
        agent_pb2_grpc.AgentServiceStub(channel).CheckIn(
            agent_pb2.CheckInRequest(facts=types_pb2.HostFacts(hostname="raw")), timeout=10
        )


def _status(ctl: Controller, host_id: str) -> str:
    return str(ctl.host(host_id)["status"])


def _uses(ctl: Controller, token: str) -> int:
    token_id = token[4:16]  # fpt_<id>_<secret>
    tokens = ctl.admin_json("token", "list")
    assert isinstance(tokens, list)
    [found] = [t for t in tokens if t["token_id"] == token_id]
    return int(found.get("uses", 0))


def test_a_host_is_pending_until_its_first_mutual_tls_call(controller):
    host = _enroll(controller, controller.token())
    assert _status(controller, host.host_id) == "pending"
    _check_in(controller, host)
    assert _status(controller, host.host_id) == "active"


def test_a_host_that_never_arrives_expires_and_gives_its_token_use_back(tmp_path, store_url):
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(
        config.read_text().replace('pending_timeout = "1h"', 'pending_timeout = "10s"')
    )
    ctl.start()
    try:
        token = ctl.token(uses=2)
        lost, kept = _enroll(ctl, token), _enroll(ctl, token)
        _check_in(ctl, kept)
        assert _uses(ctl, token) == 2
        wait_for(
            "the host that never checked in to be forgotten",
            lambda: ctl.admin_json("hosts", "list"),
            lambda hosts: [h["host_id"] for h in hosts] == [kept.host_id],  # type: ignore[attr-defined]
            timeout=scaled(60),
            interval=1,
        )
        assert _uses(ctl, token) == 1
        records = ctl.admin_json("audit", "export")
        assert isinstance(records, list)
        expired = [r for r in records if r["action"] == "host.expire"]
        assert [r["target"] for r in expired] == [lost.host_id]
        with pytest.raises(grpc.RpcError) as caught:
            _check_in(ctl, lost)  # its certificate no longer gets it in
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        ctl.stop()


def _codes(calls: Sequence[object]) -> list[grpc.StatusCode]:
    return [c.code() for c in calls]  # type: ignore[attr-defined]


def test_refused_enrollments_are_audited_and_rate_limited_per_peer(controller):
    good = controller.token()
    token_id, secret = good[4:16], good[17:]  # fpt_<id>_<secret>
    wrong = f"fpt_{token_id}_{'x' * 32}"  # the right id, a wrong secret
    errors = []
    for _ in range(limits.RefusalLimit.limit + 3):
        with pytest.raises(grpc.RpcError) as caught:
            _enroll(controller, wrong)
        errors.append(caught.value)
    codes = _codes(errors)
    assert codes[: limits.RefusalLimit.limit] == [grpc.StatusCode.UNAUTHENTICATED] * 10
    assert codes[limits.RefusalLimit.limit :] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    trailers: Sequence[tuple[str, object]] = errors[-1].trailing_metadata()  # type: ignore[assignment]
    assert int(str(dict(trailers)[RETRY_AFTER_KEY])) > 1000
    records = controller.admin_json("audit", "export")
    assert isinstance(records, list)
    refused = [r for r in records if r["action"] == "host.enroll" and r["outcome"] == "refused"]
    assert len(refused) == limits.RefusalLimit.limit  # the turned-away ones are not each a record
    assert {r["actor"] for r in refused} == {"peer:127.0.0.1"}
    assert {r["target"] for r in refused} == {token_id}
    assert secret not in json.dumps(records)  # the secret is never recorded
    assert "Traceback" not in Path(controller.log).read_text()
