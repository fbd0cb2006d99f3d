"""The admin CLI's JSON rules, field kind by field kind."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetpatch.v1 import admin_pb2, types_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from controller.cli import jsondoc


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def test_enums_are_lower_case_words_and_unspecified_is_null():
    assert jsondoc.doc(admin_pb2.Host(status=admin_pb2.HOST_STATUS_ACTIVE))["status"] == "active"
    assert jsondoc.doc(admin_pb2.Host())["status"] is None
    policy = types_pb2.RebootPolicy.DESCRIPTOR
    assert {jsondoc.enum_word(policy, v.number) for v in policy.values} - {None} == {
        v.name.removeprefix("REBOOT_POLICY_").lower() for v in policy.values[1:]
    }


def test_times_are_rfc3339_with_z_and_unset_times_null():
    at = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)
    host = jsondoc.doc(admin_pb2.Host(enrolled_at=_ts(at)))
    assert host["enrolled_at"] == "2026-12-01T12:00:05Z"
    assert host["last_seen"] is None
    cell = jsondoc.doc(admin_pb2.CampaignCell(next_change="2026-12-01T12:00:00+00:00"))
    assert cell["next_change"] == "2026-12-01T12:00:00Z"


def test_missing_strings_are_null_bytes_hex_and_int64_numbers():
    host = jsondoc.doc(admin_pb2.Host(host_id="h-1", checkins=2**40))
    assert host["host_id"] == "h-1"
    assert host["inventory_hash"] is None
    assert host["facts"]["hostname"] is None  # a nested message, present with its fields
    assert host["checkins"] == 2**40
    release = jsondoc.doc(admin_pb2.AgentRelease(sha256=b"\x01\xab"))
    assert release["sha256"] == "01ab"
    assert release["key_fingerprint"] is None


def test_maps_and_repeated_fields_keep_their_shape():
    host = jsondoc.doc(admin_pb2.Host(labels={"role": "web"}))
    assert host["labels"] == {"role": "web"}
    assert host["health"]["checks"] == []


def test_a_hosts_changes_are_its_versions_before_and_after_over_its_reports():
    from controller.api.convert import merged_changes

    def report(*changes: tuple[str, str, str]) -> bytes:
        return types_pb2.ProgressReport(changes=[
            types_pb2.PackageChange(name=n, from_version=f, to_version=t) for n, f, t in changes
        ]).SerializeToString()  # fmt: skip

    merged = merged_changes([
        report(("openssl", "3.0.11", "3.0.13")),
        b"\xff not a report",
        report(("openssl", "3.0.13", "3.0.11"), ("libssl3", "", "3.0.11")),
    ])  # fmt: skip
    assert [(c.name, c.from_version, c.to_version) for c in merged] == [
        ("libssl3", "", "3.0.11"), ("openssl", "3.0.11", "3.0.11"),
    ]  # fmt: skip
