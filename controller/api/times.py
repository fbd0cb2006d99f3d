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
