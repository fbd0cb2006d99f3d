"""The failure model: what goes wrong on the simulated fleet, and how long
each step of a work order takes.

It is the ``[failures]`` table of a scenario, or a file of its own with just
that table (``fleetpatch-sim rehearse --failure-model FILE``). Every key is
optional; an unknown key is an error, as in a campaign file.

    [failures]
    precheck = 0.0         probability that a host is unhealthy before patching,
                           or its update cannot be planned: FAILED, nothing changed
    apply = 0.0            the package transaction fails: the agent reverts
    regress = 0.0          health checks fail after the patch: the agent retries
                           them for the campaign's verify.timeout, then reverts
    revert = 0.0           a revert fails (given a revert happens): REVERT_FAILED
    dark = 0.0             the host stops reporting for good once it has applied
                           the patch (the patch took its network or the host down)
    up_to_date = 0.0       already patched: SUCCEEDED at precheck, nothing to do
    reboot_required = 0.0  the update needs a reboot: the agent's own decision
                           (`agent.decide`) then reboots, live-patches, or leaves
                           the host pending reboot (patch.reboot = "never", or
                           the window closed)
    livepatch = 0.0        a live-patch provider has a patch for the host's
                           kernel (stands in for a kernel-only reboot under
                           patch.livepatch "prefer" or "only")

    [failures.durations]   each "30s", or a range "1m-4m" drawn uniformly
    precheck = "5s-20s"    snapshot = "5s-30s"    apply = "30s-3m"
    verify = "10s-1m"      (until the checks pass; never beyond verify.timeout)
    revert = "30s-2m"      reboot = "1m-5m"       livepatch = "10s-1m"

    [[failures.rules]]     other probabilities for matching hosts; rules apply
                           in order, a later one overriding an earlier one
    ring, region, os, package, hosts   selectors, each a value or an array;
                           every given one must match (package: the campaign
                           patches it; hosts: host ids)
    precheck, apply, ...   any probability above

    [[failures.outages]]   hosts that cannot reach the controller
    ring, region, os, hosts  selectors as in rules (none: every host)
    share = 1.0            of the matching hosts, chosen at random
    from = "+30h"          an offset from the start ("+30h") or a date-time
    to = "+36h"            absent: for good (the hosts go dark)

    [[failures.controller]]  trouble with the controller itself
    from, to               as for outages (to is required)
    mode = "down"          "down": nothing reaches it, its tick stops; "slow":
                           orders and reports land ``delay`` late (the hosts'
                           plain check-ins are not delayed: a delay near
                           silent_after makes the rehearsal optimistic)
    delay = "1m"           for "slow"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from fleetpatch.durations import parse_duration
from fleetpatch.tomltable import Table, toml_type

PROBABILITIES = (
    "precheck",
    "apply",
    "regress",
    "revert",
    "dark",
    "up_to_date",
    "reboot_required",
    "livepatch",
)
STEPS = ("precheck", "snapshot", "apply", "verify", "revert", "reboot", "livepatch")
T = TypeVar("T")
_RANGE = re.compile(r"^\s*([^-\s]+)\s*-\s*([^-\s]+)\s*$")


@dataclass(frozen=True)
class Odds:
    """Per-host probabilities, 0..1."""

    precheck: float = 0.0
    apply: float = 0.0
    regress: float = 0.0
    revert: float = 0.0
    dark: float = 0.0
    up_to_date: float = 0.0
    reboot_required: float = 0.0
    livepatch: float = 0.0


@dataclass(frozen=True)
class Span:
    """A duration drawn uniformly between ``low`` and ``high``."""

    low: timedelta
    high: timedelta

    def __str__(self) -> str:
        from fleetpatch.durations import format_duration

        if self.low == self.high:
            return format_duration(self.low)
        return f"{format_duration(self.low)}-{format_duration(self.high)}"


def _span(low: str, high: str | None = None) -> Span:
    return Span(parse_duration(low), parse_duration(high or low))


@dataclass(frozen=True)
class StepDurations:
    precheck: Span = field(default_factory=lambda: _span("5s", "20s"))
    snapshot: Span = field(default_factory=lambda: _span("5s", "30s"))
    apply: Span = field(default_factory=lambda: _span("30s", "3m"))
    verify: Span = field(default_factory=lambda: _span("10s", "1m"))
    revert: Span = field(default_factory=lambda: _span("30s", "2m"))
    reboot: Span = field(default_factory=lambda: _span("1m", "5m"))
    livepatch: Span = field(default_factory=lambda: _span("10s", "1m"))


@dataclass(frozen=True)
class Selector:
    """Which hosts: every given criterion must match; none given matches all."""

    rings: frozenset[int] = frozenset()
    regions: frozenset[str] = frozenset()
    os_ids: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()

    def matches(
        self, host_id: str, ring: int, region: str, os_id: str, packages: frozenset[str]
    ) -> bool:
        return (
            (not self.rings or ring in self.rings)
            and (not self.regions or region in self.regions)
            and (not self.os_ids or os_id in self.os_ids)
            and (not self.packages or bool(self.packages & packages))
            and (not self.hosts or host_id in self.hosts)
        )


@dataclass(frozen=True)
class Rule:
    selector: Selector
    overrides: tuple[tuple[str, float], ...]  # (probability name, value)


@dataclass(frozen=True)
class When:
    """An instant: an offset from the simulation's start, or a date-time."""

    offset: timedelta | None = None
    at: datetime | None = None

    def resolve(self, start: datetime) -> datetime:
        return self.at if self.at is not None else start + (self.offset or timedelta(0))


