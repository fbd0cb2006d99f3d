"""The controller's TLS server certificate: issued again from the fleet CA
(`fleetpatch controller renew-server-cert`), and the time it and the CA
have left.

The server certificate is each replica's own. `init` issues it for the names
given there, valid 825 days (`pki.SERVER_LIFETIME`), and `rotate-ca
--retire-old` issues it again. Agents and admins check it against the CA
they pinned. Once it has ended, none of them can reach the controller, nor
be told of a new certificate. And a replica added later, answering to a name
the first one's certificate does not hold, needs a certificate of its own.

So it is issued again here, with a new key, by the CA that issued it
(ca.pem, the one agents trust, during a CA rotation too), for the same names
or for others. `serve` refuses to start with one that has ended, and warns
when it or the CA ends soon. It also gives both ends to Prometheus.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from controller.datadir import DataDir, split_address
from controller.errors import DataDirError, UsageError
from controller.fleet import carotation
from controller.fleet.pki import check_hostnames, names_of, server_names

# How long before its end `serve` says a certificate must be replaced: the
# server certificate is issued again in a moment; a CA rotation waits for
# every host to check in and renew, which takes longer.
SERVER_WARNING = timedelta(days=30)
CA_WARNING = timedelta(days=180)


@dataclass(frozen=True)
class Ends:
    """When this data dir's server certificate and CA (ca.pem) end."""

    server: datetime
    ca: datetime

    def warnings(self, now: datetime) -> list[str]:
        """What to say now about them (nothing while both have long left)."""
        said = []
        if self.server - now < SERVER_WARNING:
            said.append(
                f"the server certificate (server.pem) {_ends(self.server, now)}: agents "
                "and admins refuse this controller from then; `fleetpatch controller "
                "renew-server-cert` issues a new one (then restart serve)"
            )
        if self.ca - now < CA_WARNING:
            said.append(
                f"the fleet CA (ca.pem) {_ends(self.ca, now)}: every certificate it "
                "issued ends with it; `fleetpatch controller rotate-ca` moves the fleet to a "
                "new one without a flag day"
            )
        return said


def ends(data_dir: DataDir) -> Ends:
    """When the server certificate and the CA end; DataDirError when one
    cannot be read."""
    server = read_certificate(data_dir, data_dir.server_cert)
    ca = read_certificate(data_dir, data_dir.ca_cert)
    return Ends(server.not_valid_after_utc, ca.not_valid_after_utc)


def check_not_ended(found: Ends, now: datetime) -> None:
    """`serve` will not start with a server certificate that has ended:
    nobody could reach it."""
    if found.server <= now:
        raise DataDirError(
            f"the server certificate (server.pem) ended on {found.server:%Y-%m-%d %H:%M}Z: "
            "agents and admins refuse this controller; `fleetpatch controller "
            "renew-server-cert` issues a new one"
        )


def renew(data_dir: DataDir, hostnames: Sequence[str] | None = None) -> x509.Certificate:
    """Issue the server certificate again, with a new key, by the CA agents
    trust (ca.pem): for ``hostnames`` (None: the names of the current
    one). The advertised address must stay one of its names. Returns the
    new certificate; `serve` uses it from its next start."""
    data_dir.require_initialised()
    names = list(hostnames) if hostnames else names_of(
        read_certificate(data_dir, data_dir.server_cert)
    )  # fmt: skip
    if not names:
        raise DataDirError(f"{data_dir.server_cert} names no host; pass --hostname")
    covered = server_names(*check_hostnames(names))
    advertised, _ = split_address(data_dir.settings().advertise)
    if not _covers(covered, advertised):
        raise UsageError(
            f"--hostname: the names must include {advertised}, the address this controller "
            "advertises (server.advertise), or agents sent there would refuse it; change "
            "server.advertise first to move to another name"
        )
    ca = carotation.load(data_dir).current
    issued = ca.issue_server(covered)
    # The key first: a certificate beside a key that is not its own would
    # not load, and this order leaves that only between two renames.
    data_dir.write_private(data_dir.server_key, issued.key_pem)
    data_dir.write_public(data_dir.server_cert, issued.cert_pem)
    return x509.load_pem_x509_certificate(issued.cert_pem)


def _covers(names: Sequence[str], host: str) -> bool:
    """Whether a certificate for ``names`` is good for ``host`` (a name,
    case aside, or an address however it is spelled)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in (name.lower() for name in names)
    for name in names:
        try:
            if ipaddress.ip_address(name) == address:
                return True
        except ValueError:
            continue
    return False


def read_certificate(data_dir: DataDir, path: Path) -> x509.Certificate:
    """The certificate in ``path`` (server.pem, ca.pem); DataDirError
    naming it, and what to do, when it is unreadable or damaged."""
    try:
        return x509.load_pem_x509_certificate(data_dir.read(path))
    except ValueError:
        todo = "restore it from a backup of the data dir"
        if path == data_dir.server_cert:
            todo += ", or issue a new one: fleetpatch controller renew-server-cert --hostname NAME"
        raise DataDirError(f"{path} is not a PEM certificate (damaged? {todo})") from None


def _ends(at: datetime, now: datetime) -> str:
    left = at - now
    if left <= timedelta(0):
        return f"ended on {at:%Y-%m-%d %H:%M}Z"
    return f"ends on {at:%Y-%m-%d %H:%M}Z, in {left.days} day(s)"
