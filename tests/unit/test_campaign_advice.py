"""controller.campaigns.advice: what `campaign create` and `rehearse` warn
about before a campaign runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from controller.campaigns import CampaignSpec, parse_campaign
from controller.campaigns.advice import advice, release_advice

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "campaigns"

BASE = """
[campaign]
name = "c"
{head}
[patch]
packages = ["fp-demo"]
[rollout]
rings = [{{ ring = 0 }}]
{windows}
"""


def spec(head: str = "", windows: str = "") -> CampaignSpec:
    return parse_campaign(BASE.format(head=head, windows=windows), "c.toml")


def test_a_campaign_for_now_on_a_targeted_fleet_gets_no_warning():
    assert advice(spec('deadline = "2026-12-02T00:00:00Z"'), NOW, targeted=3) == []


def test_a_deadline_in_the_past():
    (line,) = advice(spec('deadline = "2025-02-15T00:00:00Z"'), NOW, targeted=3)
    assert line.startswith("the deadline 2025-02-15T00:00:00Z is in the past")
    (line,) = advice(spec('deadline = "2026-12-01T12:00:00Z"'), NOW, targeted=3)  # now: too late
    assert "in the past" in line


def test_blackout_dates_in_the_past_and_a_day_not_over_everywhere():
    windows = (
        '[windows]\ntimezone = "host-local"\nweekly = ["Sat,Sun 02:00-05:00"]\n'
        "blackout = [2025-01-01, 2026-11-30, 2026-12-24]"
    )
    # 2026-11-30 goes on in UTC-12 until 2026-12-01 12:00 UTC: not over before.
    earlier = datetime(2026, 12, 1, 11, 59, tzinfo=UTC)
    (line,) = advice(spec(windows=windows), earlier, targeted=3)
    assert line.startswith("1 blackout date(s) in the past, which block nothing: 2025-01-01 (")
    (line,) = advice(spec(windows=windows), NOW, targeted=3)
    assert "2 blackout date(s)" in line
    assert "2025-01-01, 2026-11-30 (another year meant?)" in line


def test_targets_matching_no_enrolled_host():
    (line,) = advice(spec(), NOW, targeted=0)
    assert line.startswith("its targets match no enrolled host: it would complete with 0 hosts")


def test_the_shipped_example_warns_of_its_past_dates():
    text = (EXAMPLES / "openssl.toml").read_text()
    lines = advice(parse_campaign(text, "openssl.toml"), NOW, targeted=1)
    assert [line.split(" ")[1] for line in lines] == ["deadline", "blackout"]


def test_the_first_campaign_example_has_nothing_in_the_past():
    first = parse_campaign((EXAMPLES / "first.toml").read_text(), "first.toml")
    assert advice(first, NOW, targeted=1) == []
    assert first.targets.regions == frozenset({"eu-west"})  # the README's tokens
    assert 1 in first.rollout.positions  # the README's ring


AGENT_UPDATE = """
[campaign]
name = "u"
[agent_update]
version = "0.2.0.post1"
[rollout]
rings = [{ ring = 0 }]
"""


def test_an_agent_release_missing_a_family_says_whose_hosts_wait():
    update = parse_campaign(AGENT_UPDATE, "u.toml")
    both = ["fleetpatch-agent_0.2.0+post1_amd64.deb", "fleetpatch-agent-0.2.0^post1-1.x86_64.rpm"]
    assert release_advice(update, both) == []
    assert release_advice(update, both[:1]) == [
        "agent release 0.2.0.post1 has no .rpm package published: dnf hosts wait until it is "
        "(fleetpatch release publish fleetpatch-agent-0.2.0^post1-1.<arch>.rpm)"
    ]
    (only,) = release_advice(update, both[1:])
    assert "no .deb package published: apt hosts wait" in only
    assert "fleetpatch-agent_0.2.0+post1_<arch>.deb" in only
    assert release_advice(spec(), []) == [], "a patch campaign has no release"


def test_advice_never_fails_on_a_blackout_day_at_the_calendar_s_end():
    """The parser refuses such a day now; a campaign stored before it did
    is still advised on (after it is stored: advice must not fail)."""
    from dataclasses import replace
    from datetime import date

    windowed = spec(windows='[windows]\ntimezone = "UTC"\nweekly = ["Sat 02:00-05:00"]')
    assert windowed.windows is not None
    edge = replace(
        windowed,
        windows=replace(
            windowed.windows, blackout=frozenset({date(9999, 12, 31), date(2020, 1, 1)})
        ),
    )
    (line,) = advice(edge, NOW, targeted=3)
    assert line.startswith("1 blackout date(s) in the past")
