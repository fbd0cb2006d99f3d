"""Exposure: matching inventories against feeds (controller/vulns/match.py),
keeping first-seen and fixed times and the per-cell counts in a real SQLite
store (controller/store/vulns.py), compliance (controller/vulns/policy.py)
and the planned campaign file (controller/cli/plan.py)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleetpatch.inventory import inventory_hash
from fleetpatch.v1 import vulns_pb2

from controller.campaigns import CampaignError, parse_campaign
from controller.campaigns.scheduler import HostFacts, targeting_mismatch
from controller.cli.plan import render_plan
from controller.fleet.relabel import Relabel
from controller.fleet.tokens import new_token
from controller.model import CheckIn, Host, HostStatus
from controller.store import Store
from controller.store.thread import StoreThread
from controller.store.vulns import MatchInput
from controller.vulns import DEFAULT_GRACE
from controller.vulns.feeds import Affected, Vuln
from controller.vulns.match import Index, Matcher, match
from controller.vulns.policy import compliance, remediation

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DEBIAN = {"os_id": "debian", "os_version": "12"}
ALMA = {"os_id": "almalinux", "os_version": "9.4"}

FEED = [
    Vuln("CVE-1", "high", affected=(Affected("debian:12", "openssl", "", "3.0.15-1"),)),
    Vuln("CVE-2", "low", affected=(Affected("debian:12", "glibc", "", ""),)),
    Vuln("CVE-3", "critical", published=NOW - timedelta(days=30),
         affected=(Affected("almalinux:9", "openssl-libs", "", "1:3.0.7-27.el9"),)),
    Vuln("CVE-4", "medium", affected=(Affected("debian:12", "zlib", "2.0-1", "2.0-5"),)),
]  # fmt: skip


def _rows(ssl: str) -> list[list[str]]:
    return [["libssl3", ssl, "amd64", "openssl", ssl], ["openssl", ssl, "amd64"],
            ["libc6", "2.36-9", "amd64", "glibc", "2.36-9"], ["zlib1g", "1.3-1", "amd64", "zlib",
            "1.3-1"]]  # fmt: skip


def _index(store: Store) -> Index:
    return Index(store.affected_in(["debian:12", "almalinux:9"]))


def test_match_by_source_on_dpkg_and_by_binary_on_rpm():
    index = Index(
        (a.release, a.package, v.vuln_id, a.introduced, a.fixed) for v in FEED for a in v.affected
    )
    debian = MatchInput("h-1", "k", DEBIAN, _rows("3.0.11-1"), [])
    found = {(f.vuln_id, f.package, f.installed, f.fixed) for f in match(index, debian)}
    assert found == {("CVE-1", "openssl", "3.0.11-1", "3.0.15-1"), ("CVE-2", "glibc", "2.36-9", "")}
    alma = MatchInput("h-2", "k", ALMA, [["openssl-libs", "1:3.0.7-25.el9", "x86_64"]], [])
    assert [f.vuln_id for f in match(index, alma)] == ["CVE-3"]
    unknown = MatchInput("h-3", "k", {"os_id": "arch", "os_version": "rolling"}, _rows("1"), [])
    assert match(index, unknown) == []


def test_a_fix_offered_by_the_hosts_scan_is_fixable():
    index = Index([("debian:12", "openssl", "CVE-1", "", "3.0.15-1")])
    # rows of UPDATE_FIELDS: name, arch, installed, candidate, ...
    offered = [["libssl3", "amd64", "3.0.11-1", "3.0.15-1", "security", True, "", "", False]]
    too_old = [["libssl3", "amd64", "3.0.11-1", "3.0.13-1", "main", False, "", "", False]]
    (hit,) = match(index, MatchInput("h", "k", DEBIAN, _rows("3.0.11-1"), offered))
    assert hit.available
    (hit,) = match(index, MatchInput("h", "k", DEBIAN, _rows("3.0.11-1"), too_old))
    assert not hit.available


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real store on both backends: a SQLite file (the matcher reads it
    from a thread), a PostgreSQL database emptied after the test."""
    if request.param == "sqlite":
        store = Store.open(tmp_path / "controller.db")
    else:
        store = Store.connect(request.getfixturevalue("postgres_emptied_url"))
    token, _ = new_token("eu", 0, 10, timedelta(hours=1), {}, NOW)
    store.create_token(token)
    for n, (facts, ring) in enumerate([(DEBIAN, 0), (DEBIAN, 1), (ALMA, 1)]):
        host = Host(f"h-{n:016x}", "eu", ring, HostStatus.PENDING, NOW, facts=facts,
                    certificate_serial="1", certificate_expires_at=NOW + timedelta(days=90),
                    certificate_not_before=NOW)  # fmt: skip
        store.enroll_host(host, token.token_id, NOW)
    store.import_vulns("osv", False, None, FEED, NOW, "admin:test")
    yield store
    store.close()


