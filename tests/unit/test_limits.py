"""The controller's admission bounds and string caps, without a network."""

from __future__ import annotations

import asyncio
import random
from contextlib import AbstractContextManager
from typing import Any, cast

import grpc
import pytest
from fleetpatch.v1 import agent_pb2, types_pb2

from controller.api import limits
from controller.api.lenient import Unread
from controller.api.servicers import rpc
from controller.errors import Overloaded, UsageError


def test_one_call_of_each_kind_per_host_at_a_time():
    admission = limits.Admission(rng=random.Random(1))
    with admission.admit("h-1", "CheckIn"):
        with (
            pytest.raises(Overloaded, match="already has a CheckIn call") as caught,
            admission.admit("h-1", "CheckIn"),
        ):
            pass
        assert caught.value.retry_after == limits.RETRY_AFTER_SECONDS
        with admission.admit("h-1", "ReportProgress"), admission.admit("h-2", "CheckIn"):
            assert admission.in_flight == 3
    with admission.admit("h-1", "CheckIn"):  # free again once the first ended
        pass
    assert admission.in_flight == 0


def test_a_call_that_fails_gives_its_place_back():
    admission = limits.Admission()
    with pytest.raises(RuntimeError), admission.admit("h-1", "CheckIn"):
        raise RuntimeError
    with admission.admit("h-1", "CheckIn"):
        assert admission.in_flight == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_over_the_overall_bound_calls_are_shed_with_slots_one_after_another():
    """Fifty callers shed at once are told to come back one after another at
    the rate the controller serves (assumed until measured), after the
    calls in flight now: all within 50 / rate seconds, none at the same
    instant."""
    clock = FakeClock()
    capacity = limits.Capacity(per_second=10.0, clock=clock)
    admission = limits.Admission(max_in_flight=2, rng=random.Random(7), capacity=capacity)
    delays = []
    with admission.admit("h-1", "CheckIn"), admission.admit(None, "Enroll"):
        for i in range(50):
            with (
                pytest.raises(Overloaded, match="busy") as caught,
                admission.admit(f"h-{i + 2}", "CheckIn"),
            ):
                pass
            delays.append(caught.value.retry_after)
    assert admission.shed == 50
    assert min(delays) >= 2 / 10  # after the two in flight (the enrollment counts)
    assert max(delays) <= (2 + 50) / 10 * 1.1
    assert sum(delays[25:]) > 2 * sum(delays[:25])  # the later ones, later
    assert len({round(d, 4) for d in delays}) == 50  # spread, not one instant


def test_the_rate_slots_follow_is_measured_while_busy_and_kept_while_idle():
    clock = FakeClock()
    capacity = limits.Capacity(per_second=1000.0, clock=clock)
    for _ in range(10 * 200):  # ten busy seconds serving 200 calls a second
        capacity.finished(busy=True)
        clock.now += 1 / 200
    assert capacity.per_second == pytest.approx(200, rel=0.05)
    for _ in range(30):  # thirty idle seconds, a call each
        clock.now += 1
        capacity.finished(busy=False)
    capacity.finished(busy=True)  # a busy moment after the idle ones: no rate yet
    clock.now += 5
    capacity.finished(busy=False)
    assert capacity.per_second == pytest.approx(200, rel=0.05)
    rate = capacity.per_second
    assert capacity.slot(in_flight=100) == pytest.approx(100 / rate)  # those in flight first
    assert capacity.slot(in_flight=100) == pytest.approx(101 / rate)
    clock.now += 1000  # a herd far larger than the rate: never parked for long
    for _ in range(100_000):
        last = capacity.slot(in_flight=0)
    assert last == limits.MAX_SLOT_SECONDS


