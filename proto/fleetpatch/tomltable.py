"""Typed reading of one TOML table, with the path of every value kept for
error messages and every key accounted for.

A campaign file and an agent's settings are safety documents: a misspelt
key (``failure_buget``, ``allow_reboots``) that is silently ignored would
leave a default in force that the author believed they had changed. So
every key read is recorded, and `Table.finish` rejects whatever is left,
suggesting the nearest known name. The controller's campaign files and
the agent's agent.toml are read with it, so both speak the same way.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from .durations import parse_duration

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

# TOML's own names for the types, so messages speak the file's language.
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is an int in Python
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime, "a date-time"),  # before date: datetime is a date in Python
    (date, "a date"),
    (time, "a time"),
)


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A TOML document with another's keys on top: a table's keys one by
    one, anything else (a value, an array of tables) as a whole. How an
    administrator's settings file in /etc/fleetpatch overrides the one a
    command wrote into the state or data dir."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = {**below, **value}
        else:
            merged[key] = value
    return merged


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type (``an integer``, ``a table``)."""
    for kind, name in _TOML_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _type_name(kind: type) -> str:
    if kind is float:
        return "a number"  # integers are accepted where floats are
    return dict(_TOML_TYPES).get(kind, kind.__name__)


def _is(value: object, kind: type) -> bool:
    if kind is object:
        return True
    if isinstance(value, bool) and kind is not bool:
        return False
    if kind is float:
        return isinstance(value, int | float)
    if kind is date and isinstance(value, datetime):
        return False
    return isinstance(value, kind)


_SHOWN = 64  # characters of a value a message quotes


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "...")


def _as_float(value: Any) -> Any:
    """``value`` (an int or a float) as a float; None for an integer no
    float holds (TOML integers have no bound: 1 followed by 400 zeros)."""
    try:
        return float(value)
    except OverflowError:
        return None


class TableError(ValueError):
    """A value of a TOML document is missing, of the wrong type or breaks a rule.

    ``field`` is the dotted path of the offending value, as a person would
    find it in the file (``rollout.rings[1].gate.min_success``; empty when
    the file is not TOML at all); ``problem`` says what is wrong with it;
    ``source`` names the file.
    """

    def __init__(self, field: str, problem: str, source: str = "") -> None:
        self.field = field
        self.problem = problem
        self.source = source
        where = ": ".join(part for part in (source, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class Table:
    """One TOML table under a dotted path; raises ``error`` (a TableError
    class) naming fields."""

    def __init__(
        self, data: dict[str, Any], path: str, source: str, error: type[TableError] = TableError
    ) -> None:
        self._data = data
        self._path = path
        self._source = source
        self._error = error
        self._read: set[str] = set()

    def field(self, key: str) -> str:
        """The dotted path of ``key`` in this table; a key that is not
        printable (a line break, a terminal's escape) quoted as Python
        would, so that a message stays one line and shows what is there."""
        if not key.isprintable():
            key = repr(key)
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, problem: str) -> TableError:
        """An error about ``key`` of this table (``key`` empty: the table)."""
        return self._error(self.field(key) if key else self._path, problem, self._source)

    def at(self, field: str, problem: str) -> TableError:
        """An error about a field path built by the caller (array items)."""
        return self._error(field, problem, self._source)

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def child(self, data: dict[str, Any], path: str) -> Table:
        """A table found inside this one (an array item) at ``path``."""
        return Table(data, path, self._source, self._error)

    def maybe(self, key: str, kind: type[T]) -> T | None:
        """The value of ``key`` when present, checked to be of ``kind``."""
        self._read.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        if not _is(value, kind):
            raise self.error(key, f"must be {_type_name(kind)}, not {toml_type(value)}")
        if kind is float and (number := _as_float(value)) is None:
            raise self.error(key, f"is {len(str(value))} digits long: too large a number")
        out: T = number if kind is float else value
        return out

    def get(self, key: str, kind: type[T], default: T) -> T:
        """The value of ``key``, or ``default`` when the key is absent."""
        value = self.maybe(key, kind)
        return default if value is None else value

    def require(self, key: str, kind: type[T]) -> T:
        """The value of ``key``; a missing key is an error."""
        value = self.maybe(key, kind)
        if value is None:
            raise self.error(key, f"is required ({_type_name(kind)})")
        return value

    def items(self, key: str, kind: type[T]) -> list[tuple[str, T]]:
        """The elements of the array ``key`` (absent: none), each with its path."""
        values = self.maybe(key, list) or []
        out: list[tuple[str, T]] = []
        for index, value in enumerate(values):
            where = f"{self.field(key)}[{index}]"
            if not _is(value, kind):
                raise self.at(where, f"must be {_type_name(kind)}, not {toml_type(value)}")
            if kind is float and (number := _as_float(value)) is None:
                raise self.at(where, f"is {len(str(value))} digits long: too large a number")
            out.append((where, number if kind is float else value))
        return out

    def strings(self, key: str) -> tuple[str, ...]:
        """The array of strings ``key`` (absent: empty); duplicates are errors."""
        out: list[str] = []
        seen: set[str] = set()  # a plan names tens of thousands of hosts: no list scan each
        for where, value in self.items(key, str):
            if value in seen:
                raise self.at(where, f"{_shown(value)} is listed twice")
            seen.add(value)
            out.append(value)
        return tuple(out)

    def table(self, key: str) -> Table:
        """The sub-table ``key``; an absent one reads as empty."""
        data = self.get(key, dict, {})
        return Table(data, self.field(key), self._source, self._error)

    def tables(self, key: str) -> list[Table]:
        """The array of tables ``key`` (``[[key]]``); absent reads as empty."""
        return [
            Table(data, where, self._source, self._error) for where, data in self.items(key, dict)
        ]

    def duration(self, key: str, default: timedelta, *, positive: bool = False) -> timedelta:
        """The duration ``key`` (``"30m"``, ``"2h"``, ``"7d"``), or ``default``."""
        spelled = self.maybe(key, object)
        if spelled is None:
            return default
        if not isinstance(spelled, str):
            raise self.error(key, f"must be a duration such as '30m', not {toml_type(spelled)}")
        if len(spelled) > _SHOWN:  # no duration is that long; its words would quote it
            raise self.error(key, f"{_shown(spelled)} is not a duration such as '30m'")
        try:
            value = parse_duration(spelled)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if positive and value <= timedelta(0):
            raise self.error(key, "must be longer than 0s")
        return value

    def choice(self, key: str, kind: type[E], default: E) -> E:
        """One of the values of the StrEnum ``kind``, or ``default``."""
        spelled = self.get(key, str, default.value)
        try:
            return kind(spelled)
        except ValueError:
            allowed = ", ".join(repr(k.value) for k in kind)
            raise self.error(key, f"{_shown(spelled)} is not one of {allowed}") from None

    def finish(self) -> None:
        """Reject every key of this table that no reader asked for."""
        for key in self._data:
            if key in self._read:
                continue
            what = "table" if isinstance(self._data[key], dict) else "key"
            import difflib  # only to word an error: not loaded for every read

            if len(key) > 64:  # a key of a megabyte is not quoted whole, nor matched
                raise self.error(key[:61] + "...", f"unknown {what}")
            close = difflib.get_close_matches(key, sorted(self._read), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(key, f"unknown {what}{hint}; known here: {known}")
