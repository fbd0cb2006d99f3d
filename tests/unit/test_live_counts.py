"""controller.campaigns.live: counts kept change by change agree with a full
recount of the same rows (`controller.tally.count`), whatever happens."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.campaigns import CampaignState, parse_campaign
from controller.campaigns.live import PATCH, REVERT, LiveCount, Order
from controller.model import (
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    Host,
    HostStatus,
)
from controller.rollout.tally import count, host_facts

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
SPEC = parse_campaign(
    """
[campaign]
name = "kept"
[patch]
packages = ["openssl"]
[targets]
labels = { role = ["web"] }
[rollout]
silent_after = "20m"
report_timeout = "45m"
rings = [{ ring = 0, concurrency = "100%" }, { ring = 1, concurrency = "100%" }]
""",
    "kept.toml",
)
FINAL = [s for s in AssignmentStatus if s is not AssignmentStatus.IN_FLIGHT]


class Fleet:
    """The rows a store would hold, changed alongside a LiveCount."""

    def __init__(self, watching_since: datetime | None) -> None:
        self.hosts: dict[str, Host] = {}
        self.orders: dict[str, Assignment] = {}
        self.now = T0
        self.watching_since = watching_since
        self.record = CampaignRecord("c-1", "kept", "", CampaignState.RUNNING, T0, "admin:a", T0)
        self.live: LiveCount | None = None

    def start(self) -> None:
        active = [host_facts(h) for h in self.hosts.values() if h.status is HostStatus.ACTIVE]
        orders = [
            Order(a.order_id, a.host_id, a.kind, a.ring, a.status,
                  a.last_report_at or a.assigned_at, a.finished_at)
            for a in self.orders.values()
        ]  # fmt: skip
        self.live = LiveCount.build(
            SPEC, CampaignState.RUNNING, {}, {}, active, orders, self.watching_since, self.now
        )

    def enroll(self, n: int, ring: int, region: str, web: bool) -> None:
        host = Host(f"h-{n:016x}", region, ring, HostStatus.ACTIVE, self.now,
                    labels={"role": "web" if web else "db"})  # fmt: skip
        self.hosts[host.host_id] = host
        if self.live is not None:
            self.live.join(host_facts(host), self.now)

    def check_in(self, host_id: str, os_id: str) -> None:
        host = self.hosts[host_id]
        if host.status is not HostStatus.ACTIVE:
            return
        host = dataclasses.replace(host, last_seen=self.now, facts={"os_id": os_id})
        self.hosts[host_id] = host
        if self.live is not None:
            self.live.seen(host_facts(host), self.now)

    def revoke(self, host_id: str) -> None:
        self.hosts[host_id] = dataclasses.replace(self.hosts[host_id], status=HostStatus.REVOKED)
        if self.live is not None:
            self.live.leave(host_id)

    def assign(self, host_id: str, kind: AssignmentKind) -> None:
        host = self.hosts[host_id]
        mine = {a.kind for a in self.orders.values() if a.host_id == host_id}
        if kind in mine or (kind == REVERT and PATCH not in mine):
            return
        order = Assignment(f"o-{len(self.orders)}", "c-1", host_id, kind, host.ring, host.region,
                           len(self.orders), b"", AssignmentStatus.IN_FLIGHT, self.now)  # fmt: skip
        self.orders[order.order_id] = order
        if self.live is not None:
            self.live.assigned(host_id, order.order_id, kind, host.ring, self.now)

    def finish(self, index: int, status: AssignmentStatus | None) -> None:
        flying = [a for a in self.orders.values() if a.status is AssignmentStatus.IN_FLIGHT]
        if not flying:
            return
        order = flying[index % len(flying)]
        done = dataclasses.replace(
            order, last_report_at=self.now, status=status or order.status,
            finished_at=self.now if status else None,
        )  # fmt: skip
        self.orders[order.order_id] = done
        if self.live is not None:
            if status is None:
                self.live.reported(order.order_id, self.now)
            else:
                self.live.finished(order.order_id, status, self.now)

    def agree(self) -> None:
        assert self.live is not None
        kept = self.live.tallies(self.now)
        full = count(SPEC, self.record, self.hosts.values(), list(self.orders.values()),
                     self.now, self.watching_since).tallies  # fmt: skip
        assert dict(kept.cells) == {k: v for k, v in full.cells.items()}
        assert dict(kept.ring_finished_at) == dict(full.ring_finished_at)
        unassigned = sum(n for _, _, n in self.live.waiting())
        assert unassigned == len(count(
            SPEC, self.record, self.hosts.values(), list(self.orders.values()), self.now,
            self.watching_since,
        ).unassigned)  # fmt: skip


HOST = st.integers(0, 11)
STEP = st.one_of(
    st.tuples(st.just("enroll"), HOST, st.integers(0, 1), st.sampled_from(["eu", "us"]),
              st.booleans()),
    st.tuples(st.just("check_in"), HOST, st.sampled_from(["debian", "ubuntu"])),
    st.tuples(st.just("revoke"), HOST),
    st.tuples(st.just("assign"), HOST, st.sampled_from([PATCH, PATCH, REVERT])),
    st.tuples(st.just("finish"), st.integers(0, 20), st.sampled_from([None, *FINAL])),
    st.tuples(st.just("wait"), st.integers(1, 30)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(STEP, max_size=15),
    down=st.integers(0, 90),
    after=st.lists(STEP, max_size=40),
    restarted=st.booleans(),
)
def test_kept_counts_agree_with_a_full_recount(before, down, after, restarted):
    """``before`` happens before the controller starts (the store's rows it
    builds from), then nothing for ``down`` minutes (an outage, when
    ``restarted``: silence and time-outs then count from the start), then
    ``after`` while it runs; the counts agree after each step."""
    fleet = Fleet(None)
    for step in before:
        _apply(fleet, step)
    fleet.now += timedelta(minutes=down)
    fleet.watching_since = fleet.now if restarted else None
    fleet.start()
    fleet.agree()
    for step in after:
        _apply(fleet, step)
        fleet.agree()


def _apply(fleet: Fleet, step: tuple[object, ...]) -> None:
    action, *args = step
    ids = sorted(fleet.hosts)
    if action == "enroll":
        n, ring, region, web = args
        assert isinstance(n, int)
        assert isinstance(ring, int)
        if f"h-{n:016x}" not in fleet.hosts:
            fleet.enroll(n, ring, str(region), bool(web))
    elif action == "wait":
        (minutes,) = args
        assert isinstance(minutes, int)
        fleet.now += timedelta(minutes=minutes)
    elif action == "finish":
        index, status = args
        assert isinstance(index, int)
        fleet.finish(index, status if isinstance(status, AssignmentStatus) else None)
    elif ids:
        index = args[0]
        assert isinstance(index, int)
        host_id = ids[index % len(ids)]
        if action == "check_in":
            fleet.check_in(host_id, str(args[1]))
        elif action == "revoke":
            fleet.revoke(host_id)
        elif action == "assign":
            fleet.assign(host_id, AssignmentKind(str(args[1])))