def test_the_rate_counts_each_call_for_what_it_cost():
    """Busy seconds of hosts sending inventories (three light calls' worth
    each) measure the same capacity, in light calls, as busy seconds of
    light calls: a herd of inventories does not make the controller look
    three times slower to the nudged hosts that follow."""
    clock = FakeClock()
    heavy = limits.Capacity(per_second=1000.0, clock=clock)
    for _ in range(10 * 100):  # 100 calls a second, each costing 3 light ones
        heavy.finished(busy=True, units=3.0)
        clock.now += 1 / 100
    light = limits.Capacity(per_second=1000.0, clock=clock)
    for _ in range(10 * 300):
        light.finished(busy=True)
        clock.now += 1 / 300
    assert heavy.per_second == pytest.approx(300, rel=0.05)
    assert light.per_second == pytest.approx(heavy.per_second, rel=0.05)


class _Context:
    """The part of a call's context `Unread` uses: ``read``, as gRPC's
    (the request's bytes, then EOF)."""

    def __init__(self, data: bytes) -> None:
        self._data: list[bytes] = [data]

    async def read(self) -> object:
        return self._data.pop() if self._data else cast(Any, grpc.aio).EOF


class _Servicer:
    """The least a servicer has for `rpc`: its admission, and one method."""

    def __init__(self, admission: limits.Admission) -> None:
        self.admission = admission
        self.units: list[float] = []

    def admit(self, method: str, context: object) -> AbstractContextManager[limits.Served]:
        return self.admission.admit("h-1", method)

    @rpc
    async def CheckIn(self, request: agent_pb2.CheckInRequest, context: object) -> str:
        return request.inventory_hash


class _Measured(limits.Capacity):
    """A Capacity that keeps what each finished call was counted for."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.counted: list[float] = []

    def finished(self, busy: bool, units: float = 1.0) -> None:
        self.counted.append(units)
        super().finished(busy, units)


def test_a_call_is_counted_for_the_bytes_of_its_request():
    capacity = _Measured()
    servicer = _Servicer(limits.Admission(capacity=capacity))
    light = agent_pb2.CheckInRequest(inventory_hash="a" * 64).SerializeToString()
    inventory = agent_pb2.CheckInRequest(inventory_hash="b" * 64)
    inventory.inventory.packages.extend(
        types_pb2.Package(name=f"pkg{i}", version="1.0-1", arch="amd64") for i in range(300)
    )
    heavy = inventory.SerializeToString()

    async def call(data: bytes) -> str:
        unread: Any = Unread(cast(Any, _Context(data)), agent_pb2.CheckInRequest)
        served: str = await servicer.CheckIn(unread, cast(Any, None))
        return served

    assert asyncio.run(call(light)) == "a" * 64
    assert asyncio.run(call(heavy)) == "b" * 64
    assert capacity.counted == [
        pytest.approx(limits.call_units(len(light))),
        pytest.approx(limits.call_units(len(heavy))),
    ]
    assert capacity.counted[0] < 1.1  # a hash-only check-in is one light call
    assert 2.5 < capacity.counted[1] < 4  # 300 packages: measured at 3.3-3.6


class _Ordering(_Servicer):
    """A servicer whose check-ins asking for one are answered with an order
    (charged for it, as AgentService's are)."""

    @rpc
    async def CheckIn(self, request: agent_pb2.CheckInRequest, context: object) -> str:
        await asyncio.sleep(0)  # the order is recorded off the event loop
        if request.inventory_hash == "order":
            limits.charge(limits.ORDER_UNITS)
        return request.inventory_hash


def test_a_check_in_answered_with_an_order_is_counted_for_the_order_too():
    """A nudged host's check-in is small, but its answer carries a newly
    signed and recorded order: counted as one, the rate measured during an
    emergency was a third of the light-call rate, and the next push started
    at a third of the pace. Concurrent calls are each charged their own."""
    capacity = _Measured()
    servicer = _Ordering(limits.Admission(capacity=capacity))

    async def calls() -> list[str]:
        def unread(inventory_hash: str) -> Any:
            data = agent_pb2.CheckInRequest(inventory_hash=inventory_hash).SerializeToString()
            return Unread(cast(Any, _Context(data)), agent_pb2.CheckInRequest)

        one = servicer.CheckIn(unread("order"), cast(Any, None))
        other = _Ordering(limits.Admission(capacity=capacity))
        two = other.CheckIn(unread("none"), cast(Any, None))
        return list(await asyncio.gather(one, two))

    assert asyncio.run(calls()) == ["order", "none"]
    assert sorted(capacity.counted) == [
        pytest.approx(1.0, abs=0.1),
        pytest.approx(1.0 + limits.ORDER_UNITS, abs=0.1),
    ]
    limits.charge(5.0)  # outside a call: nothing to charge, no error


def test_downloads_shed_keep_the_fixed_spread_delay():
    admission = limits.Admission(max_downloads=1, rng=random.Random(3))
    with (
        admission.admit("h-1", "FetchArtifact"),
        pytest.raises(Overloaded, match="busy") as caught,
        admission.admit("h-2", "FetchArtifact"),
    ):
        pass
    assert limits.RETRY_AFTER_SECONDS <= caught.value.retry_after <= 3 * limits.RETRY_AFTER_SECONDS


def test_enrollments_are_not_limited_per_address():
    admission = limits.Admission()
    with admission.admit(None, "Enroll"), admission.admit(None, "Enroll"):
        assert admission.in_flight == 2


def test_strings_are_bounded_in_nested_repeated_and_map_fields():
    ok = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="h" * limits.MAX_TEXT),
        health=types_pb2.HealthSummary(
            checks=[types_pb2.CheckResult(name="disk", detail="d" * limits.MAX_DETAIL)]
        ),
    )
    limits.check_strings(ok, "request")
    long_name = agent_pb2.CheckInRequest()
    long_name.CopyFrom(ok)
    long_name.health.checks[0].name = "n" * (limits.MAX_TEXT + 1)
    with pytest.raises(UsageError, match=r"request\.health\.checks\.name is 1025 characters"):
        limits.check_strings(long_name, "request")
    labels = agent_pb2.EnrollRequest(labels={"k" * 2000: "v"})
    with pytest.raises(UsageError, match=r"request\.labels key is 2000"):
        limits.check_strings(labels, "request")
    values = agent_pb2.EnrollRequest(labels={"k": "v" * 2000})
    with pytest.raises(UsageError, match=r"request\.labels\[k\] is 2000"):
        limits.check_strings(values, "request")


