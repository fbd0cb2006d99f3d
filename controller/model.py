"""Plain data the controller's core speaks: protobuf stays at the edges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fleetpatch.agentrelease import Family
from fleetpatch.orderspec import REFUSED, OrderState

from controller.campaigns.gates import HaltKind
from controller.campaigns.tallies import CampaignState

JSON = Mapping[str, Any]


class HostStatus(StrEnum):
    """Stored in hosts.status; values never change once released."""

    PENDING = "pending"  # enrolled, not yet seen over mutual TLS
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Host:
    host_id: str
    region: str
    ring: int
    status: HostStatus
    enrolled_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    last_seen: datetime | None = None
    facts: JSON = field(default_factory=dict)  # HostFacts as JSON
    health: JSON = field(default_factory=dict)  # HealthSummary as JSON
    inventory_hash: str = ""
    package_count: int = 0
    certificate_serial: str = ""
    certificate_expires_at: datetime | None = None
    inventory_updates: int = 0
    checkins: int = 0
    certificate_not_before: datetime | None = None
    renewal_failures: int = 0  # certificate renewals failed in a row
    renewal_error: str = ""


@dataclass(frozen=True)
class HostPlace:
    """The part of an active host's row that campaign counts read: where it
    was enrolled, what it reports of itself and when it was last seen (not
    its health or certificate; the engine reads the fleet this way)."""

    host_id: str
    region: str
    ring: int
    labels: Mapping[str, str]
    facts: JSON  # HostFacts as JSON
    last_seen: datetime | None


Package = tuple[str, str, str]  # name, version, arch


@dataclass(frozen=True)
class CheckIn:
    """One check-in as it is persisted."""

    host_id: str
    at: datetime
    facts: JSON
    health: JSON
    inventory_hash: str
    packages: Sequence[Package] | None  # None: only the hash was sent
    updates_hash: str = ""  # of the updates available, as the agent last scanned them
    updates: Sequence[tuple[object, ...]] | None = None  # rows of UPDATE_FIELDS; None: hash only
    scanned_at: datetime | None = None
    # Binary name -> (source package, source version) where they differ.
    sources: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressReport:
    """One step of one work order, as an agent reported it."""

    idempotency_key: str
    host_id: str
    order_id: str
    step: str
    final: bool
    outcome: str
    detail: str
    at: datetime
    payload: bytes


@dataclass(frozen=True, slots=True)
class CheckInOutcome:
    known: bool  # the host is enrolled
    revoked: bool
    inventory_hash: str  # what the controller holds after this check-in
    # Where the host was enrolled, for the campaign engine (known, active hosts).
    region: str = ""
    ring: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    activated: bool = False  # this was the host's first check-in: it is active now
    updates_hash: str = ""  # the available updates the controller holds afterwards
    # The hosts' placement generation, read before this host's row
    # (controller/store/heartbeats.py): what was read holds while it is current.
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a check-in that brought nothing new leaves to write: when the
    host was seen, its facts and health, and how many check-ins that was
    (several, when a host checked in again before they were written)."""

    host_id: str
    at: datetime
    facts: JSON | None  # None: a newer check-in of the host writes them
    health: JSON | None
    count: int = 1


class AssignmentStatus(StrEnum):
    """Stored in assignments.status; values never change once released."""

    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERTED = "reverted"
    REVERT_FAILED = "revert_failed"
    TIMED_OUT = "timed_out"
    PENDING_REBOOT = "pending_reboot"
    PENDING_RESTART = "pending_restart"


# The statuses of a host that has the update installed (the campaign counts
# them succeeded; a reboot or service restarts may still be owed).
PATCHED = frozenset(
    {AssignmentStatus.SUCCEEDED, AssignmentStatus.PENDING_REBOOT, AssignmentStatus.PENDING_RESTART}
)

# The agent's final outcome -> the assignment's status.
# The final step an agent reports, and what the assignment becomes.
OUTCOME_STATUS: dict[str, AssignmentStatus] = {
    OrderState.SUCCEEDED: AssignmentStatus.SUCCEEDED,
    OrderState.PENDING_REBOOT: AssignmentStatus.PENDING_REBOOT,
    OrderState.PENDING_RESTART: AssignmentStatus.PENDING_RESTART,
    OrderState.FAILED: AssignmentStatus.FAILED,
    REFUSED: AssignmentStatus.FAILED,
    OrderState.REVERTED: AssignmentStatus.REVERTED,
    OrderState.REVERT_FAILED: AssignmentStatus.REVERT_FAILED,
}


class AssignmentKind(StrEnum):
    """Stored in assignments.kind; values never change once released."""

    PATCH = "patch"  # the campaign's own order (an agent update too)
    REVERT = "revert"  # undoing a patch, for an aborted --revert campaign


@dataclass(frozen=True)
class CampaignRecord:
    campaign_id: str
    name: str
    spec: str
    state: CampaignState
    created_at: datetime
    created_by: str
    updated_at: datetime
    approved_at: datetime | None = None
    halt_kind: HaltKind | None = None
    halt_reason: str = ""
    accepted_failures: Mapping[int, int] = field(default_factory=dict)
    accepted_silent: Mapping[int, int] = field(default_factory=dict)
    revert_requested: bool = False


@dataclass(frozen=True)
class Assignment:
    order_id: str
    campaign_id: str
    host_id: str
    kind: AssignmentKind
    ring: int
    region: str
    sequence: int
    envelope: bytes
    status: AssignmentStatus
    assigned_at: datetime
    step: str = ""
    detail: str = ""
    last_report_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Applied:
    """A progress report applied to an order in flight (`apply_results`)."""

    campaign_id: str
    order_id: str
    status: AssignmentStatus | None  # its final status; None: progress only
    at: datetime


@dataclass(frozen=True)
class AgentRelease:
    """A published agent package: what agent-update campaigns hand out.
    ``manifest`` and ``signature`` are the release's SHA256SUMS and
    SHA256SUMS.sig, byte for byte: hosts check them against their own
    pinned release key."""

    version: str  # PEP 440
    artifact: str  # fleetpatch-agent_<debian version>_<arch>.deb or -<rpm version>-1.<arch>.rpm
    sha256: str  # hex, of the artifact
    size: int
    key_fingerprint: str  # the release key it was checked against; "" when none
    published_at: datetime
    published_by: str
    manifest: bytes
    signature: bytes
    family: Family = Family.DEB  # which hosts it is for: one package per version and family


@dataclass(frozen=True)
class CellView:
    """One ring x region row of `campaign show`: its counts, why its hosts
    wait (reason -> hosts), and the soonest time a wait may end."""

    ring: int
    region: str
    counts: dict[str, int]
    waiting_reasons: dict[str, int]
    next_change: datetime | None


@dataclass(frozen=True)
class CellHistory:
    """What the finished patch orders of one ring x region did, over every
    campaign: how they ended, and how long their steps took (seconds)."""

    ring: int
    region: str
    hosts: int
    orders: int
    succeeded: int
    failed: int
    reverted: int
    revert_failed: int
    timed_out: int
    apply_seconds: tuple[float, ...] = ()
    verify_seconds: tuple[float, ...] = ()
    reboot_seconds: tuple[float, ...] = ()
