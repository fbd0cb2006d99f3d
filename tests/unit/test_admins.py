"""Admins and roles: the permission table, and the store's record of admins
and their certificates (revocation, re-adding, the last owner)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fleetpatch.v1 import admin_pb2, vulns_pb2

from controller.audit import AuditEntry
from controller.errors import AlreadyExists, Conflict, NotFound, Refused, UsageError
from controller.fleet.admins import (
    NEEDS,
    AdminRecord,
    AdminRole,
    AdminStatus,
    authorize,
    check_name,
    parse_role,
)
from controller.store import Store
from controller.store.admins import IssuedCertificate

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _record(name: str, role: AdminRole, status: AdminStatus = AdminStatus.ACTIVE) -> AdminRecord:
    return AdminRecord(name, role, status, NOW, "admin:root")


def _cert(serial: str, days: int = 365) -> IssuedCertificate:
    return IssuedCertificate(serial, NOW, NOW + timedelta(days=days))


def _entry(action: str = "admin.add") -> AuditEntry:
    return AuditEntry(NOW, "admin:root", action, "x", "ok")


def test_every_admin_rpc_has_a_role() -> None:
    methods = set(admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)
    methods |= set(vulns_pb2.DESCRIPTOR.services_by_name["VulnService"].methods_by_name)
    assert methods == set(NEEDS)


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (AdminRole.VIEWER, ["ListHosts", "ExportAudit", "ListAdmins", "RenewAdmin"],
         ["CreateToken", "CreateCampaign", "ApproveCampaign", "AddAdmin"]),
        (AdminRole.OPERATOR, ["CreateCampaign", "AbortCampaign", "RevokeHost", "CreateToken"],
         ["ApproveCampaign", "AddAdmin", "RevokeAdmin"]),
        (AdminRole.APPROVER, ["ApproveCampaign", "CreateCampaign"], ["AddAdmin", "RevokeAdmin"]),
        (AdminRole.OWNER, list(NEEDS), []),
    ],
)  # fmt: skip
def test_roles(role: AdminRole, allowed: list[str], refused: list[str]) -> None:
    admin = _record("pat", role)
    for method in allowed:
        assert authorize(admin, "pat", method) is admin
    for method in refused:
        with pytest.raises(Refused, match=f"admin pat is a {role}; {method} needs the"):
            authorize(admin, "pat", method)


def test_unknown_revoked_and_unlisted_callers_are_refused() -> None:
    with pytest.raises(Refused, match="not current"):
        authorize(None, "pat", "ListHosts")
    with pytest.raises(Refused, match="admin pat has been revoked"):
        authorize(_record("pat", AdminRole.OWNER, AdminStatus.REVOKED), "pat", "ListHosts")
    with pytest.raises(Refused, match="no role may call"):
        authorize(_record("pat", AdminRole.OWNER), "pat", "DropDatabase")


def test_names_and_roles_are_checked() -> None:
    assert check_name("ada.lovelace-1") == "ada.lovelace-1"
    for bad in ("", "-x", "a/b", "a" * 64, "é"):
        with pytest.raises(UsageError):
            check_name(bad)
    assert parse_role("approver") is AdminRole.APPROVER
    with pytest.raises(UsageError, match="viewer, operator, approver, owner"):
        parse_role("root")


def test_certificates_are_admitted_until_their_admin_is_revoked() -> None:
    store = Store.memory()
    store.add_admin(_record("root", AdminRole.OWNER), _cert("a1"), _entry())
    store.add_admin(_record("pat", AdminRole.OPERATOR), _cert("b1"), _entry())
    assert store.admin_for_certificate("pat", "b1") == store.get_admin("pat")
    assert store.admin_for_certificate("pat", "a1") is None  # root's serial, pat's name
    assert store.admin_for_certificate("pat", "zz") is None
    store.renew_admin_certificate("pat", _cert("b2", days=400), _entry("admin.renew"))
    pat = store.get_admin("pat")
    assert pat is not None
    assert pat.certificate_serial == "b2"
    assert store.admin_for_certificate("pat", "b1") is not None  # still valid until it expires
    with pytest.raises(AlreadyExists):
        store.add_admin(_record("pat", AdminRole.VIEWER), _cert("b3"), _entry())

    revoked = store.revoke_admin("pat", NOW, _entry("admin.revoke"))
    assert (revoked.status, revoked.revoked_at) == (AdminStatus.REVOKED, NOW)
    assert store.admin_for_certificate("pat", "b2") is not None  # the record, to refuse by
    assert store.revoke_admin("pat", NOW, _entry("admin.revoke")) == revoked  # again: no-op
    with pytest.raises(NotFound):
        store.revoke_admin("nobody", NOW, _entry("admin.revoke"))

    # Added again: a new certificate; the old ones stay revoked.
    store.add_admin(_record("pat", AdminRole.VIEWER), _cert("b4"), _entry())
    assert store.admin_for_certificate("pat", "b2") is None
    assert store.admin_for_certificate("pat", "b1") is None
    again = store.admin_for_certificate("pat", "b4")
    assert again is not None
    assert (again.role, again.status) == (AdminRole.VIEWER, AdminStatus.ACTIVE)
    assert [a.name for a in store.list_admins()] == ["pat", "root"]
    actions = [r.entry.action for r in store.audit_page(0, 100)]
    assert actions == ["admin.add", "admin.add", "admin.renew", "admin.revoke", "admin.add"]


def test_the_last_owner_stays() -> None:
    store = Store.memory()
    store.add_admin(_record("root", AdminRole.OWNER), _cert("a1"), _entry())
    with pytest.raises(Conflict, match="last owner"):
        store.revoke_admin("root", NOW, _entry("admin.revoke"))
    store.add_admin(_record("second", AdminRole.OWNER), _cert("c1"), _entry())
    assert store.revoke_admin("root", NOW, _entry("admin.revoke")).status is AdminStatus.REVOKED
    with pytest.raises(Conflict, match="last owner"):
        store.revoke_admin("second", NOW, _entry("admin.revoke"))
