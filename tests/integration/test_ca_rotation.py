"""CA rotation without a flag day, end to end: a real controller over real
mutual TLS, real agents (`fleetpatch-agent` processes). After `controller
rotate-ca`, the agent that checks in learns the new CA (endorsed by the
old one), trusts both and renews onto the new CA at once; one that enrolls
meanwhile starts on the new CA; an admin renews. `rotate-ca --retire-old`
refuses while a host is still on the old CA, then with --force the new CA
is the only one: the agents on it go on (and drop the old CA); the one
that was offline throughout cannot reach the controller, and enrolls again
with a token and the new ca.pem into the same state dir (the documented
path). On SQLite and on PostgreSQL: the rotation's commands work on the
store `[store] url` names, as serve does."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from fleetpatch import catrust

from agent.statedir import StateDir
from tests.conftest import STORES
from tests.support.controller import Controller, cli, ok

pytestmark = pytest.mark.parametrize("store_url", STORES, indirect=True)


def _cas(path: Path) -> list[x509.Certificate]:
    return catrust.load_bundle(path.read_bytes())


def _run_once(state: StateDir) -> None:
    ok("fleetpatch-agent", "run", "--once", "--state-dir", state.path)


def test_ca_rotation_two_agents_one_offline(tmp_path: Path, store_url: str) -> None:  # noqa: PLR0915
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    ctl.start()
    try:
        online, offline = StateDir(tmp_path / "online"), StateDir(tmp_path / "offline")
        for state in (online, offline):
            assert ctl.enroll(state.path, ctl.token()).returncode == 0
            _run_once(state)
        alice = tmp_path / "alice"
        ctl.admin("admin", "add", "alice", "--role", "viewer", "--out", alice)
        old_ca = _cas(ctl.data_dir / "ca.pem")[0]
    finally:
        ctl.stop()

    rotated = ok("fleetpatch", "controller", "rotate-ca", "--data-dir", ctl.data_dir)
    assert "endorsed by the current one" in rotated.stdout
    again = cli("fleetpatch", "controller", "rotate-ca", "--data-dir", ctl.data_dir)
    assert again.returncode == 6
    assert "in progress already" in again.stderr
    new_ca = _cas(ctl.data_dir / "ca-next.pem")[0]
    assert new_ca.subject != old_ca.subject

    ctl.start()
    try:
        # The transition: the agent that checks in trusts both CAs (the new
        # one endorsed by the old) and renews onto the new one at once.
        _run_once(online)
        assert [c.subject for c in _cas(online.ca)] == [old_ca.subject, new_ca.subject]
        assert online.certificate().issuer == new_ca.subject
        _run_once(online)  # and goes on with it
        # A host enrolled meanwhile, with the old ca.pem operators hand out,
        # gets a certificate from the new CA and pins both (the new one
        # endorsed by the one it was given).
        late = StateDir(tmp_path / "late")
        assert ctl.enroll(late.path, ctl.token()).returncode == 0
        assert late.certificate().issuer == new_ca.subject
        assert [c.subject for c in _cas(late.ca)] == [old_ca.subject, new_ca.subject]
        _run_once(late)
        assert offline.certificate().issuer == old_ca.subject  # offline throughout
        # An admin renews: a certificate from the new CA, and both CAs trusted.
        ok("fleetpatch", "admin", "renew", "--data-dir", alice)
        assert x509.load_pem_x509_certificate((alice / "admin.pem").read_bytes()).issuer == (
            new_ca.subject
        )
        assert len(_cas(alice / "ca.pem")) == 2
        # The owner's data dir still works, on the old CA's server certificate.
        ctl.admin("hosts", "list")
    finally:
        ctl.stop()

    # Retiring refuses while a host still holds a certificate from the old CA.
    refused = cli("fleetpatch", "controller", "rotate-ca", "--retire-old",
                  "--data-dir", ctl.data_dir)  # fmt: skip
    assert refused.returncode == 6
    assert refused.stderr.strip().splitlines() == [
        f"fleetpatch: error: 1 host(s) still hold a certificate from the old CA (e.g. "
        f"{offline.host_id()}); they have not checked in since the rotation. Wait, or pass "
        "--force: they will have to enroll again with the new ca.pem"
    ]
    assert (ctl.data_dir / "ca-next.pem").exists()
    retired = ok("fleetpatch", "controller", "rotate-ca", "--retire-old", "--force",
                 "--data-dir", ctl.data_dir)  # fmt: skip
    assert offline.host_id() in retired.stdout
    assert [c.subject for c in _cas(ctl.data_dir / "ca.pem")] == [new_ca.subject]
    assert not (ctl.data_dir / "ca-next.pem").exists()
    server = x509.load_pem_x509_certificate((ctl.data_dir / "server.pem").read_bytes())
    assert server.issuer == new_ca.subject

    ctl.start()
    try:
        # The agent that renewed goes on, and drops the retired CA.
        _run_once(online)
        assert [c.subject for c in _cas(online.ca)] == [new_ca.subject]
        _run_once(online)
        _run_once(late)
        assert [c.subject for c in _cas(late.ca)] == [new_ca.subject]
        # The admins too: the owner's certificate was issued again, alice's renewed.
        ctl.admin("hosts", "list")
        assert cli("fleetpatch", "hosts", "list", "--data-dir", alice).returncode == 0

        # The offline host cannot reach the controller any more: one line, no traceback.
        stranded = cli("fleetpatch-agent", "run", "--once", "--state-dir", offline.path)
        assert stranded.returncode == 3  # retried by the service, but saying why
        assert "Traceback" not in stranded.stderr
        assert "enroll it again with a token and the new ca.pem" in stranded.stderr
        # The documented path: enroll again, with a token and the new ca.pem,
        # into the same state dir; then revoke the old host id.
        old_id = offline.host_id()
        enrolled = ctl.enroll(offline.path, ctl.token())
        assert enrolled.returncode == 0, enrolled.stderr
        assert offline.host_id() != old_id
        assert offline.certificate().issuer == new_ca.subject
        _run_once(offline)
        ctl.admin("hosts", "revoke", old_id)

        records = ctl.admin_json("audit", "export")
        assert isinstance(records, list)
        actions = [(r["action"], r["target"]) for r in records]
        assert ("ca.rotate", format(new_ca.serial_number, "x")) in actions
        assert ("ca.retire", format(old_ca.serial_number, "x")) in actions
        renewals = [r for r in records if r["action"] == "host.renew" and r["outcome"] == "ok"]
        assert [r["actor"] for r in renewals] == [f"host:{online.host_id()}"]
        assert ctl.admin("audit", "verify").stdout.startswith("audit trail intact")
    finally:
        ctl.stop()
