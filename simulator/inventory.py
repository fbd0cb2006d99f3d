"""The fleet of a rehearsal on the real fleet: the controller's inventory,
read over its admin API (`controller.admin_client.AdminClient`), and its
settings (check-in interval, campaign tick) from the data dir.

Revoked hosts are left out, as the controller's counts leave them out. A
host not seen for two check-in intervals before the start is taken to be
offline throughout the rehearsal: it keeps its real last check-in, so it
is unreachable (or silent) exactly when the controller would say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetpatch.v1 import admin_pb2

from controller.api.convert import history_from_pb
from controller.cli.admin_client import AdminClient
from controller.datadir import DataDir
from controller.model import CellHistory

from .fleet import FleetHost


@dataclass(frozen=True)
class RealFleet:
    hosts: tuple[FleetHost, ...]
    checkin_interval: timedelta
    campaign_tick: timedelta
    address: str
    history: tuple[CellHistory, ...] = ()  # what its past patch orders did


def from_pb(
    hosts: Iterable[admin_pb2.Host], start: datetime, interval: timedelta
) -> list[FleetHost]:
    """FleetHosts from the admin API's host messages."""
    out = []
    for pb in hosts:
        if pb.status == admin_pb2.HOST_STATUS_REVOKED:
            continue
        seen = pb.last_seen.ToDatetime(tzinfo=UTC) if pb.HasField("last_seen") else None
        online = seen is not None and start - seen <= 2 * interval
        out.append(
            FleetHost(
                host_id=pb.host_id,
                region=pb.region,
                ring=pb.ring,
                os_id=pb.facts.os_id,
                timezone=pb.facts.timezone,
                labels=dict(pb.labels),
                online=online,
                last_seen=None if online else seen,
                agent_version=pb.facts.agent_version,
            )
        )
    out.sort(key=lambda h: h.host_id)  # the same fleet gives the same run
    return out


def load_real_fleet(data_dir: Path, address: str | None, start: datetime) -> RealFleet:
    """Read the inventory. Raises the admin client's errors (DataDirError,
    ControllerUnavailable, Refused, ...), each with its exit code."""
    directory = DataDir.at(data_dir)
    settings = directory.settings()
    with AdminClient(directory, address) as client:
        hosts = from_pb(client.iter_hosts(), start, settings.checkin_interval)
        history = tuple(history_from_pb(cell) for cell in client.fleet_history())
        where = client.address
    return RealFleet(
        tuple(hosts), settings.checkin_interval, settings.campaign_tick, where, history
    )
