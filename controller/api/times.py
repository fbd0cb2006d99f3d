"""Protobuf's time types <-> datetime and timedelta: the conversions the
admin CLI needs, apart from `convert` and the controller's model it pulls in,
so that a command starts without importing the campaign engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from controller.errors import UsageError


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


# What protobuf's JSON form of a Timestamp takes (0001-01-01 to 9999-12-31).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def check_timestamp(ts: Timestamp) -> None:
    """UsageError when ``ts`` has no JSON form (`convert.to_json` would
    fail on it): checked where a message is kept to be converted later."""
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        raise UsageError(f"a timestamp is out of range: {ts.seconds} s, {ts.nanos} ns")


def from_timestamp(ts: Timestamp) -> datetime:
    """A request's timestamp; UsageError when it is out of range."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise UsageError(f"a timestamp is out of range: {exc}") from None


def duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d
