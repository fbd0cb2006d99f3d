"""Vulnerability feeds read into one shape, `Vuln`: its id, severity, dates,
aliases and, per distribution release and package, the versions affected.

Two formats, told apart by their content:

- The Debian Security Tracker's JSON
  (https://security-tracker.debian.org/tracker/data/json): one object,
  source package -> CVE or TEMP id -> per release codename its status,
  fixed version and urgency. A full snapshot of its source: an import
  replaces what the previous one said. Tens of MB, so it is read one source
  package at a time (ijson), never whole.
- OSV records (https://ossf.github.io/osv-schema/), ecosystems Debian,
  Ubuntu, AlmaLinux and Rocky Linux: a file holding one record or a list of
  them, a directory of such files, or the zip osv.dev publishes per
  ecosystem (``<Ecosystem>/all.zip``). Records are upserted by id; a
  withdrawn one is removed.

Anything else, or a record that does not read, raises FeedError naming the
file and what is wrong: an import takes a feed whole or not at all. That
includes a file nested deeper than MAX_DEPTH (the streaming reader's
memory grows with the square of the depth, and a recursive one runs out of
stack), and a date that is not an RFC 3339 time in the years the
controller keeps (`controller.api.times.in_range`).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ijson

from controller.api.times import in_range
from controller.vulns import SEVERITIES, releases, versions

SEVERITY_WORDS = {
    "critical": "critical",
    "important": "high",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "negligible",
    "unimportant": "negligible",
}

TRACKER = "debian-tracker"
OSV = "osv"
MAX_ID = 128
MAX_SUMMARY = 500
# Arrays and objects inside one another: both formats need 6 or 7 levels.
MAX_DEPTH = 64
_TOO_DEEP = f"not valid JSON: nested more than {MAX_DEPTH} levels deep"
# ijson parses a buffer's worth before it hands out the events: a buffer of
# nothing but brackets costs the square of its size before `_bounded` sees
# them (64 KiB, its default, took seconds), a small one a few ms more a MB.
_BUFFER = 8192


class FeedError(ValueError):
    """A feed that cannot be imported: the message names the file and why."""


def severity(word: str) -> str:
    """A feed's severity word as one of SEVERITIES (``unknown`` when it
    says nothing we know)."""
    return SEVERITY_WORDS.get(word.strip().rstrip("*").lower(), "unknown")


def most_severe(*found: str) -> str:
    return min(found, key=SEVERITIES.index, default="unknown")


@dataclass(frozen=True)
class Affected:
    release: str  # releases.py key: debian:12
    package: str  # a source package on dpkg releases, a binary one on rpm
    introduced: str = ""  # "" or "0": from the first version
    fixed: str = ""  # "": no fix yet


@dataclass(frozen=True)
class Vuln:
    vuln_id: str
    severity: str = "unknown"
    summary: str = ""
    published: datetime | None = None  # disclosure, when the feed says
    modified: datetime | None = None
    aliases: tuple[str, ...] = ()
    affected: tuple[Affected, ...] = ()
    withdrawn: bool = False


@dataclass
class Feed:
    """What `read` found: the records, then (once they are all read) the
    feed's date."""

    source: str
    replace: bool  # a full snapshot: records its source no longer lists go
    records: Iterator[Vuln]
    dates: list[datetime] = field(default_factory=list)

    @property
    def date(self) -> datetime | None:
        return max(self.dates, default=None)


def read(path: Path) -> Feed:
    """The feed at ``path``: a tracker file, an OSV file, directory or zip.
    Records are read lazily; FeedError is raised as soon as one does not
    read, and for a path that is none of these."""
    if path.is_dir():
        feed = Feed(OSV, False, iter(()))
        feed.records = _osv_dir(path, feed)
        return feed
    try:
        if zipfile.is_zipfile(path):
            feed = Feed(OSV, False, iter(()))
            feed.records = _osv_zip(path, feed)
            return feed
        with path.open("rb") as stream:
            head = stream.read(4096)
    except OSError as exc:
        raise FeedError(f"{path}: {exc.strerror or exc}") from None
    text = head.lstrip()
    if text.startswith(b"["):
        feed = Feed(OSV, False, iter(()))
        feed.records = _osv_file(path, feed)
        return feed
    if not text.startswith(b"{"):
        raise FeedError(f"{path}: not a vulnerability feed (JSON object or list expected)")
    if _looks_like_osv(path):
        feed = Feed(OSV, False, iter(()))
        feed.records = _osv_file(path, feed)
        return feed
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    feed = Feed(TRACKER, True, iter(()), [mtime])
    feed.records = _tracker(path)
    return feed


