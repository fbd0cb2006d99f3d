"""Whether a data dir belongs to the fleet its database serves.

Replicas on one database must share the CA and the work-order signing key
(a further replica is a copy of the first's data dir): a replica made by a
`controller init` of its own would sign orders the agents refuse, hand out
certificates the other replicas do not trust, and sign audit checkpoints
the others cannot verify. A replica left with an old copy after another
one's `rotate-key` or `rotate-ca` signs with a key the fleet has moved on
from.

So the database records the fleet's lineage: the CAs and signing key in
use now, and every one a data dir has ever held (retired CAs and keys).
At start, `serve` compares its data dir's with it:

- the same, or a rotation of it (the database's current ones are among the
  data dir's retired ones): served, and recorded as the fleet's now;
- older (the data dir's current ones are among what the fleet has retired):
  refused, copy the data dir again from the replica that rotated;
- anything else (another `controller init`, a diverging rotation): refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from controller.datadir import DataDir
from controller.errors import DataDirError, FleetpatchError

if TYPE_CHECKING:
    from controller.store import Store

log = logging.getLogger(__name__)

# Attempts at recording, each lost to another replica starting at once.
_ATTEMPTS = 10


def ca_mark(cert: x509.Certificate) -> str:
    return "ca:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def key_mark(key_id: str) -> str:
    return "key:" + key_id


@dataclass(frozen=True)
class Lineage:
    """Marks (``ca:SHA256`` of a CA certificate, ``key:ID`` of a signing
    key): those in use now, and every one ever held, those included."""

    current: frozenset[str]
    known: frozenset[str]

    @classmethod
    def of(cls, current: Iterable[str], retired: Iterable[str]) -> Lineage:
        now = frozenset(current)
        return cls(now, now | frozenset(retired))


def describe(marks: Iterable[str]) -> str:
    """Marks, short: "CA 1a2b3c4d5e6f7a8b, signing key 0123456789abcdef"."""
    parts = []
    for mark in sorted(marks):
        kind, _, value = mark.partition(":")
        parts.append(f"{'CA' if kind == 'ca' else 'signing key'} {value[:16]}")
    return ", ".join(parts)


def of_data_dir(
    data_dir: DataDir, trusted_cas: Iterable[x509.Certificate], key_ids: Iterable[str],
    current_key_id: str,
) -> Lineage:  # fmt: skip
    """The lineage of a data dir whose CAs (``trusted_cas``: ca.pem, and
    ca-next.pem during a rotation) and signing keys are loaded already:
    ``key_ids`` every key it knows (its rotation chain, retired and revoked
    ones), ``current_key_id`` the one it signs with."""
    retired = []
    for path in sorted(data_dir.path.glob("ca-retired-*.pem")):
        try:
            retired.append(ca_mark(x509.load_pem_x509_certificate(data_dir.read(path))))
        except ValueError:
            raise DataDirError(f"{path} is not a PEM certificate") from None
    current = [ca_mark(cert) for cert in trusted_cas] + [key_mark(current_key_id)]
    return Lineage.of(current, [*retired, *(key_mark(k) for k in key_ids)])


def reconcile(recorded: Lineage | None, ours: Lineage) -> Lineage:
    """What the database should record now that a replica with ``ours``
    starts, where it recorded ``recorded`` (None: nothing yet). Raises
    DataDirError when this data dir is not the fleet's, or is older."""
    if recorded is None:
        return ours
    # Rotations only ever add CAs and keys. This copy is older than the
    # fleet's when it uses one the fleet has retired, or when the fleet
    # uses one it does not know (a rotation begun) and it knows no other.
    retired = ours.current & (recorded.known - recorded.current)
    if not retired and recorded.current <= ours.known:
        return Lineage(ours.current, recorded.known | ours.known)  # the same, or rotated on
    if retired or ours.current <= recorded.known:
        raise DataDirError(
            f"this data dir is older than the fleet's: it has {describe(ours.current)}, the "
            f"fleet has {describe(recorded.current)} (another replica ran rotate-key or "
            "rotate-ca); copy the data dir again from that replica"
        )
    raise DataDirError(
        f"this data dir is not the fleet's: it has {describe(ours.current)}, the "
        f"database's fleet has {describe(recorded.current)}; a further replica is a copy "
        "of the first's data dir (README: Several controller replicas), not a "
        "`controller init` of its own"
    )


def adopt(store: Store, ours: Lineage) -> Lineage:
    """Check this data dir's lineage against the fleet's (``reconcile``)
    and record the outcome; raises DataDirError when it is not the fleet's.
    Runs on the store thread."""
    for _ in range(_ATTEMPTS):
        recorded = store.recorded_lineage()
        fleet = reconcile(recorded, ours)
        if fleet == recorded:
            return fleet
        if store.record_lineage(fleet, recorded):
            if recorded is None:
                log.debug("this data dir's %s recorded as the fleet's", describe(ours.current))
            elif recorded.current != fleet.current and store.shared:
                log.warning(
                    "the fleet now has this data dir's %s (rotated from %s): the other "
                    "replicas stop within a tick; start each on a copy of this data dir",
                    describe(fleet.current), describe(recorded.current),
                )  # fmt: skip
            return fleet
    raise FleetpatchError("the fleet's CAs and keys kept changing under this start; try again")
