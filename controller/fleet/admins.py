"""Admins are named people with a role, kept by the controller.

Each admin has certificates of their own (``spiffe://fleetpatch/admin/<name>``),
issued for a key made where `fleetpatch admin add` ran; the controller keeps
their serials, so that revoking an admin refuses their certificates at the
next call, and a name added again after a revocation does not bring the old
certificates back.

Roles are ranked; each may do what the ones below it may:

    viewer     read: hosts, campaigns, tokens, releases, the audit trail, admins
    operator   create, pause, resume and abort campaigns; manage tokens and
               hosts; publish agent releases; take audit checkpoints
    approver   approve campaigns
    owner      add and revoke admins (the signing and CA keys are managed
               on the controller host, with access to its data dir)

Every admin may renew their own certificate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controller.errors import Refused, UsageError

# The name part of an admin URI (fleetpatch.identity's pattern).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Audit actor of what the controller does on its own (init, an upgrade).
CONTROLLER_ACTOR = "controller"


class AdminRole(StrEnum):
    """Stored strings: never change a value."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _RANK.index(self)


_RANK = [AdminRole.VIEWER, AdminRole.OPERATOR, AdminRole.APPROVER, AdminRole.OWNER]


class AdminStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


# The least role each AdminService call needs. A call missing here is
# refused to everyone (a test holds every RPC of the service to this table).
NEEDS: dict[str, AdminRole | None] = {
    "ListTokens": AdminRole.VIEWER,
    "ListHosts": AdminRole.VIEWER,
    "GetHost": AdminRole.VIEWER,
    "GetCampaign": AdminRole.VIEWER,
    "ListCampaigns": AdminRole.VIEWER,
    "ListCampaignHosts": AdminRole.VIEWER,
    "ListAgentReleases": AdminRole.VIEWER,
    "VerifyAudit": AdminRole.VIEWER,
    "ExportAudit": AdminRole.VIEWER,
    "GetFleetHistory": AdminRole.VIEWER,
    "ListAdmins": AdminRole.VIEWER,
    "ListVulns": AdminRole.VIEWER,
    "GetVuln": AdminRole.VIEWER,
    "ListExposures": AdminRole.VIEWER,
    "GetCompliance": AdminRole.VIEWER,
    "CreateToken": AdminRole.OPERATOR,
    "RevokeToken": AdminRole.OPERATOR,
    "RevokeHost": AdminRole.OPERATOR,
    "RelabelHost": AdminRole.OPERATOR,
    "CreateCampaign": AdminRole.OPERATOR,
    "PauseCampaign": AdminRole.OPERATOR,
    "ResumeCampaign": AdminRole.OPERATOR,
    "AbortCampaign": AdminRole.OPERATOR,
    "PublishAgentRelease": AdminRole.OPERATOR,
    "AuditCheckpoint": AdminRole.OPERATOR,
    "ImportVulns": AdminRole.OPERATOR,
    "ApproveCampaign": AdminRole.APPROVER,
    "AddAdmin": AdminRole.OWNER,
    "RevokeAdmin": AdminRole.OWNER,
    "RenewAdmin": None,  # any admin, for their own certificate
}


@dataclass(frozen=True)
class AdminRecord:
    name: str
    role: AdminRole
    status: AdminStatus
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    certificate_serial: str = ""
    certificate_expires_at: datetime | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names this person."""
        return f"admin:{self.name}"


def parse_role(text: str) -> AdminRole:
    """The role named ``text``; raises UsageError listing the roles."""
    try:
        return AdminRole(text)
    except ValueError:
        raise UsageError(
            f"role {text!r} is not one of {', '.join(r.value for r in AdminRole)}"
        ) from None


def check_name(name: str) -> str:
    """``name`` if it can name an admin in a certificate; raises UsageError."""
    if not NAME.fullmatch(name):
        raise UsageError(
            f"admin name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def authorize(admin: AdminRecord | None, name: str, method: str) -> AdminRecord:
    """The admin allowed to make call ``method``, or Refused saying why.
    ``admin``: what the store knows of the calling certificate (None: a
    certificate it never issued, or one of a revoked admin's)."""
    if admin is None:
        raise Refused(f"the certificate of admin {name} is not current (revoked or unknown)")
    if admin.status is AdminStatus.REVOKED:
        raise Refused(f"admin {name} has been revoked")
    if method not in NEEDS:
        raise Refused(f"no role may call {method}")
    needed = NEEDS[method]
    if needed is not None and admin.role.rank < needed.rank:
        raise Refused(f"admin {name} is a {admin.role}; {method} needs the {needed} role")
    return admin