def test_strings_are_bounded_in_characters_whatever_the_size_shortcut_passes():
    # Each package is well under the limit in bytes but one, deep in the
    # list: it is named. Characters are counted, not bytes: 200 two-byte
    # characters are within a 200-character limit.
    inventory = types_pb2.Inventory(
        packages=[types_pb2.Package(name=f"p{i}", version="1.0", arch="amd64") for i in range(300)]
    )
    inventory.packages[0].source = "é" * limits.MAX_PACKAGE_FIELD
    limits.check_strings(inventory, "inventory", limits.MAX_PACKAGE_FIELD)
    inventory.packages[299].version = "9" * (limits.MAX_PACKAGE_FIELD + 1)
    with pytest.raises(UsageError, match=r"inventory\.packages\.version is 201 characters"):
        limits.check_strings(inventory, "inventory", limits.MAX_PACKAGE_FIELD)


def test_refusals_past_the_limit_turn_a_peer_away_until_the_window_has_room():
    limit = limits.RefusalLimit(limit=3, window=60)
    for t in (0, 1, 2):
        limit.check("10.0.0.5", t)
        assert limit.refused("10.0.0.5", t) == 0
    for t in (3, 4):
        with pytest.raises(Overloaded, match=r"too many refused attempts from 10\.0\.0\.5") as c:
            limit.check("10.0.0.5", t)
    assert c.value.retry_after == pytest.approx(56)  # the first refusal leaves the window at 60
    limit.check("10.0.0.6", 4)  # another peer is unaffected
    limit.check("10.0.0.5", 60.5)
    assert limit.refused("10.0.0.5", 60.5) == 2  # the two turned away, counted once


def test_the_refusal_limit_remembers_a_bounded_number_of_peers():
    limit = limits.RefusalLimit(limit=1, window=60, max_peers=100)
    for i in range(1000):
        limit.refused(f"10.0.{i // 256}.{i % 256}", i / 1000)
    assert len(limit._refused) <= 100


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.5:51234", "10.0.0.5"),
        ("ipv6:[::1]:443", "::1"),
        ("unix:/run/x", "unix:/run/x"),
    ],
)
def test_peer_address(peer, address):
    assert limits.peer_address(peer) == address


