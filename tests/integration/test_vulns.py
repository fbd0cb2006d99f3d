"""Vulnerability feeds against a real controller (issue 15): import the
Debian Security Tracker and OSV records through the CLI, see which hosts
are exposed, plan a campaign that fixes exactly them, watch the exposure
close and the compliance figures follow.

Hosts are enrolled for real and check in over mutual TLS with the
inventories of this test (a Debian 12 host on an old OpenSSL, one already
fixed, an AlmaLinux 9 host): what a real agent sends, with chosen versions.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fleetpatch.v1 import types_pb2

from agent.backends.packages import Inventory
from agent.host import facts as hostfacts
from agent.link.checkin import CheckInReport, CheckIns
from agent.link.client import ControllerClient
from agent.orders.journal import Journal
from agent.statedir import StateDir
from controller.cli import schemas
from tests.support.controller import Controller, cli
from tests.support.waiting import wait_for

FIXTURES = Path(__file__).parent.parent / "fixtures"
TRACKER = FIXTURES / "vulns" / "debian-tracker.json"
OSV = FIXTURES / "vulns" / "osv"

OLD_SSL = "3.0.11-1~deb12u2"
FIXED_SSL = "3.0.15-1~deb12u1"


def _debian(ssl: str) -> Inventory:
    packages = [
        ("libssl3", ssl, "amd64"), ("openssl", ssl, "amd64"), ("bash", "5.2.15-2+b7", "amd64"),
        ("libc6", "2.36-9+deb12u10", "amd64"),
    ]  # fmt: skip
    return Inventory(
        sorted(packages),
        {
            "libssl3": ("openssl", ssl),
            "libc6": ("glibc", "2.36-9+deb12u10"),
            "bash": ("bash", "5.2.15-2"),
        },
    )


ALMA = Inventory(
    [("bash", "5.1.8-9.el9", "x86_64"), ("openssl-libs", "1:3.0.7-25.el9_3", "x86_64")],
    {"openssl-libs": ("openssl", "1:3.0.7-25.el9_3")},
)


class Host:
    """An enrolled host whose check-ins carry the inventory and OS we say."""

    def __init__(self, ctl: Controller, state: Path, os_id: str, os_version: str) -> None:
        assert ctl.enroll(state, ctl.token()).returncode == 0
        self.sd = StateDir(state)
        self.host_id = self.sd.host_id()
        self.facts = dataclasses.replace(
            hostfacts.collect(), os_id=os_id, os_version=os_version,
            package_manager="apt" if os_id == "debian" else "dnf",
        )  # fmt: skip
        self._ctl = ctl

    def check_in(self, inventory: Inventory) -> CheckInReport:
        sd = self.sd
        client = ControllerClient(
            self._ctl.address, sd.read(sd.ca), sd.read(sd.key), sd.read(sd.cert)
        )
        journal = Journal.open(sd.journal)
        try:
            return CheckIns(
                sd.config(), journal, client, collect_facts=lambda: self.facts,
                take_inventory=lambda _: inventory,
            ).once()  # fmt: skip
        finally:
            client.close()
            journal.close()


@pytest.fixture
def fleet(controller: Controller, tmp_path: Path) -> dict[str, Host]:
    hosts = {
        "old": Host(controller, tmp_path / "old", "debian", "12"),
        "fixed": Host(controller, tmp_path / "fixed", "debian", "12"),
        "alma": Host(controller, tmp_path / "alma", "almalinux", "9.4"),
    }
    hosts["old"].check_in(_debian(OLD_SSL))
    hosts["fixed"].check_in(_debian(FIXED_SSL))
    hosts["alma"].check_in(ALMA)
    return hosts


def _json(ctl: Controller, *args: str | Path, schema: schemas.Schema) -> Any:
    """A command's --json output, held to its documented schema."""
    doc = ctl.admin_json(*args)
    assert schemas.check(doc, schema) == []
    return doc


def _exposed(ctl: Controller) -> dict[str, Any]:
    """Vulnerability id -> its `vulns list --json` entry."""
    found = _json(ctl, "vulns", "list", schema=schemas.array(schemas.VULN_SUMMARY))
    return {v["vuln_id"]: v for v in found}


def _show(ctl: Controller, vuln_id: str) -> Any:
    return _json(ctl, "vulns", "show", vuln_id, schema=schemas.VULN_SHOWN)


def _matched(ctl: Controller, *ids: str) -> dict[str, Any]:
    return wait_for(
        "hosts matched against the feeds",
        lambda: _exposed(ctl),
        lambda found: all(i in found for i in ids),
    )


