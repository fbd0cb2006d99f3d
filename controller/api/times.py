"""Protobuf's time types <-> datetime and timedelta: the conversions the
admin CLI needs, apart from `convert` and the controller's model it pulls in,
so that a command starts without importing the campaign engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from controller.errors import UsageError

# The times the controller takes from a file (a campaign's deadline and
# blackout days, an advisory's dates, an audit checkpoint's time): years
# EARLIEST_YEAR to LATEST_YEAR, as written. Protobuf's Timestamp and
# Python's datetime end at 9999-12-31 (and begin at year 1); a time at
# either edge overflows as soon as it is moved to UTC (up to a day) or has
# a grace period or a day and a half added, so these leave room for that.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000
OUT_OF_RANGE = f"is out of range (years {EARLIEST_YEAR} to {LATEST_YEAR})"


def in_range(value: date) -> bool:
    """Whether ``value`` (a date, or a date-time at any offset) is in the
    years this controller takes (EARLIEST_YEAR to LATEST_YEAR, as written):
    then it, its UTC form, and either moved by years stay representable.
    Callers refuse one that is not, with OUT_OF_RANGE."""
    return EARLIEST_YEAR <= value.year <= LATEST_YEAR


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