def test_downloads_have_their_own_bound_and_leave_room_for_check_ins():
    admission = limits.Admission(max_in_flight=2, max_downloads=1)
    with admission.admit("h-1", "FetchArtifact"):
        with pytest.raises(Overloaded, match="busy"), admission.admit("h-2", "FetchArtifact"):
            pass
        with admission.admit("h-2", "CheckIn"), admission.admit("h-3", "CheckIn"):
            assert admission.in_flight == 3


# -- NUL characters -----------------------------------------------------------------


def _decoded(message: Any) -> Any:
    """``message`` as the controller reads it (`Unread`), from its bytes."""
    data = message.SerializeToString()

    async def read() -> Any:
        return await Unread(cast(Any, _Context(data)), type(message)).read()

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        (agent_pb2.CheckInRequest(facts=types_pb2.HostFacts(hostname="web\x00")),
         "CheckInRequest.facts.hostname"),
        (agent_pb2.CheckInRequest(facts=types_pb2.HostFacts(machine_id="\x00")),
         "CheckInRequest.facts.machine_id"),
        (agent_pb2.CheckInRequest(inventory=types_pb2.Inventory(packages=[
            types_pb2.Package(name="ok", version="1"),
            types_pb2.Package(name="x", version="1\x00")])),
         "CheckInRequest.inventory.packages.version"),
        (agent_pb2.CheckInRequest(health=types_pb2.HealthSummary(checks=[
            types_pb2.CheckResult(name="disk\x00", detail="fine")])),
         "CheckInRequest.health.checks.name"),
        (agent_pb2.CheckInRequest(current_step="APPLY\x00"), "CheckInRequest.current_step"),
        (agent_pb2.EnrollRequest(token="t", labels={"team": "a\x00"}),
         "EnrollRequest.labels[team]"),
        (agent_pb2.EnrollRequest(token="t", labels={"te\x00am": "a"}), "EnrollRequest.labels key"),
    ],
)  # fmt: skip
def test_a_nul_in_a_name_or_an_id_is_refused_naming_the_field(request_, path):
    """Neither store keeps a NUL alike: PostgreSQL refuses it in text, and
    its JSON type any document that escapes it (one host's hostname broke
    every enrollment's machine-id lookup)."""
    with pytest.raises(UsageError) as refused:
        _decoded(request_)
    assert str(refused.value) == f"{path} holds a NUL character (U+0000), which no text here may"


def test_a_nul_in_free_text_is_shown_as_a_replacement_character():
    """A check's output, or why a renewal failed, may hold a NUL from a
    command: a host is not refused for it."""
    sent = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="web-1", cpu_count=0),
        health=types_pb2.HealthSummary(checks=[
            types_pb2.CheckResult(name="app", detail="out: \x00\x01 ok"),
            types_pb2.CheckResult(name="disk", detail="fine"),
        ]),
        renewal_error="tls: \x00",
    )  # fmt: skip
    got = _decoded(sent)
    assert [c.detail for c in got.health.checks] == ["out: \ufffd\x01 ok", "fine"]
    assert got.renewal_error == "tls: \ufffd"
    assert got.facts.hostname == "web-1"
    report = agent_pb2.ReportProgressRequest(reports=[types_pb2.ProgressReport(
        order_id="o-1", step="FAILED", detail="dpkg: \x00", checks=[
            types_pb2.CheckResult(name="c", detail="\x00")])])  # fmt: skip
    scrubbed = _decoded(report).reports[0]
    assert (scrubbed.detail, scrubbed.checks[0].detail) == ("dpkg: \ufffd", "\ufffd")


def test_zero_bytes_that_are_not_text_pass_untouched():
    """A zero byte in a request's bytes is also an empty message present,
    or a packed zero: looked into, and passed as it came."""
    sent = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="web-1"), inventory=types_pb2.Inventory()
    )
    assert b"\x00" in sent.SerializeToString()
    assert _decoded(sent) == sent
