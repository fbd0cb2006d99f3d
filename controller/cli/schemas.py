"""The documented shape of every `--json` output of the admin CLI, as JSON
Schema (draft 2020-12 vocabulary, the small part used here), and a checker
for it that needs no library.

Objects list every property and allow no others: a field added to the
output must be added here (and to the README), which is what makes it a
contract. `tests/integration/test_cli_json.py` runs every `--json` command
against a real controller and checks its output with `check`.

    fleetpatch token create --json      TOKEN_CREATED
    fleetpatch token list --json        array of TOKEN
    fleetpatch hosts list --json        array of HOST
    fleetpatch hosts show --json        HOST_SHOWN (HOST and its packages)
    fleetpatch hosts relabel --json     HOST
    fleetpatch campaign list --json     array of CAMPAIGN
    fleetpatch campaign show --json     CAMPAIGN
    fleetpatch campaign show --hosts --json   array of CAMPAIGN_HOST
    fleetpatch campaign watch --json    WATCH_EVENT, one per line
    fleetpatch release list --json      array of RELEASE
    fleetpatch audit export --json      array of AUDIT_RECORD
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]
# RFC 3339, UTC, with Z; fractions of a second optional.
TIME_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"

STR: Schema = {"type": "string", "minLength": 1}
NSTR: Schema = {"type": ["string", "null"], "minLength": 1}
INT: Schema = {"type": "integer", "minimum": 0}
SINT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}
NTIME: Schema = {"type": ["string", "null"], "format": "date-time", "pattern": TIME_PATTERN}


def obj(**properties: Schema) -> Schema:
    return {
        "type": "object", "properties": properties, "required": sorted(properties),
        "additionalProperties": False,
    }  # fmt: skip


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def mapping(values: Schema) -> Schema:
    return {"type": "object", "additionalProperties": values}


def enum(*words: str | None) -> Schema:
    return {"enum": list(words)}


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
    owes=array(enum("reboot", "restart")),
)  # fmt: skip
PACKAGE = obj(name=STR, version=STR, arch=NSTR)
HOST_SHOWN = {**HOST, "properties": {**HOST["properties"], "packages": array(PACKAGE)},
              "required": sorted([*HOST["required"], "packages"])}  # fmt: skip

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
    agent_update={"anyOf": [{"type": "null"}, obj(version=STR, rollback_after=STR)]},
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
)  # fmt: skip
AUDIT_RECORD = obj(
    seq=INT, at=TIME, actor=STR, action=STR, target=NSTR, outcome=NSTR, detail=NSTR,
    prev_hash=STR, hash=STR,
)  # fmt: skip

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "boolean": (bool,), "object": (dict,),
    "array": (list,), "null": (type(None),),
}  # fmt: skip


def check(value: Any, schema: Schema, path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema``: one line per problem, empty when
    it holds."""
    if "anyOf" in schema:
        fits = any(not check(value, option, path) for option in schema["anyOf"])
        return [] if fits else [f"{path}: {value!r} matches none of the allowed shapes"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: {value!r} not in {schema['enum']}"]
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(_is(value, kind) for kind in kinds):
        return [f"{path}: {value!r} is not {' or '.join(kinds)}"]
    if isinstance(value, dict):
        return _check_object(value, schema, path)
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in check(v, schema["items"], f"{path}[{i}]")]
    return _check_scalar(value, schema, path)


def _check_scalar(value: Any, schema: Schema, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        problems.append(f"{path}: empty string (null is for missing values)")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int) and value < schema.get("minimum", value):
        problems.append(f"{path}: {value} is below {schema['minimum']}")
    return problems


def _is(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def _check_object(value: dict[str, Any], schema: Schema, path: str) -> list[str]:
    properties: dict[str, Schema] = schema.get("properties", {})
    problems = [f"{path}: {name!r} missing" for name in schema.get("required", [])
                if name not in value]  # fmt: skip
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problems += check(item, properties[name], f"{path}.{name}")
        elif extra is False:
            problems.append(f"{path}: {name!r} is not in the documented schema")
        elif isinstance(extra, dict):
            problems += check(item, extra, f"{path}.{name}")
    return problems