@dataclass(frozen=True)
class Outage:
    selector: Selector
    share: float
    start: When
    end: When | None  # None: for good


class ControllerMode(StrEnum):
    DOWN = "down"
    SLOW = "slow"


@dataclass(frozen=True)
class ControllerTrouble:
    start: When
    end: When
    mode: ControllerMode
    delay: timedelta


@dataclass(frozen=True)
class FailureModel:
    base: Odds = Odds()
    rules: tuple[Rule, ...] = ()
    durations: StepDurations = StepDurations()
    outages: tuple[Outage, ...] = ()
    controller: tuple[ControllerTrouble, ...] = ()

    def odds_for(
        self, host_id: str, ring: int, region: str, os_id: str, packages: frozenset[str]
    ) -> Odds:
        """The probabilities for one host: the base, then every matching rule."""
        odds = self.base
        for rule in self.rules:
            if rule.selector.matches(host_id, ring, region, os_id, packages):
                odds = replace(odds, **dict(rule.overrides))
        return odds


NO_FAILURES = FailureModel()


def parse_failures(t: Table) -> FailureModel:
    """Read a ``[failures]`` table; raises CampaignError naming the field (the
    callers translate it to ScenarioError)."""
    base = Odds(**dict(_probabilities(t)))
    rules = tuple(_rule(entry) for entry in t.tables("rules"))
    durations = _durations(t.table("durations"))
    outages = tuple(_outage(entry) for entry in t.tables("outages"))
    controller = tuple(_trouble(entry) for entry in t.tables("controller"))
    t.finish()
    return FailureModel(base, rules, durations, outages, controller)


def _probabilities(t: Table) -> list[tuple[str, float]]:
    out = []
    for name in PROBABILITIES:
        value = t.maybe(name, float)
        if value is None:
            continue
        if not 0 <= value <= 1:
            raise t.error(name, f"is a probability: between 0 and 1, not {value}")
        out.append((name, float(value)))
    return out


def _selector(t: Table, *, packages: bool) -> Selector:
    rings = _values(t, "ring", int)
    for ring in rings:
        if not 0 <= ring <= 99:
            raise t.error("ring", f"ring {ring} is out of range (0-99)")
    return Selector(
        rings=frozenset(rings),
        regions=frozenset(_values(t, "region", str)),
        os_ids=frozenset(_values(t, "os", str)),
        packages=frozenset(_values(t, "package", str)) if packages else frozenset(),
        hosts=frozenset(_values(t, "hosts", str)),
    )


