"""JSON Schema (the small part of the draft 2020-12 vocabulary our CLIs'
schemas use) and a checker for it that needs no library: how each CLI's
`--json` outputs are written down (controller/cli/schemas.py,
agent/schemas.py) and held to in tests.

Objects list every property and allow no others: a field added to an
output must be added to its schema, which is what makes it a contract.
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
