"""The documented shape of every `--json` output of the admin CLI, as JSON
Schema (fleetpatch.jsonschema: the vocabulary and its checker).

Objects list every property and allow no others: a field added to the
output must be added here (and to the README), which is what makes it a
contract. `tests/integration/test_cli_json.py` runs every `--json` command
against a real controller and checks its output with `check`.

    fleetpatch token create --json      TOKEN_CREATED
    fleetpatch token list --json        array of TOKEN
    fleetpatch hosts list --json        array of HOST
    fleetpatch hosts show --json        HOST_SHOWN (HOST, its packages and updates available)
    fleetpatch hosts relabel --json     HOST
    fleetpatch campaign list --json     array of CAMPAIGN
    fleetpatch campaign show --json     CAMPAIGN
    fleetpatch campaign show --hosts --json   array of CAMPAIGN_HOST
    fleetpatch campaign watch --json    WATCH_EVENT, one per line
    fleetpatch release list --json      array of RELEASE
    fleetpatch audit export --json      array of AUDIT_RECORD
    fleetpatch vulns import --json      array of VULN_IMPORTED
    fleetpatch vulns list --json        array of VULN_SUMMARY
    fleetpatch vulns show --json        VULN_SHOWN
    fleetpatch compliance --json        COMPLIANCE
    fleetpatch admin list --json        array of ADMIN
"""

from __future__ import annotations

from fleetpatch.jsonschema import (
    BOOL,
    INT,
    NSTR,
    NTIME,
    STR,
    TIME,
    Schema,
    array,
    check,
    enum,
    mapping,
    obj,
)  # fmt: skip

TOKEN = obj(
    token_id=STR, region=STR, ring=INT, labels=mapping(STR), uses_allowed=INT, uses=INT,
    created_at=TIME, expires_at=TIME, revoked=BOOL,
)  # fmt: skip
TOKEN_CREATED = {**TOKEN, "properties": {**TOKEN["properties"], "token": STR},
                 "required": sorted([*TOKEN["required"], "token"])}  # fmt: skip

FACTS = obj(
    hostname=NSTR, os_id=NSTR, os_version=NSTR, os_codename=NSTR, os_like=NSTR, kernel=NSTR,
    arch=NSTR, cpu_count=INT, memory_bytes=INT, disk_total_bytes=INT, disk_free_bytes=INT,
    uptime_seconds=INT, boot_id=NSTR, machine_id=NSTR, timezone=NSTR, package_manager=NSTR,
    agent_version=NSTR,
)  # fmt: skip
CHECK = obj(name=STR, kind=NSTR, ok=BOOL, detail=NSTR)
HEALTH = obj(healthy=BOOL, checks=array(CHECK), observed_at=NTIME)
HOST = obj(
    host_id=STR, region=STR, ring=INT, labels=mapping(STR),
    status=enum("active", "revoked", "pending"), facts=FACTS, health=HEALTH,
    enrolled_at=TIME, last_seen=NTIME, inventory_hash=NSTR, package_count=INT,
    certificate_serial=NSTR, certificate_expires_at=NTIME, inventory_updates=INT, checkins=INT,
    owes=array(enum("reboot", "restart")), certificate_renew_at=NTIME, renewal_failures=INT,
    renewal_error=NSTR, renewal_failing=BOOL,
)  # fmt: skip
PACKAGE = obj(name=STR, version=STR, arch=NSTR, source=NSTR, source_version=NSTR)
AVAILABLE_UPDATE = obj(
    name=STR, arch=NSTR, installed=NSTR, candidate=STR, origin=NSTR, security=BOOL,
    severity=NSTR, advisory=NSTR, reboot=BOOL,
)  # fmt: skip
UPDATES = {"anyOf": [{"type": "null"},
                     obj(scanned_at=NTIME, available=array(AVAILABLE_UPDATE))]}  # fmt: skip