def _report(store: Store, host_id: str, facts: dict[str, str], rows: Sequence[Sequence[str]],
            at: datetime = NOW) -> None:  # fmt: skip
    packages = [(r[0], r[1], r[2]) for r in rows]
    sources = {r[0]: (r[3], r[4]) for r in rows if len(r) == 5}
    checkin = CheckIn(host_id, at, facts, {}, inventory_hash(packages, sources), packages,
                      sources=sources)  # fmt: skip
    store.record_checkins([checkin])


def _match(store: Store) -> int:
    async def run() -> int:
        db = StoreThread(store)
        try:
            return await Matcher(db).run_once()
        finally:
            db._executor.shutdown(wait=True)

    return asyncio.run(run())


def _counts(store: Store) -> dict[str, tuple[int, int]]:
    return {v.vuln_id: (v.hosts, v.fixable) for v in store.list_vulns()}


def test_first_seen_fixed_and_reopened_with_counts_kept(store):
    a, b, c = "h-0000000000000000", "h-0000000000000001", "h-0000000000000002"
    _report(store, a, DEBIAN, _rows("3.0.11-1"))
    _report(store, b, DEBIAN, _rows("3.0.15-1"))
    _report(store, c, ALMA, [["openssl-libs", "1:3.0.7-25.el9", "x86_64"]])
    assert _match(store) == 3
    assert _match(store) == 0  # nothing changed: nothing matched again
    assert _counts(store) == {"CVE-1": (1, 0), "CVE-2": (2, 0), "CVE-3": (1, 0)}
    assert [v.vuln_id for v in store.list_vulns(min_severity="high")] == ["CVE-3", "CVE-1"]
    assert [v.vuln_id for v in store.list_vulns(ring=0)] == ["CVE-1", "CVE-2"]
    (opened,) = store.exposures(["CVE-1"])
    assert (opened.host_id, opened.fixed_at) == (a, None)

    # Patched: fixed now, first seen kept; the counts follow.
    _report(store, a, DEBIAN, _rows("3.0.15-1"))
    assert _match(store) == 1
    (closed,) = store.exposures(["CVE-1"])
    assert closed.first_seen == opened.first_seen
    assert closed.fixed_at is not None
    assert "CVE-1" not in _counts(store)
    assert [r[1] for r in store.remediations()] == ["CVE-1"]

    # Reverted to the old version: open again.
    _report(store, a, DEBIAN, _rows("3.0.11-1"))
    _match(store)
    (again,) = store.exposures(["CVE-1"])
    assert again.fixed_at is None
    assert _counts(store)["CVE-1"] == (1, 0)

    # Relabelled to another ring: matched again, counted in its new cell.
    store.relabel_host(a, Relabel({}, ring=2), "admin:test", NOW)
    assert _match(store) == 1
    assert [v.vuln_id for v in store.list_vulns(ring=2)] == ["CVE-1", "CVE-2"]
    assert [v.vuln_id for v in store.list_vulns(ring=0)] == []

    # Revoked: out of every count, and not a remediation.
    store.revoke_host(c, NOW)
    _match(store)
    assert "CVE-3" not in _counts(store)
    assert store.exposures(["CVE-3"]) == []


def test_an_import_that_drops_a_vuln_drops_its_exposures(store):
    a = "h-0000000000000000"
    _report(store, a, DEBIAN, _rows("3.0.11-1"))
    _match(store)
    summary = store.import_vulns("osv", False, None, [Vuln("CVE-1", withdrawn=True)], NOW, "x")
    assert summary.removed == 1
    _match(store)
    assert "CVE-1" not in _counts(store)
    assert store.exposures(["CVE-1"]) == []
    # The same import twice changes nothing.
    again = store.import_vulns("osv", False, None, FEED[1:], NOW, "x")
    assert (again.added, again.removed) == (0, 0)


def test_compliance_and_time_to_remediate(store):
    a, b, c = "h-0000000000000000", "h-0000000000000001", "h-0000000000000002"
    _report(store, a, DEBIAN, _rows("3.0.11-1"))
    _report(store, b, DEBIAN, _rows("3.0.15-1"))
    _report(store, c, ALMA, [["openssl-libs", "1:3.0.7-25.el9", "x86_64"]])
    _match(store)
    hosts = store.list_hosts()
    covered = {r[0] for r in store.affected_releases()}
    open_rows = store.exposures(open_only=True)
    first = store.fleet_first_seen()

    # Just seen: CVE-1 (high, 14 days) is within grace; CVE-3 was published
    # 30 days before NOW, past a critical's 7 days.
    report = compliance(hosts, open_rows, covered, first, DEFAULT_GRACE, NOW, "ring")
    assert [(b.host_id, b.vuln_id) for b in report.breaches] == [(c, "CVE-3")]
    assert [(g.key, g.hosts, g.on_policy) for g in report.groups] == [("0", 1, 1), ("1", 2, 1)]
    # Three weeks on, the high one has waited too long as well; the open
    # glibc issue has no fix and never counts against a host.
    later = compliance(hosts, open_rows, covered, first, DEFAULT_GRACE,
                       datetime.now(UTC) + timedelta(days=21))  # fmt: skip
    assert {(b.host_id, b.vuln_id) for b in later.breaches} == {(c, "CVE-3"), (a, "CVE-1")}
    assert later.groups[0].on_policy == 1

    done = [("h", "CVE-9", "high", NOW, NOW + timedelta(days=d)) for d in (1, 2, 3, 10)]
    (high,) = remediation(done)
    assert (high.count, high.mean, high.p90) == (4, timedelta(days=4), timedelta(days=10))