def _looks_like_osv(path: Path) -> bool:
    """Whether a JSON object file is one OSV record: its top-level keys
    include ``id`` and one of OSV's (the tracker's keys are package names)."""
    try:
        with path.open("rb") as stream:
            keys = set()
            for prefix, event, value in _bounded(path, ijson.parse(stream, buf_size=_BUFFER)):
                if prefix == "" and event == "map_key":
                    keys.add(value)
                    if len(keys) > 64:
                        break
    except (ijson.JSONError, OSError, UnicodeDecodeError):
        return False  # the tracker reader says what is wrong, with its position
    return "id" in keys and bool(keys & {"affected", "modified", "schema_version", "withdrawn"})


# -- Debian Security Tracker -------------------------------------------------------


def _bounded(path: Path, events: Iterable[tuple[str, str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """ijson's events, with FeedError past MAX_DEPTH: before ijson's own
    bookkeeping (a prefix per level, each longer) takes the machine's memory."""
    depth = 0
    for prefix, event, value in events:
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise FeedError(f"{path}: {_TOO_DEEP}")
        elif event in ("end_map", "end_array"):
            depth -= 1
        yield prefix, event, value


def _tracker(path: Path) -> Iterator[Vuln]:
    try:
        with path.open("rb") as stream:
            events = _bounded(path, ijson.parse(stream, use_float=True, buf_size=_BUFFER))
            for package, cves in ijson.kvitems(events, ""):
                yield from _tracker_package(path, package, cves)
    except ijson.JSONError as exc:
        reason = " ".join(str(exc).split()).replace(" (right here) ------^", "")
        raise FeedError(f"{path}: not valid JSON: {reason}") from None
    except OSError as exc:
        raise FeedError(f"{path}: {exc.strerror or exc}") from None


def _tracker_package(path: Path, package: str, cves: object) -> Iterator[Vuln]:
    where = f"{path}: package {package!r}"
    if not isinstance(cves, dict):
        raise FeedError(f"{where}: not a Debian Security Tracker record (an object expected)")
    _check_name(where, package)
    for cve, record in cves.items():
        if not isinstance(record, dict) or not isinstance(record.get("releases", {}), dict):
            raise FeedError(f"{where}: {cve}: not a Debian Security Tracker record")
        _check_id(where, cve)
        found: list[Affected] = []
        urgencies: list[str] = []
        for codename, entry in record.get("releases", {}).items():
            if not isinstance(entry, dict):
                raise FeedError(f"{where}: {cve}: release {codename!r} is not an object")
            release = releases.tracker_release(codename)
            status = entry.get("status")
            urgency = str(entry.get("urgency", ""))
            if release is None or urgency == "end-of-life":
                continue
            fixed = entry.get("fixed_version", "")
            if not isinstance(fixed, str):
                raise FeedError(f"{where}: {cve}: {codename}: fixed_version is not a string")
            if status == "open":
                fixed = ""
            elif status != "resolved" or fixed in ("", "0"):
                continue  # undetermined, or never affected ("0")
            elif not versions.valid("dpkg", fixed):
                raise FeedError(f"{where}: {cve}: {codename}: {fixed!r} is not a dpkg version")
            found.append(Affected(release, package, "", fixed))
            urgencies.append(severity(urgency))
        if found:
            description = record.get("description", "")
            yield Vuln(
                cve, most_severe(*urgencies),
                description[:MAX_SUMMARY] if isinstance(description, str) else "",
                affected=tuple(found),
            )  # fmt: skip


# -- OSV ---------------------------------------------------------------------------


def _osv_dir(root: Path, feed: Feed) -> Iterator[Vuln]:
    files = sorted(p for p in root.rglob("*.json") if p.is_file())
    if not files:
        raise FeedError(f"{root}: no .json files (OSV records) in this directory")
    for path in files:
        yield from _osv_file(path, feed)


def _osv_zip(path: Path, feed: Feed) -> Iterator[Vuln]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".json"))
            if not names:
                raise FeedError(f"{path}: no .json files (OSV records) in this zip")
            for name in names:
                where = f"{path}:{name}"
                yield from _osv_doc(where, _json(where, archive.read(name)), feed)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FeedError(f"{path}: {exc}") from None


def _osv_file(path: Path, feed: Feed) -> Iterator[Vuln]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeedError(f"{path}: {exc.strerror or exc}") from None
    yield from _osv_doc(str(path), _json(str(path), data), feed)


def _json(where: str, data: bytes) -> object:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise FeedError(f"{where}: {_TOO_DEEP}") from None


def _osv_doc(where: str, doc: object, feed: Feed) -> Iterator[Vuln]:
    for record in doc if isinstance(doc, list) else [doc]:
        try:
            vuln = osv_record(where, record)
        except RecursionError:  # a value quoted in a message, nested just short of json's limit
            raise FeedError(f"{where}: {_TOO_DEEP}") from None
        if vuln.modified is not None:
            feed.dates.append(vuln.modified)
        yield vuln


def osv_record(where: str, record: object) -> Vuln:
    """One OSV record as a Vuln; raises FeedError."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise FeedError(f"{where}: not an OSV record (an object with an id expected)")
    vuln_id = record["id"]
    _check_id(where, vuln_id)
    where = f"{where}: {vuln_id}"
    modified = _time(where, record, "modified")
    published = _time(where, record, "published")
    if _time(where, record, "withdrawn") is not None:
        return Vuln(vuln_id, modified=modified, withdrawn=True)
    affected: list[Affected] = []
    words: list[str] = []
    for entry in _list(where, record, "affected"):
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not isinstance(package.get("name"), str):
            raise FeedError(f"{where}: an affected entry has no package name")
        try:
            release = releases.osv_release(str(package.get("ecosystem", "")))
        except ValueError as exc:
            raise FeedError(f"{where}: {exc}") from None
        words += _severity_words(entry.get("ecosystem_specific"))
        words += _severity_words(entry.get("database_specific"))
        if release is None:
            continue
        _check_name(where, package["name"])
        affected += _ranges(where, release, package["name"], entry)
    words += _severity_words(record.get("database_specific"))
    for item in _list(where, record, "severity"):
        if isinstance(item, dict) and item.get("type") == "Ubuntu":
            words.append(str(item.get("score", "")))
    aliases = [a for a in _list(where, record, "aliases") + _list(where, record, "upstream")]
    summary = record.get("summary") or record.get("details") or ""
    return Vuln(
        vuln_id,
        most_severe(*(severity(w) for w in words)),
        summary[:MAX_SUMMARY] if isinstance(summary, str) else "",
        published,
        modified,
        tuple(dict.fromkeys(str(a)[:MAX_ID] for a in aliases if isinstance(a, str))),
        tuple(dict.fromkeys(affected)),
    )


def _severity_words(specific: object) -> list[str]:
    if isinstance(specific, dict) and isinstance(specific.get("severity"), str):
        return [specific["severity"]]
    return []


def _ranges(where: str, release: str, package: str, entry: Mapping[str, Any]) -> list[Affected]:
    family = releases.family(release)
    found: list[Affected] = []
    for span in _list(where, entry, "ranges"):
        if not isinstance(span, dict) or span.get("type") != "ECOSYSTEM":
            continue  # GIT and SEMVER ranges describe upstream code, not packages
        opened: str | None = None  # the range's introduced version while it is open
        for event in _list(where, span, "events"):
            if not isinstance(event, dict) or len(event) != 1:
                raise FeedError(f"{where}: {package}: a range event is not one key and value")
            (kind, value), = event.items()  # fmt: skip
            if not isinstance(value, str):
                raise FeedError(f"{where}: {package}: range event {kind} is not a string")
            if value != "0" and not versions.valid(family, value):
                raise FeedError(f"{where}: {package}: {value!r} is not a {family} version")
            if kind == "introduced":
                opened = "" if value == "0" else value
            elif kind == "fixed" and opened is not None:
                found.append(Affected(release, package, opened, value))
                opened = None
            elif kind in ("last_affected", "limit"):
                # Distribution feeds name fixes; a range closed without one
                # names no version to install, so it is not matched.
                opened = None
        if opened is not None:
            found.append(Affected(release, package, opened, ""))
    return found


def _list(where: str, record: Mapping[str, Any], key: str) -> list[Any]:
    value = record.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise FeedError(f"{where}: {key} is not a list")
    return value


# RFC 3339's date-time: a full date and time, seconds' fraction optional,
# and an offset (Z, in either case, or +hh:mm).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _time(where: str, record: Mapping[str, Any], key: str) -> datetime | None:
    """The time ``key`` of an OSV record (None: absent, null or empty, or
    a time outside the years the controller keeps: a placeholder such as
    Go's zero time, 0001-01-01, or one no clock will reach, which would
    overflow what is computed from it); FeedError for anything else that
    is not an RFC 3339 time (a withdrawn that says "garbage" or true is a
    malformed record, not a withdrawal)."""
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FeedError(f"{where}: {key} is not an RFC 3339 time (a string expected)")
    try:
        if not _RFC3339.fullmatch(value):  # fromisoformat takes '2024-01-01', '2024-W01-1'...
            raise ValueError(value)
        parsed = datetime.fromisoformat(re.sub("[Zz]$", "+00:00", value).replace("t", "T"))
    except ValueError:
        raise FeedError(f"{where}: {key} {value[:64]!r} is not an RFC 3339 time") from None
    if not in_range(parsed):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_id(where: str, vuln_id: object) -> None:
    if not isinstance(vuln_id, str) or not vuln_id or len(vuln_id) > MAX_ID:
        raise FeedError(f"{where}: {vuln_id!r} is not a vulnerability id")
    if any(c.isspace() for c in vuln_id) or not vuln_id.isprintable():
        raise FeedError(f"{where}: {vuln_id!r} is not a vulnerability id")


def _check_name(where: str, name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_ID or os.sep in name:
        raise FeedError(f"{where}: {name!r} is not a package name")
    if any(c.isspace() for c in name) or not name.isprintable():
        raise FeedError(f"{where}: {name!r} is not a package name")