def test_import_then_see_who_is_exposed_and_out_of_policy(controller, fleet):
    old, fixed, alma = fleet["old"].host_id, fleet["fixed"].host_id, fleet["alma"].host_id
    out = controller.admin("vulns", "import", TRACKER, OSV).stdout
    assert "6 vulnerabilities from debian-tracker (6 new, 0 removed)" in out
    assert "4 vulnerabilities from osv (4 new, 0 removed)" in out

    listed = _matched(controller, "CVE-2024-5535", "ALSA-2024:3501")
    # The old OpenSSL is exposed through its source package, libssl3 and openssl both.
    assert listed["CVE-2024-5535"]["hosts"] == 1
    assert listed["CVE-2024-5535"]["packages"] == ["openssl"]
    assert listed["CVE-2024-5535"]["fixed_versions"] == [FIXED_SSL]
    assert listed["DSA-5764-1"]["hosts"] == 1
    # Fixed before 3.0.11 and never-affected ("0") entries expose nobody;
    # glibc's unimportant open issue has no fix and exposes both Debian hosts.
    assert "CVE-2023-0464" not in listed
    assert listed["CVE-2010-4756"]["hosts"] == 2
    assert listed["CVE-2010-4756"]["fixed_versions"] == []
    # rpm versions with epochs, binary package names, on AlmaLinux 9 only.
    assert listed["ALSA-2024:3501"]["hosts"] == 1
    # The packages and fixed versions are the feed's, for the fleet's releases.
    assert listed["ALSA-2024:3501"]["packages"] == ["openssl", "openssl-devel", "openssl-libs"]
    assert "RLSA-2024:0310" not in listed  # Rocky Linux 8: no such host

    shown = _show(controller, "CVE-2024-5535")
    exposures = shown["exposures"]
    assert isinstance(exposures, list)
    assert {e["host_id"] for e in exposures} == {old}
    assert {e["installed"] for e in exposures} == {OLD_SSL}
    # An alias finds the advisory that fixes it.
    assert [v["vuln_id"] for v in _show(controller, "CVE-2024-2511")["vulns"]] == ["ALSA-2024:3501"]

    host = _json(controller, "hosts", "show", old, schema=schemas.HOST_SHOWN)
    assert {"CVE-2024-5535", "CVE-2024-9143", "DSA-5764-1"} <= {
        e["vuln_id"] for e in host["exposures"]
    }
    assert controller.host(fixed)["exposures"] == [
        e for e in controller.host(fixed)["exposures"] if e["vuln_id"] == "CVE-2010-4756"
    ]

    # The same feed again changes nothing.
    again = controller.admin("vulns", "import", TRACKER).stdout
    assert "(0 new, 0 removed)" in again
    assert _exposed(controller).keys() == listed.keys()

    # Compliance: the AlmaLinux advisory and the DSA were published in
    # 2024, past any grace: those hosts are out of policy. The tracker's
    # CVEs have no date: first seen on the fleet just now, within grace.
    report = _json(controller, "compliance", "--by", "os", schema=schemas.COMPLIANCE)
    breaches = {(b["host_id"], b["vuln_id"]) for b in report["out_of_policy"]}
    assert breaches == {(alma, "ALSA-2024:3501"), (old, "DSA-5764-1")}
    by_os = {g["key"]: g for g in report["groups"]}
    assert by_os["almalinux 9.4"]["on_policy"] == 0
    assert by_os["debian 12"] == {"key": "debian 12", "hosts": 2, "on_policy": 1, "unassessed": 0}


def _match_often(ctl: Controller) -> None:
    """vulns.match_interval of 1s (default 1m): a changed inventory is
    matched within seconds. Restarts the controller."""
    config = ctl.data_dir / "controller.toml"
    text = config.read_text()
    assert 'match_interval = "1m"' in text
    ctl.stop()
    config.write_text(text.replace('match_interval = "1m"', 'match_interval = "1s"'))
    ctl.start()


