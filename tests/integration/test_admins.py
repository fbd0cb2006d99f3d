"""Admins are named people with roles, against a real controller over real
mutual TLS with a real SQLite file: `controller init` makes the first
owner; `admin add` issues a personal certificate for a key made where it
runs (or for a CSR made elsewhere); each role may do what it may and no
more; refusals are one line, exit 4, audited under the person's name; a
revoked admin is refused at their next call; admin certificates renew;
and the two-person rule refuses a creator's own approval."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller.cli.admin_client import AdminClient
from controller.cli.renewing import renew_if_due
from controller.datadir import DataDir
from tests.support.controller import Controller, Result, cli, ok

CAMPAIGN = """
[campaign]
name = "{name}"
emergency = {emergency}

[patch]
packages = [{{ name = "fp-demo", min_version = "1.1" }}]

[rollout]
rings = [{{ ring = 0, concurrency = 1 }}]
"""


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = Controller(tmp_path / "ctl")
    controller.init()
    config = controller.data_dir / "controller.toml"
    config.write_text(
        config.read_text().replace(
            "require_second_approver = false", "require_second_approver = true"
        )
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _as(creds: Path, *args: str | Path) -> Result:
    """`fleetpatch ARGS` with the credentials in ``creds``."""
    return cli("fleetpatch", *args, "--data-dir", creds)


def _add(ctl: Controller, tmp_path: Path, name: str, role: str) -> Path:
    out = tmp_path / f"creds-{name}"
    ctl.admin("admin", "add", name, "--role", role, "--out", out)
    return out


def _json(ctl: Controller, *args: str) -> Any:
    return ctl.admin_json(*args)


def _audit(ctl: Controller, action: str) -> list[dict[str, str]]:
    records = _json(ctl, "audit", "export")
    assert isinstance(records, list)
    return [r for r in records if r["action"] == action]


def _refused(result: Result, *words: str) -> None:
    assert result.returncode == 4, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _campaign(tmp_path: Path, name: str, emergency: bool = False) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(CAMPAIGN.format(name=name, emergency=str(emergency).lower()))
    return path


def test_init_makes_the_first_owner(ctl: Controller) -> None:
    admins = _json(ctl, "admin", "list")
    assert isinstance(admins, list)
    assert [(a["name"], a["role"], a["revoked"]) for a in admins] == [("admin", "owner", False)]
    assert admins[0]["created_by"] == "controller"
    assert admins[0]["certificate_expires_at"] is not None
    (added,) = _audit(ctl, "admin.add")
    assert (added["actor"], added["target"]) == ("controller", "admin:admin")


def test_a_personal_certificate_for_a_key_made_here(ctl: Controller, tmp_path: Path) -> None:
    creds = _add(ctl, tmp_path, "alice", "viewer")
    key = creds / "admin.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((creds / "admin.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://fleetpatch/admin/alice"
    ]
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert cert.public_key() == private.public_key()
    # The controller recorded the certificate, never the key.
    db = sqlite3.connect(ctl.data_dir / "controller.db")
    try:
        sql = "SELECT serial FROM admin_certificates WHERE name = 'alice'"
        (serial,) = db.execute(sql).fetchone()
    finally:
        db.close()
    assert serial == format(cert.serial_number, "x")
    assert key.read_bytes() not in (ctl.data_dir / "controller.db").read_bytes()
    # Alice reads with her own credentials.
    listed = _as(creds, "hosts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert ("alice", "viewer") in [(a["name"], a["role"]) for a in _json(ctl, "admin", "list")]


def test_a_certificate_for_a_request_made_elsewhere(ctl: Controller, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    request = tmp_path / "bob.csr"
    request.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "bob"
    result = ctl.admin("admin", "add", "bob", "--role", "operator", "--csr", request, "--out", out)
    assert "admin.key" in result.stdout
    assert not (out / "admin.key").exists()
    (out / "admin.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (out / "admin.key").chmod(0o600)
    made = _as(out, "token", "create", "--region", "eu", "--ring", "0")
    assert made.returncode == 0, made.stderr
    (created,) = _audit(ctl, "token.create")
    assert created["actor"] == "admin:bob"


def test_roles_allow_what_they_should_and_refusals_are_audited(
    ctl: Controller, tmp_path: Path
) -> None:
    viewer = _add(ctl, tmp_path, "vera", "viewer")
    operator = _add(ctl, tmp_path, "otto", "operator")
    approver = _add(ctl, tmp_path, "april", "approver")
    spec = _campaign(tmp_path, "roles")

    _refused(_as(viewer, "campaign", "create", spec), "vera", "viewer", "operator")
    _refused(_as(viewer, "token", "create", "--region", "eu", "--ring", "0"), "operator")
    created = _as(operator, "campaign", "create", spec)
    assert created.returncode == 0, created.stderr
    campaign_id = created.stdout.strip().splitlines()[-1]
    _refused(_as(operator, "campaign", "approve", campaign_id), "otto", "approver")
    _refused(_as(approver, "admin", "add", "eve", "--role", "owner", "--out", tmp_path / "eve"),
             "april", "owner")  # fmt: skip
    _refused(_as(operator, "admin", "revoke", "vera"), "owner")
    assert _as(viewer, "campaign", "show", campaign_id).returncode == 0
    approved = _as(approver, "campaign", "approve", campaign_id)
    assert approved.returncode == 0, approved.stderr

    (create,) = _audit(ctl, "campaign.create")
    assert create["actor"] == "admin:otto"
    (approve,) = [r for r in _audit(ctl, "campaign.approve") if r["outcome"] != "refused"]
    assert approve["actor"] == "admin:april"
    assert approve["detail"] == "approved by admin:april, created by admin:otto"
    refusals = _audit(ctl, "admin.refused")
    assert [(r["actor"], r["target"]) for r in refusals] == [
        ("admin:vera", "CreateCampaign"),
        ("admin:vera", "CreateToken"),
        ("admin:otto", "ApproveCampaign"),
        ("admin:april", "AddAdmin"),
        ("admin:otto", "RevokeAdmin"),
    ]
    assert all(r["outcome"] == "refused" for r in refusals)
    # Nobody is `admin:admin` but the first owner.
    actors = {r["actor"] for r in _json(ctl, "audit", "export")}
    assert actors <= {"controller", "admin:admin", "admin:vera", "admin:otto", "admin:april"}


def test_a_revoked_admin_is_refused_at_once(ctl: Controller, tmp_path: Path) -> None:
    creds = _add(ctl, tmp_path, "mallory", "operator")
    assert _as(creds, "hosts", "list").returncode == 0
    done = ctl.admin("admin", "revoke", "mallory")
    assert done.stdout.strip() == "revoked admin mallory"
    _refused(_as(creds, "hosts", "list"), "mallory", "revoked")
    # Revoking again succeeds (the state holds); an unknown admin is exit 5.
    ctl.admin("admin", "revoke", "mallory")
    nobody = cli("fleetpatch", "admin", "revoke", "nobody", "--data-dir", ctl.data_dir)
    assert nobody.returncode == 5
    # Added again, with a new certificate: the old one stays refused.
    again = _add(ctl, tmp_path / "again", "mallory", "viewer")
    assert _as(again, "hosts", "list").returncode == 0
    _refused(_as(creds, "hosts", "list"), "mallory")
    (row,) = [a for a in _json(ctl, "admin", "list") if a["name"] == "mallory"]
    assert (row["role"], row["revoked"]) == ("viewer", False)
    revokes = _audit(ctl, "admin.revoke")
    assert [(r["actor"], r["target"]) for r in revokes] == [("admin:admin", "admin:mallory")]


def test_bad_input_and_the_last_owner(ctl: Controller, tmp_path: Path) -> None:
    bad_role = cli("fleetpatch", "admin", "add", "zed", "--role", "god", "--out", tmp_path / "z",
                   "--data-dir", ctl.data_dir)  # fmt: skip
    assert bad_role.returncode == 2
    assert bad_role.stderr.strip().splitlines() == [
        "fleetpatch: error: role 'god' is not one of viewer, operator, approver, owner"
    ]
    bad_name = cli("fleetpatch", "admin", "add", "no/slash", "--role", "viewer",
                   "--data-dir", ctl.data_dir)  # fmt: skip
    assert bad_name.returncode == 2
    assert len(bad_name.stderr.strip().splitlines()) == 1
    _add(ctl, tmp_path, "dup", "viewer")
    twice = cli("fleetpatch", "admin", "add", "dup", "--role", "viewer", "--out",
                tmp_path / "dup2", "--data-dir", ctl.data_dir)  # fmt: skip
    assert twice.returncode == 6
    assert "exists" in twice.stderr
    last = cli("fleetpatch", "admin", "revoke", "admin", "--data-dir", ctl.data_dir)
    assert last.returncode == 6
    assert last.stderr.strip().splitlines() == [
        "fleetpatch: error: admin admin is the last owner; add another owner before revoking them"
    ]
    # With a second owner, the first may go.
    second = _add(ctl, tmp_path, "olga", "owner")
    assert _as(second, "admin", "revoke", "admin").returncode == 0
    _refused(cli("fleetpatch", "hosts", "list", "--data-dir", ctl.data_dir), "revoked")


def test_admin_certificates_renew(ctl: Controller, tmp_path: Path) -> None:
    creds = _add(ctl, tmp_path, "rene", "viewer")
    data_dir = DataDir(creds)
    before = x509.load_pem_x509_certificate((creds / "admin.pem").read_bytes())
    # Not yet due: nothing happens.
    with AdminClient(data_dir) as admin:
        assert not renew_if_due(admin, data_dir, before.not_valid_before_utc + timedelta(days=1))
    assert (creds / "admin.pem").read_bytes() == before.public_bytes(serialization.Encoding.PEM)
    # Past two thirds of its life (365 days by default): renewed.
    later = before.not_valid_before_utc + timedelta(days=250)
    with AdminClient(data_dir) as admin:
        assert renew_if_due(admin, data_dir, later)
    after = x509.load_pem_x509_certificate((creds / "admin.pem").read_bytes())
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc >= before.not_valid_after_utc
    assert _as(creds, "hosts", "list").returncode == 0
    (renewed,) = _audit(ctl, "admin.renew")
    assert renewed["actor"] == "admin:rene"
    assert format(before.serial_number, "x") in renewed["detail"]
    # The explicit verb, too.
    out = ok("fleetpatch", "admin", "renew", "--data-dir", creds)
    assert "valid until" in out.stdout
    assert len(_audit(ctl, "admin.renew")) == 2


def test_two_person_rule(ctl: Controller, tmp_path: Path) -> None:
    amy = _add(ctl, tmp_path, "amy", "approver")
    ben = _add(ctl, tmp_path, "ben", "approver")
    created = _as(amy, "campaign", "create", _campaign(tmp_path, "urgent", emergency=True))
    assert created.returncode == 0, created.stderr
    campaign_id = created.stdout.strip().splitlines()[-1]

    own = _as(amy, "campaign", "approve", campaign_id)
    _refused(own, f"campaign {campaign_id} was created by admin:amy",
             "another approver must approve it")  # fmt: skip
    assert _json(ctl, "campaign", "show", campaign_id)["state"] == "draft"

    approved = _as(ben, "campaign", "approve", campaign_id)
    assert approved.returncode == 0, approved.stderr
    records = _audit(ctl, "campaign.approve")
    assert [(r["actor"], r["outcome"]) for r in records] == [
        ("admin:amy", "refused"),
        ("admin:ben", "running"),
    ]
    assert records[1]["detail"] == "emergency campaign approved by admin:ben, created by admin:amy"


def test_a_data_dir_from_before_roles_keeps_its_admin(tmp_path: Path) -> None:
    ctl = Controller(tmp_path / "old")
    ctl.init()
    # As the migration leaves a data dir made before admins were recorded.
    db = sqlite3.connect(ctl.data_dir / "controller.db")
    try:
        db.execute("DELETE FROM admin_certificates")
        db.execute("DELETE FROM admins")
        db.commit()
    finally:
        db.close()
    ctl.start()
    try:
        admins = _json(ctl, "admin", "list")
    finally:
        ctl.stop()
    assert [(a["name"], a["role"]) for a in admins] == [("admin", "owner")]
