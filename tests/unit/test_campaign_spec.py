"""Campaign files: the example parses, defaults are strict, and every kind of
mistake gets its own message naming the field."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from controller.campaigns import (
    CampaignError,
    CheckKind,
    LivepatchPolicy,
    RebootPolicy,
    RegionOrder,
    RestartPolicy,
    parse_campaign,
)
from controller.campaigns.quota import count, percent

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "campaigns" / "openssl.toml"

MINIMAL = """
[campaign]
name = "minimal"

[patch]
packages = ["openssl"]

[[rollout.rings]]
ring = 0
"""


def parse(text: str):
    return parse_campaign(text, "test.toml")


def error_of(text: str) -> CampaignError:
    with pytest.raises(CampaignError) as caught:
        parse(text)
    return caught.value


def test_example_parses_with_every_field() -> None:
    spec = parse_campaign(EXAMPLE.read_text(), str(EXAMPLE))
    assert spec.name == "openssl-2025-01"
    assert spec.patch is not None
    assert spec.agent_update is None
    assert spec.kind == "patch"
    assert spec.deadline == datetime(2025, 2, 15, tzinfo=UTC)
    assert [p.name for p in spec.patch.packages] == ["openssl", "libssl3", "ca-certificates"]
    assert spec.patch.packages[0].min_version == "3.0.15-1~deb12u1"
    assert spec.patch.reboot is RebootPolicy.IF_REQUIRED
    assert spec.patch.livepatch is LivepatchPolicy.PREFER
    assert spec.patch.restart_services is RestartPolicy.AUTO
    assert {c.kind for c in spec.verify.checks} == set(CheckKind)
    assert spec.verify.timeout == timedelta(minutes=10)
    assert dict(spec.targets.labels) == {"env": {"prod"}, "role": {"web", "edge"}}
    assert [s.ring for s in spec.rollout.rings] == [0, 1, 2]
    canary, middle, rest = spec.rollout.rings
    assert canary.concurrency == count(1)
    assert canary.gate.failure_budget == count(0)
    # Ring 1 overrides bake only; the rest comes from [rollout.gate].
    assert middle.gate.bake == timedelta(hours=12)
    assert middle.gate.min_success == Fraction(98, 100)
    assert middle.gate.failure_budget == percent(2)
    assert rest.concurrency == percent(10)
    assert rest.region_concurrency == percent(5)
    assert spec.rollout.region_order is RegionOrder.SEQUENTIAL
    assert spec.windows is not None
    assert spec.windows.timezone == "host-local"
    assert spec.windows.blackout == {date(2025, 1, 1), date(2025, 2, 3)}
    assert spec.windows.cutoff == timedelta(minutes=45)


def test_minimal_file_gets_strict_defaults() -> None:
    spec = parse(MINIMAL)
    stage = spec.rollout.rings[0]
    assert stage.gate.min_success == 1
    assert stage.gate.failure_budget == count(0)
    assert stage.gate.bake == timedelta(0)
    assert stage.concurrency == percent(10)
    assert stage.region_concurrency is None
    assert spec.windows is None
    assert spec.emergency is False
    assert spec.deadline is None
    assert spec.verify.timeout == timedelta(minutes=5)
    assert spec.rollout.report_timeout == timedelta(minutes=35)
    assert spec.patch is not None
    assert spec.patch.reboot is RebootPolicy.IF_REQUIRED


def test_deadline_as_string_with_offset_is_utc() -> None:
    spec = parse(
        MINIMAL.replace('name = "minimal"', 'name = "m"\ndeadline = "2025-03-01T10:00+02:00"')
    )
    assert spec.deadline == datetime(2025, 3, 1, 8, tzinfo=UTC)


def test_min_success_is_exact_decimal() -> None:
    spec = parse(MINIMAL + "gate = { min_success = 0.95 }\n")
    assert spec.rollout.rings[0].gate.min_success == Fraction(19, 20)


WINDOWS = """
[windows]
timezone = "Europe/Berlin"
weekly = ["Sat,Sun 02:00-05:00"]
"""

# (case id, text, field the message must name, words it must contain)
ERRORS = [
    ("toml-syntax", "[campaign\nname = 'x'", "", "not valid TOML"),
    (
        "unknown-table",
        MINIMAL + "[rollouts]\nx = 1\n",
        "rollouts",
        "unknown table (did you mean 'rollout'?)",
    ),
    (
        "unknown-top-key",
        MINIMAL.replace("[campaign]", "name = 'x'\n[campaign]"),
        "name",
        "unknown key",
    ),
    (
        "unknown-nested-key",
        MINIMAL + "gate = { min_sucess = 0.9 }\n",
        "rollout.rings[0].gate.min_sucess",
        "did you mean 'min_success'?",
    ),
    (
        "unknown-campaign-key",
        MINIMAL.replace('name = "minimal"', 'name = "m"\nemergancy = true'),
        "campaign.emergancy",
        "did you mean 'emergency'?",
    ),
    (
        "wrong-type",
        MINIMAL.replace('name = "minimal"', 'name = "m"\nemergency = "yes"'),
        "campaign.emergency",
        "must be a boolean, not a string",
    ),
    ("name-missing", MINIMAL.replace('name = "minimal"', ""), "campaign.name", "is required"),
    ("name-bad", MINIMAL.replace('"minimal"', '"Open SSL"'), "campaign.name", "lowercase letters"),
    (
        "deadline-naive",
        MINIMAL.replace('name = "minimal"', 'name = "m"\ndeadline = 2025-02-01T00:00:00'),
        "campaign.deadline",
        "must include a UTC offset",
    ),
    (
        "deadline-type",
        MINIMAL.replace('name = "minimal"', 'name = "m"\ndeadline = 5'),
        "campaign.deadline",
        "must be a date-time, not an integer",
    ),
    (
        "deadline-text",
        MINIMAL.replace('name = "minimal"', 'name = "m"\ndeadline = "soon"'),
        "campaign.deadline",
        "is not a date-time",
    ),
    (
        "nothing-to-patch",
        MINIMAL.replace('packages = ["openssl"]', ""),
        "patch.packages",
        "nothing to patch",
    ),
    (
        "package-twice",
        MINIMAL.replace('["openssl"]', '["openssl", { name = "openssl" }]'),
        "patch.packages[1]",
        "listed twice",
    ),
    (
        "package-name",
        MINIMAL.replace('["openssl"]', '["open ssl"]'),
        "patch.packages[0].name",
        "is not a package name",
    ),
    (
        # A trailing newline once slipped through a `^...$` pattern.
        "package-name-newline",
        MINIMAL.replace('["openssl"]', '["openssl\\n"]'),
        "patch.packages[0].name",
        "'openssl\\n' is not a package name",
    ),
    (
        "package-name-long",
        MINIMAL.replace('["openssl"]', f'["{"a" * 10_000}"]'),
        "patch.packages[0].name",
        "is 10000 characters long, at most 200",
    ),
    (
        "package-version-newline",
        MINIMAL.replace('["openssl"]', '[{ name = "openssl", min_version = "3.0\\n" }]'),
        "patch.packages[0].min_version",
        "'3.0\\n' is not a package version",
    ),
    (
        "region-newline",
        MINIMAL.replace('name = "minimal"', 'name = "m"') + '[targets]\nregions = ["eu\\n"]\n',
        "targets.regions[0]",
        "must be lowercase letters, digits and '-'",
    ),
    (
        "package-type",
        MINIMAL.replace('["openssl"]', "[3]"),
        "patch.packages[0]",
        "must be a package name or a table, not an integer",
    ),
    (
        "package-version",
        MINIMAL.replace('["openssl"]', '[{ name = "openssl", min_version = "1 2" }]'),
        "patch.packages[0].min_version",
        "is not a package version",
    ),
    (
        "package-unknown-key",
        MINIMAL.replace('["openssl"]', '[{ name = "openssl", version = "1" }]'),
        "patch.packages[0].version",
        "unknown key",
    ),
    (
        "exclude-pattern",
        MINIMAL.replace('["openssl"]', '["openssl"]\nexclude = ["a b"]'),
        "patch.exclude[0]",
        "is not a name or glob",
    ),
    (
        "reboot-choice",
        MINIMAL.replace('["openssl"]', '["openssl"]\nreboot = "sometimes"'),
        "patch.reboot",
        "is not one of 'never', 'if-required', 'always'",
    ),
    (
        "restart-choice",
        MINIMAL.replace('["openssl"]', '["openssl"]\nrestart_services = "always"'),
        "patch.restart_services",
        "is not one of 'auto', 'report', 'never'",
    ),
    (
        "livepatch-contradiction",
        MINIMAL.replace('["openssl"]', '["openssl"]\nreboot = "always"\nlivepatch = "only"'),
        "patch.livepatch",
        "contradicts",
    ),
    (
        "duration-spelling",
        MINIMAL + '[verify]\ntimeout = "10 minutes"\n',
        "verify.timeout",
        "is not a duration",
    ),
    (
        "duration-zero",
        MINIMAL + '[verify]\ntimeout = "0s"\n',
        "verify.timeout",
        "must be longer than 0s",
    ),
    (
        "duration-type",
        MINIMAL + "gate = { bake = 3600 }\n",
        "rollout.rings[0].gate.bake",
        "must be a duration such as '30m', not an integer",
    ),
    (
        "check-kind",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "ping"\n',
        "verify.checks[0].kind",
        "is not a check kind",
    ),
    (
        "check-foreign-field",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "systemd"\nunit = "a"\nurl = "http://x"\n',
        "verify.checks[0].url",
        "does not apply to a systemd check",
    ),
    (
        "check-port",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "tcp"\nport = 70000\n',
        "verify.checks[0].port",
        "is not a TCP port",
    ),
    (
        "check-url",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "http"\nurl = "ftp://x"\n',
        "verify.checks[0].url",
        "must start with http://",
    ),
    (
        "check-argv",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "command"\nargv = []\n',
        "verify.checks[0].argv",
        "non-empty array",
    ),
    (
        "check-resource-empty",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "resource"\n',
        "verify.checks[0]",
        "at least one threshold",
    ),
    (
        "check-ratio",
        MINIMAL + '[[verify.checks]]\nname = "x"\nkind = "resource"\nmax_disk_used_ratio = 2\n',
        "verify.checks[0].max_disk_used_ratio",
        "between 0 and 1",
    ),
    (
        "check-name-twice",
        MINIMAL + 2 * '[[verify.checks]]\nname = "x"\nkind = "process"\nprocess = "a"\n',
        "verify.checks[1].name",
        "is used twice",
    ),
    (
        "region-bad",
        MINIMAL + '[targets]\nregions = ["EU West"]\n',
        "targets.regions[0]",
        "must be lowercase",
    ),
    (
        "region-twice",
        MINIMAL + '[targets]\nregions = ["eu", "eu"]\n',
        "targets.regions[1]",
        "listed twice",
    ),
    (
        "region-type",
        MINIMAL + "[targets]\nregions = [1]\n",
        "targets.regions[0]",
        "must be a string, not an integer",
    ),
    (
        "label-value",
        MINIMAL + '[targets]\nlabels = { role = "web server" }\n',
        "targets.labels.role",
        "label value",
    ),
    (
        "label-type",
        MINIMAL + "[targets]\nlabels = { role = 3 }\n",
        "targets.labels.role",
        "a value or a non-empty array",
    ),
    ("os-id", MINIMAL + '[targets]\nos = ["Debian 12"]\n', "targets.os[0]", "is not an os id"),
    (
        "no-rings",
        MINIMAL.replace("[[rollout.rings]]\nring = 0\n", ""),
        "rollout.rings",
        "is required",
    ),
    (
        "ring-twice",
        MINIMAL + "[[rollout.rings]]\nring = 0\n",
        "rollout.rings[1].ring",
        "listed twice",
    ),
    (
        "ring-range",
        MINIMAL.replace("ring = 0", "ring = 100"),
        "rollout.rings[0].ring",
        "out of range",
    ),
    (
        "ring-missing",
        MINIMAL.replace("ring = 0", "concurrency = 1"),
        "rollout.rings[0].ring",
        "is required",
    ),
    (
        "concurrency-zero",
        MINIMAL + "concurrency = 0\n",
        "rollout.rings[0].concurrency",
        "must be at least 1",
    ),
    (
        "concurrency-zero-percent",
        MINIMAL + 'concurrency = "0%"\n',
        "rollout.rings[0].concurrency",
        "must be above 0%",
    ),
    (
        "concurrency-words",
        MINIMAL + 'concurrency = "ten"\n',
        "rollout.rings[0].concurrency",
        "neither a count",
    ),
    (
        "concurrency-bool",
        MINIMAL + "concurrency = true\n",
        "rollout.rings[0].concurrency",
        "a boolean is neither a count",
    ),
    (
        "budget-over-100",
        MINIMAL + 'gate = { failure_budget = "150%" }\n',
        "rollout.rings[0].gate.failure_budget",
        "at most 100%",
    ),
    (
        "budget-negative",
        MINIMAL + "gate = { failure_budget = -1 }\n",
        "rollout.rings[0].gate.failure_budget",
        "must be at least 0",
    ),
    (
        "min-success-range",
        MINIMAL + "[[rollout.rings]]\nring = 1\ngate = { min_success = 1.5 }\n",
        "rollout.rings[1].gate.min_success",
        "must be between 0 and 1",
    ),
    (
        "region-order",
        MINIMAL + '[rollout]\nregion_order = "random"\n',
        "rollout.region_order",
        "is not one of 'sequential', 'parallel'",
    ),
    (
        "report-timeout",
        MINIMAL + '[verify]\ntimeout = "1h"\n[rollout]\nreport_timeout = "30m"\n',
        "rollout.report_timeout",
        "must be longer than verify.timeout (1h)",
    ),
    (
        "silent-threshold",
        MINIMAL + '[rollout]\nsilent_threshold = "x%"\n',
        "rollout.silent_threshold",
        "neither a count",
    ),
    (
        "timezone-unknown",
        MINIMAL + WINDOWS.replace("Europe/Berlin", "Europe/Berln"),
        "windows.timezone",
        "unknown time zone 'Europe/Berln'",
    ),
    (
        "timezone-missing",
        MINIMAL + WINDOWS.replace('timezone = "Europe/Berlin"', ""),
        "windows.timezone",
        "is required",
    ),
    (
        "window-syntax",
        MINIMAL + WINDOWS.replace("Sat,Sun 02:00-05:00", "Sat 2am-5am"),
        "windows.weekly[0]",
        "is not a window",
    ),
    (
        "window-day",
        MINIMAL + WINDOWS.replace("Sat,Sun", "Sa,Su"),
        "windows.weekly[0]",
        "'Sa' is not a day",
    ),
    (
        "window-time",
        MINIMAL + WINDOWS.replace("05:00", "25:00"),
        "windows.weekly[0]",
        "is not a time of day",
    ),
    (
        "window-empty",
        MINIMAL + WINDOWS.replace("05:00", "02:00"),
        "windows.weekly[0]",
        "the window is empty",
    ),
    (
        "window-start-24",
        MINIMAL + WINDOWS.replace("02:00-05:00", "24:00-05:00"),
        "windows.weekly[0]",
        "cannot start at 24:00",
    ),
    (
        "windows-none",
        MINIMAL + WINDOWS.replace('["Sat,Sun 02:00-05:00"]', "[]"),
        "windows.weekly",
        "at least one window",
    ),
    (
        "cutoff-too-long",
        MINIMAL + WINDOWS + 'cutoff = "3h"\n',
        "windows.cutoff",
        "is not shorter than the window 'Sat,Sun 02:00-05:00' (3h)",
    ),
    (
        "blackout-date",
        MINIMAL + WINDOWS + 'blackout = ["2025-13-01"]\n',
        "windows.blackout[0]",
        "is not a date",
    ),
    (
        "blackout-type",
        MINIMAL + WINDOWS + "blackout = [20251224]\n",
        "windows.blackout[0]",
        "must be a date such as 2025-12-24, not an integer",
    ),
    (
        "blackout-datetime",
        MINIMAL + WINDOWS + "blackout = [2025-12-24T00:00:00Z]\n",
        "windows.blackout[0]",
        "not a date-time",
    ),
    (
        "windows-unknown-key",
        MINIMAL + WINDOWS + 'blackouts = ["2025-12-24"]\n',
        "windows.blackouts",
        "did you mean 'blackout'?",
    ),
]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [pytest.param(text, field, words, id=case) for case, text, field, words in ERRORS],
)
def test_each_mistake_names_its_field(text: str, field: str, words: str) -> None:
    err = error_of(text)
    assert err.field == field
    assert words in err.problem
    assert str(err).startswith(f"test.toml: {field}: " if field else "test.toml: ")


def test_error_kinds_are_distinct() -> None:
    # One message per kind of mistake: no two cases share (field, words).
    keys = [(field, words) for _, _, field, words in ERRORS]
    assert len(keys) == len(set(keys))


def test_campaign_error_is_a_value_error() -> None:
    err = error_of(MINIMAL.replace('"minimal"', '"X"'))
    assert isinstance(err, ValueError)
    assert err.source == "test.toml"


def test_syntax_error_message_gives_the_line() -> None:
    err = error_of("[campaign]\nname = \n")
    assert "line 2" in str(err)


# -- agent updates --------------------------------------------------------------

AGENT_UPDATE = """
[campaign]
name = "agent-0-2-0"

