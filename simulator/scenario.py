"""A scenario file: a fleet, a campaign file and a failure model, rehearsed
together from a fixed start. `load_scenario` reads one and raises
ScenarioError naming the file and the field; the campaign file it names is
read by the controller's own parser (CampaignError). Unknown keys and
tables are errors everywhere. The tables (examples/scenarios/*.toml show
every field):

    [scenario]
    name          required: lowercase letters, digits and '-'
    description   optional
    campaign      required: path of a campaign file, relative to this file
                  (the file `fleetpatch campaign create` takes)
    start         required: date-time with a UTC offset; virtual time starts here
    duration      default "7d": the time the campaign has (the report says
                  whether it finished within it)
    horizon       default = duration: how long to go on simulating, to say when
                  it would finish; not shorter than duration
    seed          default 1 (`--seed` overrides)

    [fleet]
    hosts             required (`--hosts` overrides)
    checkin_interval  default "5m": the controller's [checkin] interval
    campaign_tick     default "10s": the controller's [campaigns] tick
    offline           default 0: share of hosts offline throughout (0..1 or "N%")
    [[fleet.regions]] name, timezone (IANA), share (default 1)
    [[fleet.rings]]   ring, share
    [[fleet.os]]      id, share (default: every host "debian")
    [fleet.labels]    key = "value" (every host) or key = { value = share, ... }

    [operator]
    resume_after  a person resumes a halted campaign this long after it halted
                  (absent: nobody does, the rehearsal ends with the halt)
    resumes       default 1: at most this many times

    [analysis]    NAME = [["0m", 0.01], ["3h", 0.2], ...]: the value the campaign's
                  [[rollout.analysis]] NAME reads from each offset on (a step
                  series; before its first point, its first value). An
                  analysis with no series here is rehearsed as holding.

    [failures]    the failure model; see `failures`
    [expect]      the expected outcome, checked by `--check` and the tests; see `expect`

Shares are relative weights: numbers, or strings such as "2.5%".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetpatch.durations import parse_duration
from fleetpatch.labels import check_label, check_region
from fleetpatch.tomltable import Table, toml_type

from controller.api.times import OUT_OF_RANGE, in_range
from controller.campaigns import CampaignSpec, parse_campaign
from controller.campaigns.errors import CampaignError
from controller.campaigns.windows import load_zone

from .errors import ScenarioError
from .expect import Expectations, parse_expect
from .failures import NO_FAILURES, FailureModel, check_times, parse_failures
from .fleet import FleetSpec, RegionSpec

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SHARE = re.compile(r"^(\d+(\.\d+)?)%$")
MAX_HOSTS = 2_000_000
Series = tuple[tuple[timedelta, float], ...]  # (offset from the start, value), growing


@dataclass(frozen=True)
class Operator:
    resume_after: timedelta | None = None
    resumes: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    source: str
    campaign_path: Path
    campaign: CampaignSpec
    start: datetime
    duration: timedelta
    horizon: timedelta
    seed: int
    fleet: FleetSpec
    failures: FailureModel
    operator: Operator
    expect: Expectations
    analysis: Mapping[str, Series]  # [[rollout.analysis]] name -> what it reads


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file and the campaign file it names.

    Raises ScenarioError (this file), CampaignError (the campaign file).
    """
    return parse_scenario(read_file(path), str(path), path.parent)


def read_file(path: Path) -> str:
    """The text of a file the simulator is given (a scenario, a campaign,
    a failure model); ScenarioError naming it when it cannot be read or is
    not UTF-8 text, as `fleetpatch campaign create` says for its file."""
    try:
        return path.read_text()
    except OSError as exc:
        raise ScenarioError("", f"cannot read it: {exc.strerror or exc}", str(path)) from None
    except UnicodeDecodeError:
        raise ScenarioError("", "cannot read it: not a text file (UTF-8)", str(path)) from None


