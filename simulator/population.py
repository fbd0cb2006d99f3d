"""The simulated hosts of a run: the targeted hosts of a fleet, each with
its fate and check-in phase, sorted into waiting rooms (see `waiting`).

Hosts the campaign does not target are left out: the controller counts
only targeted hosts, and nothing a rehearsal does can involve the others.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from agent.link.backoff import retry_delay
from agent.statedir import Timing
from controller.campaigns import CampaignSpec, HostFacts, is_targeted
from controller.campaigns.counts import Cell
from controller.campaigns.scheduler import DecisionKey, decision_key

from .agentmodel import US, draw_fate, rehearsed_patch
from .failures import FailureModel
from .fleet import FleetHost
from .hosts import SimHost
from .waiting import WaitingRoom

# Hosts alike in everything `decide` reads share a room.
RoomKey = DecisionKey


@dataclass(frozen=True)
class Population:
    hosts: list[SimHost]  # targeted hosts, by index
    rooms: dict[RoomKey, WaitingRoom]
    cells: list[Cell]  # (ring, region) with targeted hosts
    by_ring: dict[int, list[WaitingRoom]]
    later: dict[int, list[WaitingRoom]]  # a ring's rooms and those of the rings after it
    offline: list[tuple[SimHost, FleetHost]]  # offline throughout the run
    fleet_size: int


MAX_RETRY = Timing().max_retry_delay.total_seconds()  # the agent's default


def populate(
    campaign: CampaignSpec,
    fleet: Sequence[FleetHost],
    failures: FailureModel,
    rng: random.Random,
    interval: int,
) -> Population:
    """The run's hosts, in fleet order. Draws from ``rng`` in that order: each
    host's fate, its reconnect delay after an outage (the agent's own
    backoff at its cap: the check-in interval, or max_retry_delay when
    shorter), and its check-in phase within ``interval`` (µs)."""
    packages = frozenset(p.name for p in rehearsed_patch(campaign).packages)
    hosts: list[SimHost] = []
    rooms: dict[RoomKey, WaitingRoom] = {}
    offline: list[tuple[SimHost, FleetHost]] = []
    cells: set[Cell] = set()
    for fh in fleet:
        facts = HostFacts(
            fh.host_id, fh.region, fh.ring, fh.labels, fh.os_id, fh.timezone,
            agent_version=fh.agent_version,
        )  # fmt: skip
        if not is_targeted(campaign, facts):
            continue
        cells.add((fh.ring, fh.region))
        key = decision_key(facts)
        room = rooms.get(key)
        if room is None:
            room = rooms[key] = WaitingRoom(key, interval)
        odds = failures.odds_for(fh.host_id, fh.ring, fh.region, fh.os_id, packages)
        fate = draw_fate(rng, odds, failures.durations)
        reconnect = int(retry_delay(64, rng, max_delay=MAX_RETRY, interval=interval / US) * US)
        host = SimHost(len(hosts), facts, room, fate, reconnect)
        host.anchor = int(rng.random() * interval) - interval  # its last check-in before the start
        hosts.append(host)
        if not fh.online:
            offline.append((host, fh))
    by_ring: dict[int, list[WaitingRoom]] = {}
    for key in sorted(rooms):
        by_ring.setdefault(key[0], []).append(rooms[key])
    order = [stage.ring for stage in campaign.rollout.rings]
    later = {
        ring: [room for after in order[i:] for room in by_ring.get(after, [])]
        for i, ring in enumerate(order)
    }
    return Population(hosts, rooms, sorted(cells), by_ring, later, offline, len(fleet))