def test_plan_a_campaign_then_the_fix_closes_the_exposure(controller, fleet, tmp_path):
    old = fleet["old"].host_id
    _match_often(controller)
    controller.admin("vulns", "import", TRACKER, OSV)
    _matched(controller, "CVE-2024-5535")

    # Plan: exactly the exposed host, each binary at the fixing version.
    plan = tmp_path / "plan.toml"
    controller.admin("campaign", "plan", "--cve", "CVE-2024-5535", "--out", plan)
    doc = tomllib.loads(plan.read_text())
    assert doc["targets"] == {"hosts": [old]}
    assert doc["patch"]["packages"] == [
        {"name": "libssl3", "min_version": FIXED_SSL},
        {"name": "openssl", "min_version": FIXED_SSL},
    ]
    assert set(doc["campaign"]["fixes"]) == {"CVE-2024-5535", "DSA-5764-1"}
    created = controller.admin("campaign", "create", plan)
    assert "(1 host(s) targeted now)" in created.stderr
    campaign_id = created.stdout.strip()
    fixing = _show(controller, "CVE-2024-5535")["campaigns"]
    assert isinstance(fixing, list)
    assert campaign_id in {c["campaign_id"] for c in fixing}

    # The host is patched (its agent reports the new inventory): the
    # exposure closes, the host is listed as fixed, time to remediate counts it.
    fleet["old"].check_in(_debian(FIXED_SSL))
    wait_for(
        "the patched host matched again",
        lambda: _exposed(controller),
        lambda found: "CVE-2024-5535" not in found,
    )
    shown = _show(controller, "CVE-2024-5535")
    closed = [e for e in shown["exposures"] if e["fixed_at"]]
    assert {e["host_id"] for e in closed} == {old}
    report = _json(controller, "compliance", schema=schemas.COMPLIANCE)
    remediated = {r["severity"]: r for r in report["remediation"]}
    # CVE-2024-5535 and DSA-5764-1 (no severity), CVE-2024-9143 (low).
    assert {k: r["count"] for k, r in remediated.items()} == {"unknown": 2, "low": 1}
    assert remediated["low"]["mean"] <= remediated["low"]["p90"] < 3600
    table = controller.admin("compliance", "--by", "ring").stdout
    assert "on policy: 2 of 3 assessed host(s) (66.7%)" in table
    assert "ALSA-2024:3501" in table


BASELINE = """
[campaign]
name = "baseline-medium-30d"
[patch]
baseline = { min_severity = "medium", older_than = "30d" }
[targets]
os = ["almalinux", "debian"]
[rollout]
concurrency = 3
[[rollout.rings]]
ring = 1
"""


def test_a_patch_baseline_is_resolved_per_host_when_it_is_assigned(controller, fleet, tmp_path):
    """SSM's auto-approval rule: every fix of severity medium or worse
    disclosed at least 30 days ago. The AlmaLinux host gets its advisory's
    packages at the fixing version; the Debian host's exposures are to
    undated CVEs first seen just now, and the DSA of 2024: only the DSA's."""
    controller.admin("vulns", "import", TRACKER, OSV)
    _matched(controller, "ALSA-2024:3501", "DSA-5764-1")
    spec = tmp_path / "baseline.toml"
    spec.write_text(BASELINE)
    campaign_id = controller.admin("campaign", "create", spec).stdout.strip()
    controller.admin("campaign", "approve", campaign_id)

    def packages(host: Host, inventory: Inventory) -> list[tuple[str, str]]:
        report = wait_for("an order", lambda: host.check_in(inventory),
                          lambda r: r.work_order is not None)  # fmt: skip
        assert report.work_order is not None
        order = types_pb2.WorkOrder.FromString(report.work_order.payload)
        return [(p.name, p.min_version) for p in order.patch.packages]

    assert packages(fleet["alma"], ALMA) == [("openssl-libs", "1:3.0.7-27.el9")]
    # DSA-5764-1 has no severity (unknown, below medium): nothing for Debian.
    assert packages(fleet["old"], _debian(OLD_SSL)) == []


BAD_FEEDS = [
    ("pypi.json", "ecosystem 'PyPI' is not one fleetpatch matches"),
    ("truncated.json", "not valid JSON: parse error: premature EOF"),
    ("badversion.json", "'not a version!' is not a dpkg version"),
]


def test_a_bad_feed_is_one_line_and_changes_nothing(controller):
    controller.admin("vulns", "import", OSV)
    before = controller.admin_json("vulns", "list")
    for feed, reason in BAD_FEEDS:
        done = cli("fleetpatch", "vulns", "import", FIXTURES / "vulns-bad" / feed,
                   "--data-dir", controller.data_dir)  # fmt: skip
        assert done.returncode == 2, done
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert reason in done.stderr
        assert "nothing was imported" in done.stderr
        assert controller.admin_json("vulns", "list") == before


def test_unknown_ids_are_not_found(controller):
    controller.admin("vulns", "import", OSV)
    for argv in (
        ["vulns", "show", "CVE-1999-0000"],
        ["campaign", "plan", "--cve", "CVE-1999-0000"],
    ):
        done = cli("fleetpatch", *argv, "--data-dir", controller.data_dir)
        assert done.returncode == 5, done
        assert done.stderr.strip() == (
            "fleetpatch: error: no imported vulnerability or advisory is named 'CVE-1999-0000'"
        )
    done = cli(
        "fleetpatch", "campaign", "plan", "--severity", "urgent", "--data-dir", controller.data_dir
    )
    assert done.returncode == 2
    assert "--severity 'urgent'" in done.stderr


def test_json_of_import(controller):
    docs = json.loads(controller.admin("vulns", "import", OSV, "--json").stdout)
    assert schemas.check(docs, schemas.array(schemas.VULN_IMPORTED)) == []
    assert docs[0]["records"] == 4
