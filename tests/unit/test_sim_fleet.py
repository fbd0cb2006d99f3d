"""Generated fleets: exact shares, deterministic for a seed; waiting rooms in
check-in order."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from simulator.fleet import FleetSpec, RegionSpec, apportion, generate
from simulator.waiting import WaitingRoom

START = datetime(2026, 12, 5, tzinfo=UTC)
SPEC = FleetSpec(
    hosts=2000,
    regions=(RegionSpec("eu", "Europe/Berlin", 40), RegionSpec("us", "America/New_York", 40),
             RegionSpec("ap", "Asia/Kolkata", 20)),
    rings=((0, 1), (1, 9), (2, 90)),
    os_mix=(("debian", 70), ("ubuntu", 30)),
    labels=(("env", (("prod", 1.0),)), ("role", (("db", 1.0), ("web", 3.0)))),
    checkin_interval=timedelta(minutes=5),
    campaign_tick=timedelta(seconds=10),
    offline=0.01,
)  # fmt: skip


@given(total=st.integers(0, 10**6), weights=st.lists(st.floats(0, 1000), min_size=1, max_size=8))
def test_apportion_adds_up_and_stays_within_one_of_the_exact_share(total, weights):
    counts = apportion(total, weights)
    whole = sum(weights)
    if whole <= 0:
        assert counts == [0] * len(weights)
        return
    assert sum(counts) == total
    for n, w in zip(counts, weights, strict=True):
        assert abs(n - total * w / whole) < 1 + 1e-6


def test_shares_are_exact():
    hosts = generate(SPEC, random.Random(1), START)
    assert len(hosts) == 2000
    assert Counter(h.region for h in hosts) == {"eu": 800, "us": 800, "ap": 400}
    assert Counter(h.ring for h in hosts) == {0: 20, 1: 180, 2: 1800}
    assert Counter((h.region, h.ring) for h in hosts)[("ap", 0)] == 4
    assert Counter(h.os_id for h in hosts) == {"debian": 1400, "ubuntu": 600}
    assert Counter(h.labels["role"] for h in hosts) == {"web": 1500, "db": 500}
    assert {h.labels["env"] for h in hosts} == {"prod"}
    offline = [h for h in hosts if not h.online]
    assert len(offline) == 20
    assert all(h.last_seen == START - timedelta(days=1) for h in offline)
    assert {h.timezone for h in hosts if h.region == "ap"} == {"Asia/Kolkata"}
    assert len({h.host_id for h in hosts}) == 2000


def test_the_same_seed_gives_the_same_fleet():
    first = generate(SPEC, random.Random(5), START)
    assert first == generate(SPEC, random.Random(5), START)
    assert first != generate(SPEC, random.Random(6), START)


@given(
    anchors=st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=60, unique=True),
    now=st.integers(0, 10**10),
)
def test_the_waiting_room_gives_hosts_in_the_order_they_next_check_in(anchors, now):
    interval = 300_000_000
    room = WaitingRoom((0, "eu"), interval)
    for index, anchor in enumerate(anchors):
        room.add(index, anchor)

    def next_after(index: int) -> tuple[int, int]:
        a = anchors[index]
        return now + 1 + (a - now - 1) % interval, a % interval

    expected = sorted(range(len(anchors)), key=lambda i: (next_after(i), i))
    popped = [room.pop_next(now) for _ in anchors]
    assert [next_after(i)[0] for i in popped] == [next_after(i)[0] for i in expected]
    assert sorted(popped) == list(range(len(anchors)))
    assert len(room) == 0


def test_a_removed_host_is_not_woken():
    room = WaitingRoom((0, "eu"), 100)
    keys = [room.add(i, i * 10) for i in range(5)]
    room.remove(keys[1])
    room.remove(keys[1])  # twice is harmless
    assert [room.pop_next(0) for _ in range(4)] == [2, 3, 4, 0]