SEVERITY = enum("critical", "high", "medium", "low", "negligible", "unknown")
EXPOSURE = obj(
    host_id=STR, vuln_id=STR, severity=SEVERITY, package=STR, installed=STR, fixed=NSTR,
    available=BOOL, first_seen=TIME, fixed_at=NTIME, region=STR, ring=INT, os=NSTR,
    published=NTIME, binaries=array(obj(name=STR, version=STR)),
)  # fmt: skip
HOST_SHOWN = {
    **HOST,
    "properties": {**HOST["properties"], "packages": array(PACKAGE), "updates": UPDATES,
                   "exposures": array(EXPOSURE)},
    "required": sorted([*HOST["required"], "packages", "updates", "exposures"]),
}  # fmt: skip
VULN_SUMMARY = obj(
    vuln_id=STR, severity=SEVERITY, published=NTIME, hosts=INT, fixable=INT,
    fixed_versions=array(STR), packages=array(STR), first_seen=NTIME,
)  # fmt: skip
VULNERABILITY = obj(
    vuln_id=STR, severity=SEVERITY, summary=NSTR, published=NTIME, modified=NTIME,
    aliases=array(STR), withdrawn=BOOL, source=NSTR,
    affected=array(obj(release=STR, package=STR, introduced=NSTR, fixed=NSTR)),
)  # fmt: skip
VULN_SHOWN = obj(
    vulns=array(VULNERABILITY), exposures=array(EXPOSURE),
    campaigns=array(obj(campaign_id=STR, name=STR, state=STR)),
)  # fmt: skip
VULN_IMPORTED = obj(source=STR, records=INT, added=INT, removed=INT)
COMPLIANCE = obj(
    groups=array(obj(key=STR, hosts=INT, on_policy=INT, unassessed=INT)),
    out_of_policy=array(obj(host_id=STR, group=STR, vuln_id=STR, severity=SEVERITY,
                            package=STR, fixed=STR, age=INT, grace=INT)),
    remediation=array(obj(severity=SEVERITY, count=INT, mean=INT, p90=INT)),
    policy=array(obj(severity=SEVERITY, grace=INT)),
)  # fmt: skip

COUNTS = ("eligible", "waiting", "in_flight", "succeeded", "failed", "reverted",
          "revert_failed", "timed_out")  # fmt: skip
CELL = obj(
    ring=INT, region=STR, **dict.fromkeys(COUNTS, INT), unreachable=INT, silent=INT,
    waiting_reasons=mapping(INT), next_change=NTIME, pending_reboot=INT, pending_restart=INT,
)  # fmt: skip
CAMPAIGN_STATES = ("draft", "approved", "running", "paused", "halted", "completed", "aborted")
CAMPAIGN = obj(
    campaign_id=STR, name=STR, state=enum(*CAMPAIGN_STATES), kind=STR, created_by=STR,
    created_at=TIME, approved_at=NTIME, updated_at=TIME, halt_kind=NSTR, halt_reason=NSTR,
    emergency=BOOL, revert_requested=BOOL, cells=array(CELL),
    agent_update={"anyOf": [
        {"type": "null"},
        obj(version=STR, rollback_after=STR, no_release=mapping(INT)),
    ]},
    totals=obj(**dict.fromkeys(COUNTS, INT)),
)  # fmt: skip
CHANGE = obj(name=STR, from_version=NSTR, to_version=NSTR)
CAMPAIGN_HOST = obj(
    host_id=STR, hostname=NSTR, ring=INT, region=STR, kind=enum("patch", "revert"),
    status=enum("in_flight", "succeeded", "failed", "reverted", "revert_failed", "timed_out",
                "pending_reboot", "pending_restart"),
    step=NSTR, detail=NSTR, assigned_at=TIME, finished_at=NTIME, changes=array(CHANGE),
)  # fmt: skip
WATCH_EVENT = obj(
    at=TIME, campaign_id=STR, name=STR, state=enum(*CAMPAIGN_STATES), halt_reason=NSTR,
    totals=obj(**dict.fromkeys(COUNTS, INT)),
)  # fmt: skip
RELEASE = obj(
    version=STR, artifact=STR, sha256={"type": "string", "pattern": "^[0-9a-f]{64}$"},
    size=INT, key_fingerprint=NSTR, published_at=TIME, published_by=STR,
    family=enum("deb", "rpm"),
)  # fmt: skip
AUDIT_RECORD = obj(
    seq=INT, at=TIME, actor=STR, action=STR, target=NSTR, outcome=NSTR, detail=NSTR,
    prev_hash=STR, hash=STR,
)  # fmt: skip
ADMIN = obj(
    name=STR, role=enum("viewer", "operator", "approver", "owner"), revoked=BOOL,
    created_at=TIME, created_by=STR, revoked_at=NTIME, certificate_serial=NSTR,
    certificate_expires_at=NTIME,
)  # fmt: skip

__all__ = ["Schema", "array", "check"]