def _values(t: Table, key: str, kind: type[T]) -> list[T]:
    value = t.maybe(key, object)
    if value is None:
        return []
    if isinstance(value, list):
        if not value:
            raise t.error(
                key, "is empty, so would match no host (leave it out to match every host)"
            )
        return [v for _, v in t.items(key, kind)]
    one = t.maybe(key, kind)
    return [] if one is None else [one]


def _rule(t: Table) -> Rule:
    selector = _selector(t, packages=True)
    overrides = tuple(_probabilities(t))
    if not overrides:
        raise t.error("", "a rule needs at least one probability (e.g. regress = 1.0)")
    t.finish()
    return Rule(selector, overrides)


def _durations(t: Table) -> StepDurations:
    spans = {name: _span_of(t, name) for name in STEPS if t.has(name)}
    for name in STEPS:
        t.maybe(name, str)
    t.finish()
    return replace(StepDurations(), **spans)


def _span_of(t: Table, key: str) -> Span:
    spelled = t.require(key, str)
    match = _RANGE.fullmatch(spelled)
    parts = (match[1], match[2]) if match else (spelled, spelled)
    try:
        low, high = (parse_duration(p) for p in parts)
    except ValueError as exc:
        raise t.error(key, f"{exc}; or a range such as '1m-4m'") from None
    if high < low:
        raise t.error(key, f"{spelled!r}: the range ends before it starts")
    return Span(low, high)


def required_when(t: Table, key: str) -> When:
    when = parse_when(t, key)
    if when is None:
        raise t.error(key, "is required: an offset such as '+6h', or a date-time")
    return when


def parse_when(t: Table, key: str) -> When | None:
    """``+30h`` (after the start), or a date-time with a UTC offset; None when absent."""
    value = t.maybe(key, object)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().startswith("+"):
        try:
            return When(offset=parse_duration(value.strip()[1:]))
        except ValueError as exc:
            raise t.error(key, str(exc)) from None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise t.error(key, f"{value!r} is neither an offset ('+6h') nor a date-time") from None
    if not isinstance(value, datetime):
        raise t.error(
            key, f"must be an offset such as '+6h' or a date-time, not {toml_type(value)}"
        )
    if value.tzinfo is None:
        raise t.error(key, "must include a UTC offset (e.g. 2026-12-05T00:00:00Z)")
    return When(at=value.astimezone(UTC))


def _outage(t: Table) -> Outage:
    selector = _selector(t, packages=False)
    share = t.get("share", float, 1.0)
    if not 0 < share <= 1:
        raise t.error("share", f"must be above 0 and at most 1, not {share}")
    start = required_when(t, "from")
    end = parse_when(t, "to")
    t.finish()
    return Outage(selector, float(share), start, end)


def _trouble(t: Table) -> ControllerTrouble:
    start = required_when(t, "from")
    end = required_when(t, "to")
    mode = t.choice("mode", ControllerMode, ControllerMode.DOWN)
    delay = t.duration("delay", timedelta(0))
    if mode is ControllerMode.SLOW and delay <= timedelta(0):
        raise t.error("delay", "is required for mode = 'slow' (e.g. '2m')")
    if mode is ControllerMode.DOWN and t.has("delay"):
        raise t.error("delay", "applies to mode = 'slow' only")
    t.finish()
    return ControllerTrouble(start, end, mode, delay)


def check_times(model: FailureModel, start: datetime) -> str:
    """A problem with the model's instants for a run from ``start`` ("" when none):
    an outage or controller trouble that ends before it begins."""
    for index, outage in enumerate(model.outages):
        if outage.end is not None and outage.end.resolve(start) <= outage.start.resolve(start):
            return f"failures.outages[{index}]: 'to' is not after 'from'"
    for index, trouble in enumerate(model.controller):
        if trouble.end.resolve(start) <= trouble.start.resolve(start):
            return f"failures.controller[{index}]: 'to' is not after 'from'"
    return ""