[agent_update]
version = "0.2.0"

[[rollout.rings]]
ring = 0
"""


def test_agent_update_campaign_with_defaults() -> None:
    spec = parse(AGENT_UPDATE)
    assert spec.patch is None
    assert spec.agent_update is not None
    assert spec.agent_update.version == "0.2.0"
    assert spec.agent_update.rollback_after == timedelta(minutes=10)
    assert spec.kind == "agent-update 0.2.0"
    # Everything else reads as for a patch campaign.
    assert spec.verify.timeout == timedelta(minutes=5)
    assert [s.ring for s in spec.rollout.rings] == [0]


def test_agent_update_with_every_field_and_the_rest_of_a_campaign() -> None:
    text = AGENT_UPDATE.replace('version = "0.2.0"', 'version = "1.2.0rc1"\nrollback_after = "1h"')
    text += '[verify]\ntimeout = "20m"\n[[verify.checks]]\nname = "ssh"\nkind = "tcp"\nport = 22\n'
    spec = parse(text + WINDOWS)
    assert spec.agent_update is not None
    assert spec.agent_update.version == "1.2.0rc1"
    assert spec.agent_update.rollback_after == timedelta(hours=1)
    assert [c.name for c in spec.verify.checks] == ["ssh"]
    assert spec.windows is not None


def test_the_agent_update_example_parses() -> None:
    path = EXAMPLE.with_name("agent-update.toml")
    spec = parse_campaign(path.read_text(), str(path))
    assert spec.agent_update is not None
    assert spec.patch is None
    assert spec.agent_update.rollback_after > spec.verify.timeout


AGENT_UPDATE_ERRORS = [
    (
        "both",
        MINIMAL + '[agent_update]\nversion = "0.2.0"\n',
        "agent_update",
        "exactly one of [patch] (packages to update) and [agent_update]",
        "this one has both",
    ),
    (
        "neither",
        MINIMAL.replace('[patch]\npackages = ["openssl"]\n', ""),
        "",
        "exactly one of [patch] (packages to update) and [agent_update]",
        "this one has neither",
    ),
    (
        "misspelt",
        AGENT_UPDATE.replace("[agent_update]", "[agent_updat]"),
        "agent_updat",
        "unknown table (did you mean 'agent_update'?)",
        "",
    ),
    ("version-missing", AGENT_UPDATE.replace('version = "0.2.0"', ""), "agent_update.version",
     "is required", ""),
    ("version-type", AGENT_UPDATE.replace('"0.2.0"', "0.2"), "agent_update.version",
     "must be a string, not a float", ""),
    ("version-bad", AGENT_UPDATE.replace('"0.2.0"', '"v0.2"'), "agent_update.version",
     "is not a release, pre-, post- or dev-release", ""),
    ("version-local", AGENT_UPDATE.replace('"0.2.0"', '"0.2.0+local"'), "agent_update.version",
     "is not a release", ""),
    (
        "rollback-not-longer",
        AGENT_UPDATE.replace('"0.2.0"', '"0.2.0"\nrollback_after = "5m"'),
        "agent_update.rollback_after",
        "5m must be longer than verify.timeout (5m)",
        "",
    ),
    (
        "rollback-default-too-short",
        AGENT_UPDATE + '[verify]\ntimeout = "15m"\n',
        "agent_update.rollback_after",
        "10m (the default) must be longer than verify.timeout (15m)",
        "",
    ),
    ("rollback-zero", AGENT_UPDATE.replace('"0.2.0"', '"0.2.0"\nrollback_after = "0s"'),
     "agent_update.rollback_after", "must be longer than 0s", ""),
    (
        "unknown-key",
        AGENT_UPDATE.replace('"0.2.0"', '"0.2.0"\nrollback = "1h"'),
        "agent_update.rollback",
        "did you mean 'rollback_after'?",
        "",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "words", "more"),
    [pytest.param(t, f, w, m, id=case) for case, t, f, w, m in AGENT_UPDATE_ERRORS],
)
def test_agent_update_mistakes_name_their_field(
    text: str, field: str, words: str, more: str
) -> None:
    err = error_of(text)
    assert err.field == field
    assert words in err.problem
    assert more in err.problem
    assert str(err).startswith(f"test.toml: {field}: " if field else "test.toml: ")


# -- bad input at the edges: sizes, non-finite numbers, the calendar's ends ------------


def test_a_file_over_the_size_limit_is_refused_before_it_is_read() -> None:
    from controller.api.limits import MAX_CAMPAIGN_BYTES

    text = MINIMAL + "# " + "x" * MAX_CAMPAIGN_BYTES + "\n"
    error = error_of(text)
    assert str(error).startswith("test.toml: is ")
    assert f"a campaign file is at most {MAX_CAMPAIGN_BYTES}" in str(error)


@pytest.mark.parametrize(
    ("table", "key", "limit"),
    [
        ("campaign", "description", 4096),
        ("rollout", "prometheus", 1024),
        ("rollout", "min_agent_version", 200),
    ],
)
def test_free_text_is_bounded(table: str, key: str, limit: int) -> None:
    text = MINIMAL.replace("[[rollout.rings]]", "[rollout]\n[[rollout.rings]]")
    text = text.replace(f"[{table}]\n", f'[{table}]\n{key} = "{"x" * 50_000}"\n', 1)
    error = error_of(text)
    assert error.field == f"{table}.{key}"
    assert error.problem == f"is 50000 characters long, at most {limit}"


def test_long_strings_are_refused_before_a_message_quotes_them() -> None:
    long = "x" * 100_000
    cases = {
        f'query = "{long}"': "rollout.analysis[0].query",
        f'name = "{long}"': "rollout.analysis[0].name",
    }
    for line, field in cases.items():
        key = line.split(" ")[0]
        analysis = {"name": 'name = "a"', "query": 'query = "up"'}
        analysis[key] = line
        error = error_of(
            MINIMAL
            + '[rollout]\nprometheus = "http://p:9090"\n[[rollout.analysis]]\n'
            + "\n".join(analysis.values())
            + "\nmax = 1\n"
        )
        assert error.field == field
        assert "characters long, at most" in error.problem
    for text, field in [
        (MINIMAL.replace('name = "minimal"', f'name = "{long}"'), "campaign.name"),
        (MINIMAL + f'[targets]\nregions = ["{long}"]\n', "targets.regions[0]"),
        (MINIMAL + f'[targets]\nos = ["{long}"]\n', "targets.os[0]"),
        (MINIMAL + f'[targets]\nhosts = ["{long}"]\n', "targets.hosts[0]"),
        (MINIMAL + f'[targets.labels]\nrole = "{long}"\n', "targets.labels.role"),
        (MINIMAL + f'[targets.labels]\n{long} = "web"\n', "targets.labels"),
        (MINIMAL.replace('name = "minimal"', f'name = "m"\nfixes = ["{long}"]'),
         "campaign.fixes[0]"),
        (MINIMAL.replace('packages = ["openssl"]', f'packages = ["openssl"]\nexclude = ["{long}"]'),
         "patch.exclude[0]"),
        (MINIMAL + f'[windows]\ntimezone = "{long}"\nweekly = ["Sat 02:00-05:00"]\n',
         "windows.timezone"),
        (MINIMAL + f'[windows]\ntimezone = "UTC"\nweekly = ["{long}"]\n', "windows.weekly[0]"),
    ]:  # fmt: skip
        error = error_of(text)
        assert error.field == field, text[:80]
        assert len(str(error)) < 200


def test_a_time_zone_name_too_long_for_a_path_is_unknown_not_an_oserror() -> None:
    error = error_of(
        MINIMAL + f'[windows]\ntimezone = "{"a" * 300}"\nweekly = ["Sat 02:00-05:00"]\n'
    )
    assert error.field == "windows.timezone"
    error = error_of(
        MINIMAL + f'[windows]\ntimezone = "Europe/{"a" * 300}"\nweekly = ["Sat 02:00-05:00"]\n'
    )
    assert "characters long" in error.problem or "unknown time zone" in error.problem


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize("key", ["max", "min"])
def test_analysis_thresholds_must_be_finite(key: str, value: str) -> None:
    error = error_of(
        MINIMAL
        + '[rollout]\nprometheus = "http://p:9090"\n[[rollout.analysis]]\nname = "a"\n'
        + f'query = "up"\n{key} = {value}\n'
    )
    assert error.field == f"rollout.analysis[0].{key}"
    assert error.problem.startswith("must be a finite number, not ")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_min_success_must_be_finite(value: str) -> None:
    error = error_of(MINIMAL.replace("ring = 0", f"ring = 0\ngate.min_success = {value}"))
    assert error.field == "rollout.rings[0].gate.min_success"
    assert error.problem.startswith("must be a finite number, not ")


@pytest.mark.parametrize(
    "deadline",
    [
        '"9999-12-31T23:59:59-23:59"',
        "9999-12-31T23:59:59-23:59",
        '"0001-01-01T00:00:00+01:00"',
        '"9001-01-01T00:00:00Z"',
        '"1969-12-31T23:59:59Z"',
    ],
)
def test_a_deadline_outside_the_supported_years_is_refused(deadline: str) -> None:
    error = error_of(MINIMAL.replace('name = "minimal"', f'name = "m"\ndeadline = {deadline}'))
    assert error.field == "campaign.deadline"
    assert error.problem.endswith("is out of range (years 1970 to 9000)")


def test_deadlines_at_the_supported_ends_are_taken() -> None:
    for deadline, utc in [
        ("9000-12-31T23:59:59-23:59", datetime(9001, 1, 1, 23, 58, 59, tzinfo=UTC)),
        ("1970-01-01T00:00:00+14:00", datetime(1969, 12, 31, 10, 0, tzinfo=UTC)),
    ]:
        spec = parse(MINIMAL.replace('name = "minimal"', f'name = "m"\ndeadline = "{deadline}"'))
        assert spec.deadline == utc


@pytest.mark.parametrize("day", ["9999-12-31", '"9999-12-31"', "0001-01-01", "9001-01-01"])
def test_a_blackout_day_outside_the_supported_years_is_refused(day: str) -> None:
    error = error_of(
        MINIMAL + f'[windows]\ntimezone = "UTC"\nweekly = ["Sat 02:00-05:00"]\nblackout = [{day}]\n'
    )
    assert error.field == "windows.blackout[0]"
    assert error.problem.endswith("is out of range (years 1970 to 9000)")


def test_a_campaign_stored_before_a_limit_was_added_still_reads() -> None:
    """The engine, webhooks and `campaign list` read stored campaigns again
    (bounded=False): a size limit added since must not make one unreadable,
    and the campaign tick with it."""
    text = MINIMAL.replace('name = "minimal"', f'name = "minimal"\ndescription = "{"x" * 50_000}"')
    text += "# " + "y" * (2 * 1024 * 1024) + "\n"
    with pytest.raises(CampaignError):
        parse(text)
    stored = parse_campaign(text, "c-1", bounded=False)
    assert len(stored.description) == 50_000
    with pytest.raises(CampaignError):  # the bounds are back for the next file
        parse(text)


def test_a_plan_naming_tens_of_thousands_of_hosts_reads_in_linear_time() -> None:
    """targets.hosts of 40,000 ids (a `campaign plan` of a large fleet) took
    10 s when each id was looked for in the list before it; a duplicate is
    still named, quoted short."""
    hosts = [f"h-{i:016x}" for i in range(40_000)]
    text = MINIMAL + "[targets]\nhosts = [" + ", ".join(f'"{h}"' for h in hosts) + "]\n"
    assert len(parse(text).targets.hosts) == 40_000
    long = "h-" + "a" * 500
    error = error_of(MINIMAL + f'[targets]\nregions = ["{long}", "{long}"]\n')
    assert "listed twice" in error.problem
    assert len(error.problem) < 100


def test_an_unknown_key_of_a_megabyte_is_named_short() -> None:
    error = error_of(MINIMAL.replace("[patch]\n", f"[patch]\n{'k' * 500_000} = 1\n"))
    assert error.field == "patch." + "k" * 61 + "..."
    assert error.problem == "unknown key"


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        # TOML integers have no bound; no float holds this one.
        ("min_success = 1" + "0" * 400, "rollout.gate.min_success", "too large a number"),
        ('"a\\nb\\u001b[31m" = 1', "rollout.gate.'a\\nb\\x1b[31m'", "unknown key"),
    ],
)
def test_a_gate_value_or_key_no_message_could_hold_is_one_line(line, field, problem) -> None:
    text = MINIMAL.replace("[[rollout.rings]]", f"[rollout.gate]\n{line}\n[[rollout.rings]]")
    error = error_of(text)
    assert error.field == field
    assert problem in error.problem
    assert "\n" not in str(error)


def test_an_enum_or_duration_of_a_megabyte_is_quoted_short() -> None:
    for line, field in (('reboot = "', "patch.reboot"), ('timeout = "', "verify.timeout")):
        table = field.split(".")[0]
        text = MINIMAL.replace(f"[{table}]\n", "") + f'[{table}]\n{line}{"x" * 200_000}"\n'
        if table == "patch":
            text = MINIMAL.replace("[patch]\n", f'[patch]\n{line}{"x" * 200_000}"\n')
        error = error_of(text)
        assert error.field == field
        assert len(str(error)) < 300
