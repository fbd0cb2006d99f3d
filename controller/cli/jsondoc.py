"""The admin CLI's JSON: protobuf messages as documents scripts can rely on.

The rules (README, "JSON output"; `schemas` holds every document to them):

- every field of the message is present, under its proto field name;
- enum values are lower-case words, as the tables print them (`active`,
  not `HOST_STATUS_ACTIVE`); the unspecified value is null;
- times are RFC 3339 in UTC with `Z` (`2026-12-01T12:00:00Z`, fractions of
  a second where the controller has them); a time not set is null;
- a string that is empty (not set) is null; bytes are lower-case hex;
- 64-bit integers are numbers (not the strings of protobuf's JSON mapping);
- durations are whole seconds, a number (an age of 3 days is 259200);
- maps are objects, repeated fields arrays (empty when empty).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetpatch import render
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

# String fields that carry a time (the controller's isoformat): as RFC 3339.
_STRING_TIMES = frozenset({"next_change"})


# Messages written as one value (a time, a number of seconds): null when unset.
_SCALAR_MESSAGES = frozenset({Timestamp.DESCRIPTOR.full_name, Duration.DESCRIPTOR.full_name})


def doc(message: Message) -> dict[str, Any]:
    """``message`` as a JSON document by the rules above."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.message_type is not None and not message.HasField(field.name):
            scalar = field.message_type.full_name in _SCALAR_MESSAGES
            out[field.name] = None if scalar else doc(value)
        else:
            out[field.name] = _value(field, value)
    return out


# Descriptors are typed as the pure-Python or the upb class: Any here.
def _value(field: Any, value: Any) -> Any:
    if isinstance(value, Timestamp):
        return timestamp(value)
    if isinstance(value, Duration):
        return int(value.ToTimedelta().total_seconds())
    if isinstance(value, Message):
        return doc(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_word(field.enum_type, value)
    return _scalar(field, value)


def _scalar(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex() or None
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name in _STRING_TIMES and value:
            return rfc3339(datetime.fromisoformat(value))
        return value or None
    return value


def enum_word(enum: Any, number: int) -> str | None:
    """``HOST_STATUS_ACTIVE`` of enum ``HostStatus`` -> ``active``;
    ``..._UNSPECIFIED`` -> None."""
    name = enum.values_by_number[number].name if number in enum.values_by_number else ""
    prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    word = name.removeprefix(prefix).lower()
    return None if word in ("", "unspecified") else word


def timestamp(value: Timestamp) -> str | None:
    """RFC 3339 with Z; None for the zero time (not set)."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToJsonString()


def rfc3339(at: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with Z (`render.rfc3339`)."""
    return str(render.rfc3339(at))
