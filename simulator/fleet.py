"""The simulated fleet: generated from a scenario's ``[fleet]``, or taken from
the controller's real inventory (see `inventory`).

Generation is exact and deterministic for a seed: region sizes, ring shares
within each region, OS and label mixes within each region and ring are
apportioned by largest remainder (1% of 2,000 hosts is exactly 20), then
shuffled; the offline share is drawn exactly too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetpatch import __version__


@dataclass(frozen=True)
class RegionSpec:
    name: str
    timezone: str  # IANA name: the hosts' zone, for host-local windows
    weight: float


@dataclass(frozen=True)
class FleetSpec:
    hosts: int
    regions: tuple[RegionSpec, ...]
    rings: tuple[tuple[int, float], ...]  # ring, weight
    os_mix: tuple[tuple[str, float], ...]  # os id, weight
    labels: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]  # key -> (value, weight)
    checkin_interval: timedelta
    campaign_tick: timedelta
    offline: float  # share of hosts offline throughout


@dataclass(frozen=True)
class FleetHost:
    """One host as the controller knows it."""

    host_id: str
    region: str
    ring: int
    os_id: str
    timezone: str
    labels: Mapping[str, str]
    online: bool = True  # checks in during the simulation
    last_seen: datetime | None = None  # when offline: the last check-in before the start
    agent_version: str = __version__  # synthetic fleets run this agent


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` by ``weights`` into integers that add up to it
    (largest remainder; ties go to the earlier weight)."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _spread(rng: random.Random, total: int, mix: Sequence[tuple[str, float]]) -> list[str]:
    counts = apportion(total, [w for _, w in mix])
    values = [name for (name, _), n in zip(mix, counts, strict=True) for _ in range(n)]
    rng.shuffle(values)
    return values


def generate(spec: FleetSpec, rng: random.Random, start: datetime) -> list[FleetHost]:
    """The hosts of ``spec``; the offline ones were last seen a day before ``start``."""
    layout: list[tuple[RegionSpec, int, str, dict[str, str]]] = []
    region_counts = apportion(spec.hosts, [r.weight for r in spec.regions])
    for region, n_region in zip(spec.regions, region_counts, strict=True):
        ring_counts = apportion(n_region, [w for _, w in spec.rings])
        for (ring, _), n in zip(spec.rings, ring_counts, strict=True):
            oses = _spread(rng, n, spec.os_mix)
            columns = [(key, _spread(rng, n, mix)) for key, mix in spec.labels]
            for i in range(n):
                labels = {key: values[i] for key, values in columns}
                layout.append((region, ring, oses[i], labels))
    rng.shuffle(layout)
    offline = set(rng.sample(range(len(layout)), round(spec.offline * len(layout))))
    shared: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    hosts = []
    width = max(5, len(str(len(layout))))
    for index, (region, ring, os_id, drawn) in enumerate(layout):
        # One dict per distinct label set: 100,000 hosts share a handful.
        labels = shared.setdefault(tuple(sorted(drawn.items())), drawn)
        gone = index in offline
        hosts.append(
            FleetHost(
                host_id=f"h-{index:0{width}d}",
                region=region.name,
                ring=ring,
                os_id=os_id,
                timezone=region.timezone,
                labels=labels,
                online=not gone,
                last_seen=start - timedelta(days=1) if gone else None,
            )
        )
    return hosts