def parse_scenario(text: str, source: str, base: Path) -> Scenario:
    """Parse scenario text; ``base`` is where relative campaign paths start."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"not valid TOML: {exc}", source) from None
    try:
        return _scenario(Table(doc, "", source, CampaignError), source, base)
    except CampaignError as exc:
        if exc.source != source:
            raise  # from the campaign file: its own message
        raise ScenarioError(exc.field, exc.problem, source) from None


def _scenario(root: Table, source: str, base: Path) -> Scenario:
    head = root.table("scenario")
    name = head.require("name", str)
    if not _NAME.fullmatch(name):
        raise head.error("name", f"{name!r} must be lowercase letters, digits and '-' (1-63)")
    campaign_path, campaign = _campaign(head, base)
    start = _start(head)
    duration = head.duration("duration", timedelta(days=7), positive=True)
    horizon = head.duration("horizon", duration, positive=True)
    if horizon < duration:
        raise head.error("horizon", "must not be shorter than duration")
    seed = head.get("seed", int, 1)
    description = head.get("description", str, "")
    head.finish()
    fleet = _fleet(root.table("fleet"))
    failures = parse_failures(root.table("failures")) if root.has("failures") else NO_FAILURES
    problem = check_times(failures, start)
    if problem:
        raise ScenarioError(problem.split(":")[0], problem.split(": ", 1)[1], source)
    operator = _operator(root.table("operator"))
    expect = parse_expect(root.table("expect"))
    analysis = _analysis(root.table("analysis"), campaign)
    root.finish()
    return Scenario(
        name, description, source, campaign_path, campaign, start, duration, horizon, seed,
        fleet, failures, operator, expect, analysis,
    )  # fmt: skip


def _analysis(t: Table, campaign: CampaignSpec) -> dict[str, Series]:
    names = {a.name for a in campaign.rollout.analysis}
    found: dict[str, Series] = {}
    given = t.keys()
    for name in given:
        if name not in names:
            raise t.error(name, f"the campaign has no [[rollout.analysis]] named {name!r}")
        points: list[tuple[timedelta, float]] = []
        for where, point in t.items(name, list):
            at, value = point if len(point) == 2 else (None, None)
            if (
                not isinstance(at, str)
                or isinstance(value, bool)
                or not isinstance(value, int | float)
            ):
                raise t.at(where, 'must be ["OFFSET", VALUE], such as ["2h", 0.05]')
            try:
                offset = parse_duration(at)
            except ValueError as exc:
                raise t.at(where, str(exc)) from None
            if points and offset <= points[-1][0]:
                raise t.at(where, "offsets must grow from one point to the next")
            points.append((offset, float(value)))
        if not points:
            raise t.error(name, "needs at least one point")
        found[name] = tuple(points)
    return found


def _campaign(t: Table, base: Path) -> tuple[Path, CampaignSpec]:
    spelled = t.require("campaign", str)
    path = (base / spelled).resolve() if not Path(spelled).is_absolute() else Path(spelled)
    try:
        text = path.read_text()
    except OSError as exc:
        raise t.error("campaign", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise t.error("campaign", f"cannot read {path}: not a text file (UTF-8)") from None
    return path, parse_campaign(text, str(path))


def _start(t: Table) -> datetime:
    value = t.maybe("start", object)
    if value is None:
        raise t.error("start", "is required: a date-time with a UTC offset (2026-12-05T00:00:00Z)")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise t.error("start", f"{value!r} is not a date-time") from None
    if not isinstance(value, datetime):
        raise t.error("start", f"must be a date-time, not {toml_type(value)}")
    if value.tzinfo is None:
        raise t.error("start", "must include a UTC offset (e.g. 2026-12-05T00:00:00Z)")
    if not in_range(value):
        raise t.error("start", f"{value.isoformat()} {OUT_OF_RANGE}")
    return value.astimezone(UTC)


def share_of(t: Table, key: str, default: float, *, at_most_one: bool = False) -> float:
    """A share: a number, or a string such as "2.5%" (read as 0.025 when
    ``at_most_one``, else as the weight 2.5)."""
    value = t.maybe(key, object)
    if value is None:
        return default
    if isinstance(value, str):
        match = _SHARE.fullmatch(value.strip())
        if not match:
            raise t.error(key, f"{value!r} is neither a number nor a percentage such as '5%'")
        number = float(match[1]) / (100 if at_most_one else 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise t.error(key, f"must be a number or a percentage, not {toml_type(value)}")
    if number < 0 or (at_most_one and number > 1):
        bounds = "between 0 and 1 (or 0%-100%)" if at_most_one else "at least 0"
        raise t.error(key, f"must be {bounds}, not {value!r}")
    return number


def _fleet(t: Table) -> FleetSpec:
    hosts = t.require("hosts", int)
    if not 1 <= hosts <= MAX_HOSTS:
        raise t.error("hosts", f"must be between 1 and {MAX_HOSTS:,}, not {hosts}")
    interval = t.duration("checkin_interval", timedelta(minutes=5), positive=True)
    tick = t.duration("campaign_tick", timedelta(seconds=10), positive=True)
    offline = share_of(t, "offline", 0.0, at_most_one=True)
    regions = tuple(_region(entry) for entry in t.tables("regions"))
    if not regions:
        raise t.error("regions", "needs at least one [[fleet.regions]] (name, timezone, share)")
    _unique(t, "regions", [r.name for r in regions])
    rings = tuple(_ring(entry) for entry in t.tables("rings"))
    if not rings:
        raise t.error("rings", "needs at least one [[fleet.rings]] (ring, share)")
    _unique(t, "rings", [str(r) for r, _ in rings])
    os_mix = tuple(_os(entry) for entry in t.tables("os")) or (("debian", 1.0),)
    _unique(t, "os", [o for o, _ in os_mix])
    labels = _labels(t.table("labels"))
    t.finish()
    for field, mix in (("regions", [r.weight for r in regions]), ("rings", [w for _, w in rings]),
                       ("os", [w for _, w in os_mix])):  # fmt: skip
        if not sum(mix) > 0:
            raise t.error(field, "the shares add up to 0")
    return FleetSpec(hosts, regions, rings, os_mix, labels, interval, tick, offline)


def _unique(t: Table, key: str, names: list[str]) -> None:
    for index, name in enumerate(names):
        if name in names[:index]:
            raise t.at(f"{t.field(key)}[{index}]", f"{name!r} is listed twice")


def _region(t: Table) -> RegionSpec:
    name = t.require("name", str)
    try:
        check_region(name)
    except ValueError as exc:
        raise t.error("name", str(exc)) from None
    zone = t.require("timezone", str)
    if load_zone(zone) is None:
        raise t.error("timezone", f"unknown time zone {zone!r} (an IANA name, e.g. 'Asia/Kolkata')")
    weight = share_of(t, "share", 1.0)
    t.finish()
    return RegionSpec(name, zone, weight)


def _ring(t: Table) -> tuple[int, float]:
    ring = t.require("ring", int)
    if not 0 <= ring <= 99:
        raise t.error("ring", f"ring {ring} is out of range (0-99)")
    share = share_of(t, "share", 1.0)
    t.finish()
    return ring, share


def _os(t: Table) -> tuple[str, float]:
    os_id = t.require("id", str)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", os_id):
        raise t.error("id", f"{os_id!r} is not an os id (e.g. 'debian')")
    share = share_of(t, "share", 1.0)
    t.finish()
    return os_id, share


def _labels(t: Table) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    out = []
    for key in sorted(t.keys()):
        value = t.maybe(key, object)
        if isinstance(value, str):
            mix: tuple[tuple[str, float], ...] = ((value, 1.0),)
        elif isinstance(value, dict) and value:
            inner = t.table(key)
            mix = tuple((v, share_of(inner, v, 1.0)) for v in sorted(inner.keys()))
            inner.finish()
        else:
            raise t.error(key, "must be a value, or a table of values and their shares")
        try:
            for one, _ in mix:
                check_label(key, one)
        except ValueError as exc:
            raise t.error(key, str(exc)) from None
        out.append((key, mix))
    t.finish()
    return tuple(out)


def _operator(t: Table) -> Operator:
    after = t.duration("resume_after", timedelta(0))
    resumes = t.get("resumes", int, 1 if after else 0)
    if resumes < 0:
        raise t.error("resumes", "must not be negative")
    if resumes and not after:
        raise t.error("resumes", "needs resume_after (how long after a halt a person resumes)")
    t.finish()
    return Operator(after or None, resumes if after else 0)
