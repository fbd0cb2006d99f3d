"""What to tell a person about a campaign before it runs: what is valid
but almost certainly not meant (issue 18: a first campaign that "completed"
with 0 hosts, and a rehearsal reporting 100 % coverage of nothing).

Pure: the spec, the time, and how many hosts it targets. `fleetpatch
campaign create` and `fleetpatch-sim rehearse` both say these, from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from fleetpatch.agentrelease import Family

from controller.campaigns.spec import CampaignSpec

#: A local day is over everywhere on earth (UTC-12 to UTC+14) once this
#: much time has passed since its UTC midnight.
DAY_OVER_EVERYWHERE = timedelta(days=1, hours=12)


def advice(spec: CampaignSpec, now: datetime, targeted: int) -> list[str]:
    """Warnings, one line each (empty: nothing to say). `targeted`: how many
    enrolled hosts the campaign targets now (`is_targeted`)."""
    lines = []
    if spec.deadline is not None and spec.deadline <= now:
        lines.append(
            f"the deadline {spec.deadline.strftime('%Y-%m-%dT%H:%M:%SZ')} is in the past: "
            "no host will be assigned (change [campaign] deadline)"
        )
    if spec.windows is not None:
        past = sorted(day for day in spec.windows.blackout if _over_everywhere(day, now))
        if past:
            shown = ", ".join(d.isoformat() for d in past[:3]) + (", ..." if len(past) > 3 else "")
            lines.append(
                f"{len(past)} blackout date(s) in the past, which block nothing: {shown} "
                "(another year meant?)"
            )
    if targeted == 0:
        lines.append(
            "its targets match no enrolled host: it would complete with 0 hosts "
            "(check [targets] and the rings of [rollout] against `fleetpatch hosts list`)"
        )
    return lines


def _over_everywhere(day: date, now: datetime) -> bool:
    """Whether the local ``day`` is over everywhere on earth at ``now``.
    Advice is said after a campaign is stored, so it must not fail: a day
    at the calendar's end (which the parser refuses, but a campaign stored
    before it did may hold) is simply not over."""
    try:
        return (
            datetime(day.year, day.month, day.day, tzinfo=now.tzinfo) + DAY_OVER_EVERYWHERE <= now
        )
    except OverflowError:
        return False


def release_advice(spec: CampaignSpec, published: Iterable[str]) -> list[str]:
    """Warnings about an agent-update campaign's release: a package family
    with no package published (``published``: the artifact names of the
    version's packages), whose hosts will wait for one."""
    if spec.agent_update is None:
        return []
    version = spec.agent_update.version
    have = {name.rsplit(".", 1)[-1] for name in published}
    managers = {Family.DEB: "apt", Family.RPM: "dnf"}
    return [
        f"agent release {version} has no .{family} package published: {managers[family]} hosts "
        f"wait until it is (fleetpatch release publish "
        f"{_example(family, version)})"
        for family in Family
        if str(family) not in have
    ]


def _example(family: Family, version: str) -> str:
    if family is Family.DEB:
        return f"fleetpatch-agent_{family.package_version(version)}_<arch>.deb"
    return f"fleetpatch-agent-{family.package_version(version)}-1.<arch>.rpm"
