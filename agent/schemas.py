"""The documented shape of every `--json` output of `fleetpatch-agent`, as
JSON Schema (fleetpatch.jsonschema: the vocabulary and its checker), by the
same rules as the admin CLI's: every field present, times RFC 3339 with Z,
null for a missing value. Order states are the journal's stored names
(`SUCCEEDED`, ...), as `status` prints them.

    fleetpatch-agent status --json      STATUS
    fleetpatch-agent inventory --json   INVENTORY
    fleetpatch-agent check --json       CHECK
    fleetpatch-agent scan --json        array of AVAILABLE

`tests/integration/test_cli_json.py` holds a real agent's output to them.
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
    enum,
    obj,
)  # fmt: skip

from agent.orders.states import State

STATES = enum(*(s.value for s in State))
CHANGE = obj(name=STR, old=NSTR, new=NSTR, arch=NSTR, origin=NSTR)
STEP = obj(state=STATES, at=TIME, detail=NSTR)
ORDER = obj(
    order_id=STR, campaign_id=NSTR, sequence=INT, state=STATES, detail=NSTR, received_at=TIME,
    changes=array(CHANGE), steps=array(STEP),
)  # fmt: skip
REFUSAL = obj(at=TIME, order_id=NSTR, reason=STR, detail=NSTR)
STATUS: Schema = obj(
    host_id=STR, controller=STR, agent_version=STR,
    certificate=obj(serial=STR, expires_at=TIME, renew_at=TIME),
    release_key=obj(path=STR, fingerprint=NSTR),
    last_checkin=NTIME, last_attempt=NTIME, last_error=NSTR, next_checkin=NTIME,
    acknowledged_inventory=NSTR, reports_queued=INT, orders=array(ORDER),
    refusals=array(REFUSAL),
)  # fmt: skip
FACTS = obj(
    hostname=NSTR, os_id=NSTR, os_version=NSTR, os_codename=NSTR, os_like=NSTR, kernel=NSTR,
    arch=NSTR, cpu_count=INT, memory_bytes=INT, disk_total_bytes=INT, disk_free_bytes=INT,
    uptime_seconds=INT, boot_id=NSTR, machine_id=NSTR, timezone=NSTR, package_manager=NSTR,
    agent_version=NSTR,
)  # fmt: skip
INVENTORY: Schema = obj(
    facts=FACTS, inventory_hash=STR, packages=array(obj(name=STR, version=STR, arch=NSTR)),
)  # fmt: skip
CHECK: Schema = obj(
    healthy=BOOL, checks=array(obj(name=STR, kind=STR, ok=BOOL, detail=NSTR)),
)  # fmt: skip
AVAILABLE = obj(
    name=STR, arch=NSTR, installed=NSTR, candidate=STR, origin=NSTR, security=BOOL,
    severity=NSTR, advisory=NSTR, reboot=BOOL,
)  # fmt: skip
