"""A campaign file: what to patch, on which hosts, and how to roll it out.

`parse_campaign` reads the TOML text into a frozen `CampaignSpec` and raises
`CampaignError` naming the field (``rollout.rings[1].gate.min_success: must
be between 0 and 1``). Unknown keys and tables are errors everywhere: a typo
must never leave a default in force silently. The tables:

    [campaign]          name, description, emergency, deadline, fixes
    [patch]             packages, all_security_updates, exclude, reboot, livepatch,
                        restart_services
    [agent_update]      version, rollback_after (instead of [patch]: a new agent)
    [verify]            timeout, [[verify.checks]]
    [targets]           regions, labels, os, hosts
    [rollout]           region_order, concurrency, region_concurrency,
                        silent_after, silent_threshold, report_timeout,
                        min_agent_version,
                        [rollout.gate] (defaults), [[rollout.rings]] (in order),
                        prometheus, analysis_interval, [[rollout.analysis]]
    [windows]           timezone, weekly, blackout, cutoff (absent: always open)

A campaign has exactly one of [patch] and [agent_update]; everything else
means the same for both. examples/campaigns/openssl.toml documents every
field, examples/campaigns/agent-update.toml the agent update. What the
rollout fields mean when the scheduler applies them is in `scheduler`.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

from fleetpatch.checkspec import Check, parse_check
from fleetpatch.debversion import debian_version, version_key
from fleetpatch.durations import format_duration
from fleetpatch.identity import HOST_ID
from fleetpatch.labels import check_label, check_region, check_ring
from fleetpatch.orderspec import (
    MAX_PACKAGE_NAME,
    MAX_VERSION,
    LivepatchPolicy,
    RebootPolicy,
    RestartPolicy,
)
from fleetpatch.tomltable import Table, toml_type

from controller.api.limits import MAX_CAMPAIGN_BYTES, MAX_CAMPAIGN_TEXT, MAX_TEXT
from controller.api.times import OUT_OF_RANGE, in_range
from controller.campaigns.errors import CampaignError
from controller.campaigns.quota import Quota, count, parse_quota, percent
from controller.campaigns.windows import WeeklyWindow, load_zone, parse_weekly
from controller.vulns import SEVERITIES

HOST_LOCAL = "host-local"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9+._*?\[\]-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:_^-]+$")
_OS_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# Defaults are strict: a file that says nothing about a safety limit gets
# the safest one (no failure tolerated, every host must succeed).
DEFAULT_CONCURRENCY = percent(10)
DEFAULT_SILENT_THRESHOLD = percent(10)
DEFAULT_GATE_MIN_SUCCESS = Fraction(1)
DEFAULT_FAILURE_BUDGET = count(0)
DEFAULT_VERIFY_TIMEOUT = timedelta(minutes=5)  # the agent's own default
DEFAULT_SILENT_AFTER = timedelta(minutes=30)
REPORT_TIMEOUT_MARGIN = timedelta(minutes=30)  # default report_timeout: verify.timeout + this
DEFAULT_ROLLBACK_AFTER = timedelta(minutes=10)  # agent updates: the watchdog's delay


class RegionOrder(StrEnum):
    SEQUENTIAL = "sequential"  # within a ring, one region at a time, smallest first
    PARALLEL = "parallel"  # within a ring, every region at once


@dataclass(frozen=True)
class PackageTarget:
    name: str
    min_version: str = ""  # empty: the newest available


@dataclass(frozen=True)
class PatchSpec:
    packages: tuple[PackageTarget, ...]
    all_security_updates: bool
    exclude: tuple[str, ...]  # names or glob patterns never to touch
    reboot: RebootPolicy
    livepatch: LivepatchPolicy
    restart_services: RestartPolicy = RestartPolicy.AUTO
    baseline: Baseline | None = None


@dataclass(frozen=True)
class Baseline:
    """A patch baseline (SSM's auto-approval rule): on each host, the fixes
    of the vulnerabilities it is exposed to of at least this severity,
    disclosed (or first seen) at least this long ago, resolved when the
    host is assigned (controller/store/vulns.py baseline_packages)."""

    min_severity: str
    older_than: timedelta


@dataclass(frozen=True)
class AgentUpdateSpec:
    """Install a published agent release (`fleetpatch release publish`)."""

    version: str  # PEP 440, as the release was published
    # How long the new agent has to start, check in and pass its checks
    # before a watchdog on the host reinstalls the version it replaced.
    rollback_after: timedelta


@dataclass(frozen=True)
class VerifySpec:
    timeout: timedelta  # how long the agent retries its checks after patching
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class TargetSpec:
    """Which hosts: every given criterion must match; an empty one matches all."""

    regions: frozenset[str]
    labels: tuple[tuple[str, frozenset[str]], ...]  # key -> any of these values
    os_ids: frozenset[str]
    hosts: frozenset[str] = frozenset()  # host ids (`campaign plan` lists the exposed)


@dataclass(frozen=True)
class Gate:
    """What a ring must meet before the next ring opens."""

    min_success: Fraction  # succeeded / finished, 0..1
    bake: timedelta  # after the ring finished
    failure_budget: Quota  # of the ring's eligible hosts; exceeding it halts


@dataclass(frozen=True)
class RingStage:
    ring: int
    concurrency: Quota  # hosts in flight in the whole ring
    region_concurrency: Quota | None  # hosts in flight per region of the ring
    gate: Gate


_ANALYSIS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Analysis:
    """A live metric that must hold before the rings it guards are promoted
    and while they run and bake: ``query`` (PromQL, asked of the rollout's
    Prometheus) must stay at or below ``max`` (or at or above ``min``); a
    breach halts the campaign, no answer holds the promotion."""

    name: str
    query: str
    max: float | None
    min: float | None
    rings: tuple[int, ...]  # the rings it guards

    def holds(self, value: float) -> bool:
        if self.max is not None and value > self.max:
            return False
        return self.min is None or value >= self.min

    @property
    def threshold(self) -> str:
        return f"max {self.max:g}" if self.max is not None else f"min {self.min:g}"


@dataclass(frozen=True)
class RolloutSpec:
    rings: tuple[RingStage, ...]  # in the order they open
    region_order: RegionOrder
    silent_after: timedelta  # not seen this long: silent (or unreachable)
    silent_threshold: Quota  # of a ring's eligible hosts; exceeding it halts
    report_timeout: timedelta  # in flight without a report this long: timed out
    min_agent_version: str = ""  # hosts with an older agent wait (agent_outdated)
    prometheus: str = ""  # the Prometheus the analyses ask (its base URL)
    analysis: tuple[Analysis, ...] = ()
    analysis_interval: timedelta = timedelta(seconds=30)  # how often each is asked

    @functools.cached_property
    def positions(self) -> dict[int, int]:
        """Ring number -> its place in the order."""
        return {stage.ring: index for index, stage in enumerate(self.rings)}


@dataclass(frozen=True)
class WindowPolicy:
    timezone: str  # an IANA name, or HOST_LOCAL
    weekly: tuple[WeeklyWindow, ...]
    blackout: frozenset[date]  # local days in `timezone` with no patching
    cutoff: timedelta  # no patch starts this close to a window's end


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    description: str
    emergency: bool  # overrides windows, never concurrency, gates or halts
    deadline: datetime | None  # UTC; no new assignment at or after it
    patch: PatchSpec | None  # exactly one of patch and agent_update is set
    verify: VerifySpec
    targets: TargetSpec
    rollout: RolloutSpec
    windows: WindowPolicy | None  # None: always open
    source: str = ""
    agent_update: AgentUpdateSpec | None = None
    # Vulnerability ids the campaign fixes (`campaign plan` fills it in):
    # `vulns show` lists the campaign under each.
    fixes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """What the campaign does, for people: "patch" or "agent-update 0.2.0"."""
        if self.agent_update is not None:
            return f"agent-update {self.agent_update.version}"
        return "patch"


# Whether the sizes and lengths of a file are checked (parse_campaign's
# ``bounded``): read by `_bound`, deep in the readers.
_BOUNDED: ContextVar[bool] = ContextVar("campaign_bounds", default=True)


def parse_campaign(text: str, source: str, *, bounded: bool = True) -> CampaignSpec:
    """Parse a campaign file; raises CampaignError naming ``source`` and the field.

    The controller parses what CreateCampaign sends with this too, so a
    file refused here is refused there, whoever the client.
    ``bounded=False``: a campaign the controller stored already, read
    again; the limits on sizes and lengths, there to refuse new input, are
    not applied, so that one added since never makes a stored campaign
    unreadable (and the campaign tick with it)."""
    token = _BOUNDED.set(bounded)
    try:
        return _parse_campaign(text, source)
    finally:
        _BOUNDED.reset(token)


def _parse_campaign(text: str, source: str) -> CampaignSpec:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CAMPAIGN_BYTES and _BOUNDED.get():
        raise CampaignError(
            "", f"is {size} bytes long; a campaign file is at most {MAX_CAMPAIGN_BYTES}", source
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError("", f"not valid TOML: {exc}", source) from None
    root = Table(doc, "", source, CampaignError)
    head = root.table("campaign")
    verify = _verify(root.table("verify"))
    windows = root.table("windows")
    patch, update = root.table("patch"), root.table("agent_update")
    kinds = [name for name in ("patch", "agent_update") if root.has(name)]
    spec = CampaignSpec(
        name=_name(head),
        description=_text(head, "description", MAX_CAMPAIGN_TEXT),
        emergency=head.get("emergency", bool, False),
        deadline=_deadline(head),
        patch=_patch(patch) if kinds == ["patch"] else None,
        agent_update=_agent_update(update, verify.timeout) if kinds == ["agent_update"] else None,
        verify=verify,
        targets=_targets(root.table("targets")),
        rollout=_rollout(root.table("rollout"), verify.timeout),
        windows=_windows(windows) if root.has("windows") else None,
        source=source,
        fixes=_fixes(head),
    )
    head.finish()
    root.finish()  # first: a misspelt [agent_update] is named, with its likely spelling
    if len(kinds) != 1:
        raise root.error(
            "agent_update" if kinds else "",
            "a campaign has exactly one of [patch] (packages to update) and [agent_update] "
            f"(a new agent version); this one has {'both' if kinds else 'neither'}",
        )
    return spec


def _name(t: Table) -> str:
    name = t.maybe("name", str)
    if name is None:
        raise t.error("name", "is required (lowercase letters, digits and '-')")
    _bound(t, t.field("name"), name, 63)
    if not _NAME.fullmatch(name):
        raise t.error("name", f"{name!r} must be lowercase letters, digits and '-' (1-63)")
    return name


def _text(t: Table, key: str, limit: int) -> str:
    """The string ``key`` ("" when absent), at most ``limit`` characters."""
    value = t.get(key, str, "")
    _bound(t, t.field(key), value, limit)
    return value


def _bound(t: Table, where: str, value: str, limit: int) -> None:
    """Refuse ``value`` (at ``where``) when longer than ``limit``: before
    any message quotes it."""
    if len(value) > limit and _BOUNDED.get():
        raise t.at(where, f"is {len(value)} characters long, at most {limit}")


def _finite(t: Table, key: str) -> float | None:
    """The number ``key`` when present; nan and inf are refused, since every
    comparison with nan is false (a gate that never trips)."""
    value = t.maybe(key, float)
    if value is not None and not math.isfinite(value):
        raise t.error(key, f"must be a finite number, not {value}")
    return value


def _fixes(t: Table) -> tuple[str, ...]:
    fixes = t.strings("fixes")
    for index, vuln_id in enumerate(fixes):
        _bound(t, f"{t.field('fixes')}[{index}]", vuln_id, 128)
        if not vuln_id or len(vuln_id) > 128 or not vuln_id.isprintable() or " " in vuln_id:
            raise t.at(f"{t.field('fixes')}[{index}]", f"{vuln_id!r} is not a vulnerability id")
    return tuple(fixes)


def _deadline(t: Table) -> datetime | None:
    value = t.maybe("deadline", object)
    if value is None:
        return None
    if isinstance(value, str):
        spelled = value
        try:
            value = datetime.fromisoformat(spelled)
        except ValueError:
            raise t.error("deadline", f"{spelled[:64]!r} is not a date-time") from None
    if not isinstance(value, datetime):
        raise t.error("deadline", f"must be a date-time, not {toml_type(value)}")
    if value.tzinfo is None:
        raise t.error(
            "deadline", "must include a UTC offset (e.g. 2025-02-01T00:00:00Z or ...+01:00)"
        )
    if not in_range(value):
        raise t.error("deadline", f"{value.isoformat()} {OUT_OF_RANGE}")
    return value.astimezone(UTC)


def _quota(t: Table, key: str, *, minimum: int) -> Quota | None:
    value = t.maybe(key, object)
    if value is None:
        return None
    try:
        return parse_quota(value, minimum)
    except ValueError as exc:
        raise t.error(key, str(exc)) from None


def _patch(t: Table) -> PatchSpec:
    packages: list[PackageTarget] = []
    for where, item in t.items("packages", object):
        package = _package(t, where, item)
        if any(p.name == package.name for p in packages):
            raise t.at(where, f"package {package.name!r} is listed twice")
        packages.append(package)
    security = t.get("all_security_updates", bool, False)
    baseline = _baseline(t.table("baseline")) if t.has("baseline") else None
    if not packages and not security and baseline is None:
        raise t.error(
            "packages",
            "names no package, all_security_updates is false and there is no baseline: "
            "nothing to patch",
        )
    exclude = t.strings("exclude")
    for index, pattern in enumerate(exclude):
        _bound(t, f"{t.field('exclude')}[{index}]", pattern, MAX_PACKAGE_NAME)
        if not _PATTERN.fullmatch(pattern):
            raise t.at(f"{t.field('exclude')}[{index}]", f"{pattern!r} is not a name or glob")
    reboot = t.choice("reboot", RebootPolicy, RebootPolicy.IF_REQUIRED)
    livepatch = t.choice("livepatch", LivepatchPolicy, LivepatchPolicy.NEVER)
    if livepatch is LivepatchPolicy.ONLY and reboot is RebootPolicy.ALWAYS:
        raise t.error("livepatch", "'only' (never reboot) contradicts reboot = 'always'")
    restart = t.choice("restart_services", RestartPolicy, RestartPolicy.AUTO)
    t.finish()
    return PatchSpec(tuple(packages), security, exclude, reboot, livepatch, restart, baseline)


def _baseline(t: Table) -> Baseline:
    severity = t.require("min_severity", str)
    if severity not in SEVERITIES:
        raise t.error("min_severity", f"{severity!r}: one of {', '.join(SEVERITIES)}")
    older_than = t.duration("older_than", timedelta(0))
    t.finish()
    return Baseline(severity, older_than)


def _agent_update(t: Table, verify_timeout: timedelta) -> AgentUpdateSpec:
    version = t.require("version", str)
    _bound(t, t.field("version"), version, MAX_VERSION)
    try:
        debian_version(version)
    except ValueError as exc:
        raise t.error("version", str(exc)) from None
    given = t.has("rollback_after")
    rollback_after = t.duration("rollback_after", DEFAULT_ROLLBACK_AFTER, positive=True)
    if rollback_after <= verify_timeout:
        raise t.error(
            "rollback_after",
            f"{format_duration(rollback_after)}{'' if given else ' (the default)'} must be "
            f"longer than verify.timeout "
            f"({format_duration(verify_timeout)}), or the watchdog would put the old agent "
            "back while the new one may still be passing its checks",
        )
    t.finish()
    return AgentUpdateSpec(version, rollback_after)


def _package(t: Table, where: str, item: object) -> PackageTarget:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict):
        raise t.at(where, f"must be a package name or a table, not {toml_type(item)}")
    entry = t.child(item, where)
    name = entry.require("name", str)
    if len(name) > MAX_PACKAGE_NAME:
        raise entry.error("name", f"is {len(name)} characters long, at most {MAX_PACKAGE_NAME}")
    if not _PACKAGE.fullmatch(name):
        raise entry.error("name", f"{name!r} is not a package name")
    version = entry.get("min_version", str, "")
    if len(version) > MAX_VERSION:
        raise entry.error(
            "min_version", f"is {len(version)} characters long, at most {MAX_VERSION}"
        )
    if version and not _VERSION.fullmatch(version):
        raise entry.error("min_version", f"{version!r} is not a package version")
    entry.finish()
    return PackageTarget(name, version)


def _verify(t: Table) -> VerifySpec:
    timeout = t.duration("timeout", DEFAULT_VERIFY_TIMEOUT, positive=True)
    checks = tuple(parse_check(entry) for entry in t.tables("checks"))
    for index, check in enumerate(checks):
        if any(other.name == check.name for other in checks[:index]):
            raise t.at(f"{t.field('checks')}[{index}].name", f"{check.name!r} is used twice")
    t.finish()
    return VerifySpec(timeout, checks)


def _targets(t: Table) -> TargetSpec:
    regions = t.strings("regions")
    for index, region in enumerate(regions):
        _bound(t, f"{t.field('regions')}[{index}]", region, 63)
        try:
            check_region(region)
        except ValueError as exc:
            raise t.at(f"{t.field('regions')}[{index}]", str(exc)) from None
    selectors = _labels(t.table("labels"))
    os_ids = t.strings("os")
    for index, os_id in enumerate(os_ids):
        _bound(t, f"{t.field('os')}[{index}]", os_id, MAX_TEXT)
        if not _OS_ID.fullmatch(os_id):
            raise t.at(f"{t.field('os')}[{index}]", f"{os_id!r} is not an os id (e.g. 'debian')")
    hosts = t.strings("hosts")
    for index, host_id in enumerate(hosts):
        _bound(t, f"{t.field('hosts')}[{index}]", host_id, 64)
        if not HOST_ID.fullmatch(host_id):
            raise t.at(f"{t.field('hosts')}[{index}]", f"{host_id!r} is not a host id (h-...)")
    t.finish()
    return TargetSpec(frozenset(regions), selectors, frozenset(os_ids), frozenset(hosts))


def _labels(labels: Table) -> tuple[tuple[str, frozenset[str]], ...]:
    selectors: list[tuple[str, frozenset[str]]] = []
    for key in sorted(labels.keys()):
        if len(key) > 63:
            raise labels.error("", f"a label key is {len(key)} characters long, at most 63")
        value = labels.maybe(key, object)
        if isinstance(value, str):
            values: tuple[str, ...] = (value,)
        elif isinstance(value, list) and value:
            values = labels.strings(key)
        else:
            raise labels.error(key, "must be a value or a non-empty array of values")
        try:
            for one in values:
                _bound(labels, labels.field(key), one, 63)
                check_label(key, one)
        except ValueError as exc:
            raise labels.error(key, str(exc)) from None
        selectors.append((key, frozenset(values)))
    labels.finish()
    return tuple(selectors)


def _rollout(t: Table, verify_timeout: timedelta) -> RolloutSpec:
    order = t.choice("region_order", RegionOrder, RegionOrder.SEQUENTIAL)
    concurrency = _quota(t, "concurrency", minimum=1) or DEFAULT_CONCURRENCY
    region_concurrency = _quota(t, "region_concurrency", minimum=1)
    default_gate = _gate(t.table("gate"), None)
    stages: list[RingStage] = []
    for entry in t.tables("rings"):
        ring = entry.require("ring", int)
        try:
            check_ring(ring)
        except ValueError as exc:
            raise entry.error("ring", str(exc)) from None
        if any(stage.ring == ring for stage in stages):
            raise entry.error("ring", f"ring {ring} is listed twice")
        stages.append(
            RingStage(
                ring=ring,
                concurrency=_quota(entry, "concurrency", minimum=1) or concurrency,
                region_concurrency=(
                    _quota(entry, "region_concurrency", minimum=1) or region_concurrency
                ),
                gate=_gate(entry.table("gate"), default_gate),
            )
        )
        entry.finish()
    if not stages:
        raise t.error("rings", "is required: at least one [[rollout.rings]] entry, in order")
    report_default = verify_timeout + REPORT_TIMEOUT_MARGIN
    report_timeout = t.duration("report_timeout", report_default, positive=True)
    if report_timeout <= verify_timeout:
        raise t.error(
            "report_timeout",
            f"must be longer than verify.timeout ({format_duration(verify_timeout)}), "
            "or hosts still verifying would count as timed out",
        )
    spec = RolloutSpec(
        rings=tuple(stages),
        region_order=order,
        silent_after=t.duration("silent_after", DEFAULT_SILENT_AFTER, positive=True),
        silent_threshold=_quota(t, "silent_threshold", minimum=0) or DEFAULT_SILENT_THRESHOLD,
        report_timeout=report_timeout,
        min_agent_version=_min_agent_version(t),
        **_analyses(t, [stage.ring for stage in stages]),
    )
    t.finish()
    return spec


def _analyses(t: Table, rings: list[int]) -> dict[str, Any]:
    """prometheus, analysis_interval and [[rollout.analysis]]."""
    url = _text(t, "prometheus", MAX_TEXT)
    entries = t.tables("analysis")
    if url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise t.error("prometheus", f"must be an http:// or https:// URL, not {url!r}")
    if entries and not url:
        raise t.error("prometheus", "is required: [[rollout.analysis]] asks it its queries")
    interval = t.duration("analysis_interval", timedelta(seconds=30), positive=True)
    found: list[Analysis] = []
    for entry in entries:
        name = entry.require("name", str)
        _bound(entry, entry.field("name"), name, 64)
        if not _ANALYSIS_NAME.fullmatch(name):
            raise entry.error("name", f"{name!r}: use letters, digits, '-' and '_'")
        if any(a.name == name for a in found):
            raise entry.error("name", f"analysis {name!r} is listed twice")
        query = entry.require("query", str).strip()
        _bound(entry, entry.field("query"), query, MAX_CAMPAIGN_TEXT)
        if not query:
            raise entry.error("query", "is empty")
        high, low = _finite(entry, "max"), _finite(entry, "min")
        if (high is None) == (low is None):
            raise entry.error("max", "give exactly one of max and min (the threshold)")
        guarded = [r for _, r in entry.items("rings", int)] or rings[1:] or rings
        unknown = sorted(set(guarded) - set(rings))
        if unknown:
            raise entry.error("rings", f"ring(s) {unknown} are not in [[rollout.rings]]")
        found.append(Analysis(name, query, high, low, tuple(sorted(set(guarded)))))
        entry.finish()
    return {"prometheus": url.rstrip("/"), "analysis": tuple(found), "analysis_interval": interval}


def _min_agent_version(t: Table) -> str:
    value = _text(t, "min_agent_version", MAX_VERSION)
    if not value:
        return ""
    try:
        version_key(value)
    except ValueError as exc:
        raise t.error("min_agent_version", str(exc)) from None
    return value


def _gate(t: Table, default: Gate | None) -> Gate:
    base = default or Gate(DEFAULT_GATE_MIN_SUCCESS, timedelta(0), DEFAULT_FAILURE_BUDGET)
    min_success = base.min_success
    value = _finite(t, "min_success")
    if value is not None:
        if not 0 <= value <= 1:
            raise t.error("min_success", f"must be between 0 and 1, not {value}")
        min_success = Fraction(repr(value))  # the decimal as written: 0.95, not 0.9499...
    gate = Gate(
        min_success=min_success,
        bake=t.duration("bake", base.bake),
        failure_budget=_quota(t, "failure_budget", minimum=0) or base.failure_budget,
    )
    t.finish()
    return gate


def _windows(t: Table) -> WindowPolicy:
    timezone = t.require("timezone", str)
    _bound(t, t.field("timezone"), timezone, MAX_TEXT)
    if timezone != HOST_LOCAL and load_zone(timezone) is None:
        raise t.error(
            "timezone",
            f"unknown time zone {timezone!r} (use an IANA name such as 'Europe/Berlin', "
            f"or {HOST_LOCAL!r})",
        )
    weekly: list[WeeklyWindow] = []
    for where, spelled in t.items("weekly", str):
        _bound(t, where, spelled, MAX_TEXT)
        try:
            weekly.append(parse_weekly(spelled))
        except ValueError as exc:
            raise t.at(where, str(exc)) from None
    if not weekly:
        raise t.error("weekly", "needs at least one window, e.g. ['Sat,Sun 02:00-05:00']")
    blackout = frozenset(_date(t, where, value) for where, value in t.items("blackout", object))
    cutoff = t.duration("cutoff", timedelta(0))
    for window in weekly:
        if cutoff >= window.length:
            raise t.error(
                "cutoff",
                f"{format_duration(cutoff)} is not shorter than the window {window.text!r} "
                f"({format_duration(window.length)}), which could then never be used",
            )
    t.finish()
    return WindowPolicy(timezone, tuple(weekly), blackout, cutoff)


def _date(t: Table, where: str, value: object) -> date:
    if isinstance(value, str):
        spelled = value
        try:
            value = date.fromisoformat(spelled)
        except ValueError:
            raise t.at(where, f"{spelled[:40]!r} is not a date (write 2025-12-24)") from None
    if not isinstance(value, date) or isinstance(value, datetime):
        raise t.at(where, f"must be a date such as 2025-12-24, not {toml_type(value)}")
    if not in_range(value):
        raise t.at(where, f"{value.isoformat()} {OUT_OF_RANGE}")
    return value