def _exposure(
    host: str,
    package: str,
    installed: str,
    fixed: str,
    binaries: Sequence[tuple[str, str]],
    ring: int = 0,
) -> vulns_pb2.Exposure:
    return vulns_pb2.Exposure(
        host_id=host, vuln_id="CVE-1", severity="high", package=package, installed=installed,
        fixed=fixed, os="debian 12", ring=ring,
        binaries=[vulns_pb2.BinaryPackage(name=n, version=v) for n, v in binaries],
    )  # fmt: skip


def test_plan_takes_minimums_only_where_every_host_has_the_package():
    exposures = [
        _exposure("h-0000000000000001", "openssl", "3.0.11-1", "3.0.15-1",
                  [("libssl3", "3.0.11-1"), ("openssl", "3.0.11-1")]),
        _exposure("h-0000000000000002", "openssl", "3.0.13-1", "3.0.15-1",
                  [("libssl3", "3.0.13-1+b1")], ring=2),
    ]  # fmt: skip
    text = render_plan(exposures, ["CVE-1"], "", "", "", {})
    doc = tomllib.loads(text)
    assert doc["patch"]["packages"] == [
        {"name": "libssl3", "min_version": "3.0.15-1"},
        {"name": "openssl"},  # one host only: the newest, no minimum
    ]
    assert doc["targets"]["hosts"] == ["h-0000000000000001", "h-0000000000000002"]
    assert doc["rollout"]["rings"] == [{"ring": 0}, {"ring": 2}]
    assert doc["campaign"] == {
        "name": "fix-cve-1",
        "description": "fixes CVE-1",
        "fixes": ["CVE-1"],
    }
    assert "# Not installed on every host" in text
    spec = parse_campaign(text, "plan")
    assert spec.targets.hosts == frozenset(doc["targets"]["hosts"])
    assert spec.fixes == ("CVE-1",)


def test_a_baseline_takes_the_fixes_old_and_severe_enough(store):
    a, c = "h-0000000000000000", "h-0000000000000002"
    _report(store, a, DEBIAN, _rows("3.0.11-1"))
    _report(store, c, ALMA, [["openssl-libs", "1:3.0.7-25.el9", "x86_64"]])
    _match(store)
    later = datetime.now(UTC) + timedelta(days=10)
    # CVE-1 (high) was first seen now: ten days on it is due at 7d, not at 30d.
    assert store.baseline_packages(a, "high", timedelta(days=7), later) == [
        ("libssl3", "3.0.15-1"), ("openssl", "3.0.15-1"),
    ]  # fmt: skip
    assert store.baseline_packages(a, "high", timedelta(days=30), later) == []
    assert store.baseline_packages(a, "critical", timedelta(0), later) == []
    # CVE-3 (critical) was disclosed 30 days before NOW; glibc's CVE-2 has no fix.
    assert store.baseline_packages(c, "critical", timedelta(days=14), NOW) == [
        ("openssl-libs", "1:3.0.7-27.el9")
    ]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ('baseline = { min_severity = "urgent" }', "'urgent': one of critical, high"),
        ('baseline = { older_than = "7d" }', "min_severity"),
        ('baseline = { min_severity = "high", age = "7d" }', "age"),
    ],
)
def test_a_bad_baseline_is_named(patch, reason):
    text = f'[campaign]\nname = "b"\n[patch]\n{patch}\n[[rollout.rings]]\nring = 0\n'
    with pytest.raises(CampaignError, match=r"patch\.baseline") as caught:
        parse_campaign(text, "b.toml")
    assert reason in str(caught.value)


def test_targets_hosts_must_be_host_ids():
    text = '[campaign]\nname = "b"\n[patch]\npackages = ["x"]\n[targets]\nhosts = ["web1"]\n'
    with pytest.raises(CampaignError, match=r"'web1' is not a host id"):
        parse_campaign(text + "[[rollout.rings]]\nring = 0\n", "b.toml")


def test_targets_hosts_narrow_a_campaign_in_the_one_scheduler():
    """The controller and the simulator (`campaign rehearse`) decide with
    the same scheduler: a planned campaign targets exactly its hosts."""
    text = (
        '[campaign]\nname = "b"\n[patch]\npackages = ["x"]\n'
        '[targets]\nhosts = ["h-0000000000000001"]\n[[rollout.rings]]\nring = 0\n'
    )
    spec = parse_campaign(text, "b.toml")
    listed = HostFacts("h-0000000000000001", "eu", 0, {}, "debian")
    other = HostFacts("h-0000000000000002", "eu", 0, {}, "debian")
    assert targeting_mismatch(spec, listed) == ""
    assert targeting_mismatch(spec, other) == "the host is not in [targets] hosts"
