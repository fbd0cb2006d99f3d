"""Reading vulnerability feeds (controller/vulns/feeds.py): the Debian
Security Tracker's JSON and OSV records, from the fixture files in the real
formats (tests/fixtures/vulns) and variations of them."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.vulns.feeds import OSV, TRACKER, Affected, FeedError, osv_record, read
from controller.vulns.releases import host_release, osv_release, tracker_release

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vulns"


def _by_id(path: Path) -> dict[str, object]:
    return {v.vuln_id: v for v in read(path).records}


def test_tracker_statuses():
    feed = read(FIXTURES / "debian-tracker.json")
    assert (feed.source, feed.replace) == (TRACKER, True)
    found = {v.vuln_id: v for v in feed.records}
    # Resolved: the fixed version, per release we know (sid is not one).
    assert found["CVE-2024-5535"].affected == (
        Affected("debian:12", "openssl", "", "3.0.15-1~deb12u1"),
        Affected("debian:11", "openssl", "", "1.1.1w-0+deb11u2"),
    )
    # Open: no fix yet; unimportant is negligible.
    assert found["CVE-2010-4756"].affected == (Affected("debian:12", "glibc", "", ""),)
    assert found["CVE-2010-4756"].severity == "negligible"
    assert found["CVE-2023-4911"].severity == "high"
    # "0" (never affected) and undetermined entries name nothing to match.
    assert "CVE-2018-25032" not in found
    assert "CVE-2023-45853" not in found
    # An end-of-life release is left out, the others kept.
    assert found["CVE-2024-1086"].affected == (Affected("debian:12", "linux", "", "6.1.76-1"),)


def test_osv_directory(tmp_path):
    feed = read(FIXTURES / "osv")
    assert (feed.source, feed.replace) == (OSV, False)
    found = {v.vuln_id: v for v in feed.records}
    assert feed.date == datetime(2024, 9, 4, 12, tzinfo=UTC)  # the newest record's
    alsa = found["ALSA-2024:3501"]
    assert alsa.severity == "medium"  # Moderate
    assert alsa.aliases == ("CVE-2024-2511", "CVE-2023-5678")
    assert alsa.published == datetime(2024, 6, 4, tzinfo=UTC)
    assert Affected("almalinux:9", "openssl-libs", "", "1:3.0.7-27.el9") in alsa.affected
    assert found["RLSA-2024:0310"].severity == "high"  # Important, per package
    ubuntu = found["UBUNTU-CVE-2024-6387"]
    assert ubuntu.severity == "high"
    # The Pro (ESM) stream is not matched: ordinary hosts cannot install its fixes.
    assert ubuntu.affected == (Affected("ubuntu:24.04", "openssh", "", "1:9.6p1-3ubuntu13.3"),)


def test_osv_zip_and_list(tmp_path):
    records = [json.loads(p.read_text()) for p in sorted((FIXTURES / "osv").glob("*.json"))]
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for record in records:
            z.writestr(f"{record['id'].replace(':', '-')}.json", json.dumps(record))
    assert _by_id(archive).keys() == _by_id(FIXTURES / "osv").keys()
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(records))
    assert _by_id(listed).keys() == _by_id(FIXTURES / "osv").keys()


def test_osv_ranges():
    record = {
        "id": "X-1",
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": "foo"},
            "ranges": [
                {"type": "GIT", "events": [{"introduced": "abc"}, {"fixed": "def"}]},
                {"type": "ECOSYSTEM", "events": [
                    {"introduced": "1.0-1"}, {"fixed": "1.0-3"},
                    {"introduced": "2.0-1"}, {"last_affected": "2.0-5"},
                    {"introduced": "3.0-1"},
                ]},
            ],
        }],
    }  # fmt: skip
    assert osv_record("x", record).affected == (
        Affected("debian:12", "foo", "1.0-1", "1.0-3"),
        Affected("debian:12", "foo", "3.0-1", ""),
    )


def test_withdrawn_records_say_so():
    found = osv_record("x", {"id": "X-2", "withdrawn": "2024-01-01T00:00:00Z"})
    assert found.withdrawn
    assert found.affected == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"id": "X", "affected": [{"package": {"ecosystem": "npm", "name": "x"}}]}',
         "ecosystem 'npm' is not one fleetpatch matches"),
        ('{"id": "X", "affected": [{"package": {"ecosystem": "Debian:12"}}]}',
         "an affected entry has no package name"),
        ('{"id": "X", "affected": "all"}', "affected is not a list"),
        ('{"id": "X", "published": "yesterday", "affected": []}', "is not an RFC 3339 time"),
        ('{"id": "has space", "affected": []}', "is not a vulnerability id"),
        ('["not a record"]', "not an OSV record"),
        ("{\"openssl\": [1, 2]}", "not a Debian Security Tracker record"),
        ('{"openssl": {"CVE-1": {"releases": {"bookworm": {"status": "resolved", '
         '"fixed_version": "!!"}}}}}', "'!!' is not a dpkg version"),
        ("hello", "not a vulnerability feed"),
    ],
)  # fmt: skip
def test_bad_feeds_are_one_error_naming_the_file(tmp_path, text, reason):
    path = tmp_path / "feed.json"
    path.write_text(text)
    with pytest.raises(FeedError) as caught:
        list(read(path).records)
    message = str(caught.value)
    assert reason in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_empty_directory_and_missing_file(tmp_path):
    with pytest.raises(FeedError, match=r"no \.json files"):
        list(read(tmp_path).records)
    with pytest.raises(FeedError, match="No such file"):
        list(read(tmp_path / "absent.json").records)


def test_a_large_tracker_file_is_read_one_package_at_a_time(tmp_path):
    """A tracker file of 20,000 packages reads as records, lazily: the
    first comes before the file has been read whole."""
    path = tmp_path / "big.json"
    doc = {
        f"pkg{i}": {f"CVE-2024-{i}": {"releases": {"bookworm": {
            "status": "resolved", "fixed_version": f"1.{i}-1", "urgency": "medium"}}}}
        for i in range(20000)
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    records = read(path).records
    first = next(records)
    assert first.vuln_id == "CVE-2024-0"
    assert sum(1 for _ in records) == 19999


def test_releases():
    assert host_release({"os_id": "debian", "os_version": "12"}) == "debian:12"
    assert host_release({"os_id": "ubuntu", "os_version": "24.04"}) == "ubuntu:24.04"
    assert host_release({"os_id": "almalinux", "os_version": "9.4"}) == "almalinux:9"
    assert host_release({"os_id": "rocky", "os_version": "8.10"}) == "rocky:8"
    assert host_release({"os_id": "arch", "os_version": ""}) is None
    assert osv_release("Rocky Linux:9") == "rocky:9"
    assert osv_release("Ubuntu:22.04:LTS") == "ubuntu:22.04"
    assert osv_release("Ubuntu:Pro:18.04:LTS") is None
    assert tracker_release("bookworm") == "debian:12"
    assert tracker_release("sid") is None


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("list.json", DEEP),  # an OSV list file: json.loads
        ("record.json", '{"id": "X", "affected": ' + DEEP + "}"),  # one OSV record
        ("tracker.json", '{"openssl": {"CVE-1": {"releases": ' + DEEP + "}}}"),  # ijson
        ("late.json", "{" + ", ".join(f'"p{i}": {{}}' for i in range(100))
         + ', "openssl": ' + DEEP + "}"),  # past the keys OSV is told apart by
        ("dict.json", '{"a": ' * 100_000 + "1" + "}" * 100_000),
    ],
)  # fmt: skip
def test_a_feed_nested_too_deeply_is_malformed_not_a_crash(tmp_path, name, text):
    """Neither a RecursionError (json) nor memory growing with the square
    of the depth (ijson's prefixes: 23 GB for this one): one line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FeedError) as caught:
        list(read(path).records)
    assert str(caught.value) == f"{path}: not valid JSON: nested more than 64 levels deep"


def test_a_deep_file_in_a_directory_or_zip_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.json").write_text(DEEP)
    with pytest.raises(FeedError, match=r"d/a\.json: not valid JSON: nested more than 64"):
        list(read(tmp_path / "d").records)
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:
        archive.writestr("x/a.json", DEEP)
    with pytest.raises(FeedError, match=r"all\.zip:x/a\.json: not valid JSON: nested more"):
        list(read(tmp_path / "all.zip").records)


@pytest.mark.parametrize("value", ['"garbage"', "true", "1", '"2024-13-01T00:00:00Z"', "[]"])
def test_a_withdrawn_that_is_not_a_time_is_malformed_not_a_withdrawal(value):
    record = json.loads('{"id": "X-3", "withdrawn": ' + value + ', "affected": []}')
    with pytest.raises(FeedError, match=r"^x: X-3: withdrawn .*is not an RFC 3339 time"):
        osv_record("x", record)


def test_an_absent_or_empty_withdrawn_is_not_a_withdrawal():
    for record in ({"id": "X"}, {"id": "X", "withdrawn": None}, {"id": "X", "withdrawn": ""}):
        assert not osv_record("x", record).withdrawn


@pytest.mark.parametrize("key", ["published", "modified", "withdrawn"])
@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z",
     "9001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"],
)  # fmt: skip
def test_osv_times_outside_the_supported_years_are_taken_as_unset(key, value):
    """Go's zero time is a placeholder some feeds write; a whole import
    must not fail for it, nor anything overflow on a year like 9999."""
    vuln = osv_record("x", {"id": "X-4", key: value, "affected": []})
    assert not vuln.withdrawn
    assert (vuln.published, vuln.modified) == (None, None)


@pytest.mark.parametrize("key", ["published", "modified"])
def test_osv_times_that_are_not_strings_are_malformed(key):
    with pytest.raises(FeedError, match=rf"^x: X-5: {key} is not an RFC 3339 time"):
        osv_record("x", {"id": "X-5", key: 20240101, "affected": []})


@pytest.mark.parametrize(
    "value",
    ["2024-01-01", "20240101T000000", "2024-W01-1", "2024-01-01 00:00:00", "2024-01-01T00:00"],
)
def test_osv_times_that_are_not_rfc_3339_are_malformed(value):
    """fromisoformat takes all of these; OSV's times are RFC 3339, with an offset."""
    with pytest.raises(FeedError, match="is not an RFC 3339 time"):
        osv_record("x", {"id": "X-6", "modified": value, "affected": []})


@pytest.mark.parametrize(
    "value",
    ["2024-01-01T00:00:00z", "2024-01-01t00:00:00Z", "2024-01-01 00:00:00+02:00",
     "2024-01-01T00:00:00.123456789Z"],
)  # fmt: skip
def test_rfc_3339_times_in_their_other_spellings_are_read(value):
    assert osv_record("x", {"id": "X-7", "modified": value, "affected": []}).modified is not None
