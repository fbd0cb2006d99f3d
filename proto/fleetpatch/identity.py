"""How identities are named in certificates.

A client certificate carries exactly one URI subject alternative name:
``spiffe://fleetpatch/host/<host id>`` for an agent and
``spiffe://fleetpatch/admin/<name>`` for an administrator. The controller
reads identity from the verified peer certificate only, never from a
request field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

TRUST_DOMAIN = "fleetpatch"
_URI = re.compile(r"^spiffe://fleetpatch/(host|admin)/([A-Za-z0-9][A-Za-z0-9._-]{0,62})$")
HOST_ID = re.compile(r"^h-[0-9a-f]{16}$")


class Role(StrEnum):
    HOST = "host"
    ADMIN = "admin"


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str  # the host id for hosts

    @property
    def uri(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{self.role}/{self.name}"


def identity_from_certificate(cert: x509.Certificate) -> Identity | None:
    """The identity a certificate names, or None when it names none or several."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    found = [
        m
        for m in (
            _URI.fullmatch(u) for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)
        )
        if m
    ]
    if len(found) != 1:
        return None
    return Identity(Role(found[0].group(1)), found[0].group(2))
