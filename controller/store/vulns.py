"""Vulnerability feeds, and each host's exposure to them (issue 15).

Tables (migration 0009): vuln_sources, vulns, vuln_affected, vuln_aliases,
exposures, and hosts.vulns_matched. An import replaces or upserts in one
transaction: a feed is taken whole or not at all."""

from __future__ import annotations

import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from controller.store.backend import StoreBase
from controller.store.dialect import Connection
from controller.vulns import SEVERITIES, releases, versions
from controller.vulns.feeds import Vuln, most_severe


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class ImportSummary:
    source: str
    records: int  # distinct vulnerabilities in the feed
    added: int
    removed: int  # withdrawn, or no longer in a full snapshot
    generation: int


@dataclass(frozen=True)
class MatchInput:
    """What matching a host needs, as stored."""

    host_id: str
    key: str  # what hosts.vulns_matched becomes once matched
    facts: dict[str, Any]
    packages: list[list[str]]  # inventory rows: name, version, arch[, source, source version]
    updates: list[list[Any]]  # available update rows (UPDATE_FIELDS)
    region: str = ""
    ring: int = 0


class Found(NamedTuple):
    """One exposure a match found (controller/vulns/match.py); a tuple: a
    large fleet's match makes millions of them."""

    vuln_id: str
    package: str
    installed: str
    fixed: str
    available: bool


@dataclass(frozen=True)
class StoredHost:
    """A host to match as `hosts_to_match` reads it: the blobs still
    compressed, decoded by the matcher off the store thread."""

    host_id: str
    key: str
    facts: dict[str, Any]
    packages_blob: bytes | None
    updates_blob: bytes | None
    region: str
    ring: int

    def decoded(self) -> MatchInput:
        return MatchInput(
            self.host_id, self.key, self.facts,
            json.loads(zlib.decompress(self.packages_blob)) if self.packages_blob else [],
            json.loads(zlib.decompress(self.updates_blob)) if self.updates_blob else [],
            self.region, self.ring,
        )  # fmt: skip


@dataclass(frozen=True)
class Matched:
    """A host's match: what record_matches writes."""

    host_id: str
    key: str
    region: str
    ring: int
    found: Sequence[Found]


class _Cells:
    """Changes to vuln_cells, summed before they are written: per cell
    (region, ring) and vulnerability, the hosts exposed and of those the
    ones offered the fix. A host counts once per vulnerability. Counters:
    a large match counts millions of these."""

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self._fixable: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self._first: dict[tuple[str, int], float] = {}

    def add(self, cell: tuple[str, int], vulns: Iterable[str], fixable: Iterable[str],
            at: float) -> None:  # fmt: skip
        self._hosts[cell].update(vulns)
        self._fixable[cell].update(fixable)
        self._first[cell] = min(self._first.get(cell, at), at)

    def remove(self, cell: tuple[str, int], vulns: Iterable[str], fixable: Iterable[str]) -> None:
        self._hosts[cell].subtract(vulns)
        self._fixable[cell].subtract(fixable)

    def write(self, conn: Connection) -> None:
        rows: list[tuple[str, str, int, int, int, float]] = []
        for cell in sorted(set(self._hosts) | set(self._fixable)):
            hosts, fixable = self._hosts[cell], self._fixable[cell]
            at = self._first.get(cell, 0.0)
            rows.extend(
                (vuln_id, *cell, hosts[vuln_id], fixable[vuln_id], at)
                for vuln_id in sorted(set(hosts) | set(fixable))
                if hosts[vuln_id] or fixable[vuln_id]
            )
        conn.executemany(
            "INSERT INTO vuln_cells (vuln_id, region, ring, hosts, fixable, first_seen)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (vuln_id, region, ring) DO UPDATE SET"
            " hosts = vuln_cells.hosts + excluded.hosts,"
            " fixable = vuln_cells.fixable + excluded.fixable",
            rows,
        )
        conn.executemany(
            "DELETE FROM vuln_cells WHERE vuln_id = ? AND region = ? AND ring = ? AND hosts <= 0",
            [r[:3] for r in rows if r[3] < 0],
        )


@dataclass(frozen=True)
class VulnSummary:
    vuln_id: str
    severity: str
    published: datetime | None
    hosts: int  # exposed now
    fixable: int  # of which the fix is offered to the host
    fixed_versions: tuple[str, ...]
    packages: tuple[str, ...]
    first_seen: datetime | None  # on the fleet


@dataclass(frozen=True)
class ExposureRow:
    host_id: str
    vuln_id: str
    severity: str
    package: str
    installed: str
    fixed: str
    available: bool
    first_seen: datetime
    fixed_at: datetime | None
    published: datetime | None
    region: str = ""
    ring: int = 0
    os: str = ""


@dataclass(frozen=True)
class VulnRecord:
    vuln_id: str
    source: str
    severity: str
    summary: str
    published: datetime | None
    modified: datetime | None
    aliases: tuple[str, ...]
    affected: tuple[tuple[str, str, str, str], ...]  # release, package, introduced, fixed


@dataclass(frozen=True)
class SourceRow:
    source: str
    generation: int
    feed_date: datetime | None
    imported_at: datetime
    imported_by: str
    records: int


def merged(records: Iterable[Vuln]) -> dict[str, Vuln]:
    """Records by id, those of one id (the tracker's, one per source
    package) merged: the most severe severity, every affected range."""
    found: dict[str, Vuln] = {}
    for v in records:
        old = found.get(v.vuln_id)
        if old is None or old.withdrawn or v.withdrawn:
            found[v.vuln_id] = v
            continue
        found[v.vuln_id] = Vuln(
            v.vuln_id, most_severe(old.severity, v.severity), old.summary or v.summary,
            old.published or v.published,
            max(filter(None, (old.modified, v.modified)), default=None),
            tuple(dict.fromkeys(old.aliases + v.aliases)),
            tuple(dict.fromkeys(old.affected + v.affected)),
        )  # fmt: skip
    return found


class VulnStore(StoreBase):
    """Mixed into Store; ``_conn`` and ``_transaction`` come from there."""

    # -- feeds ---------------------------------------------------------------------

    def import_vulns(
        self,
        source: str,
        replace: bool,
        feed_date: datetime | None,
        records: Sequence[Vuln],
        now: datetime,
        actor: str,
    ) -> ImportSummary:
        """Take a feed's records in one transaction. ``replace``: they are
        the whole of ``source`` (what it held before and no longer lists
        goes); otherwise they are upserted by id and withdrawn ones removed."""
        by_id = merged(records)
        with self._transaction() as conn:
            before = {
                r[0] for r in conn.execute("SELECT vuln_id FROM vulns WHERE source = ?", (source,))
            }
            gone = {i for i, v in by_id.items() if v.withdrawn}
            if replace:
                gone |= before - set(by_id)
            live = [v for v in by_id.values() if not v.withdrawn]
            ids = [(i,) for i in sorted(gone | {v.vuln_id for v in live})]
            conn.executemany("DELETE FROM vuln_affected WHERE vuln_id = ?", ids)
            conn.executemany("DELETE FROM vuln_aliases WHERE vuln_id = ?", ids)
            conn.executemany("DELETE FROM vulns WHERE vuln_id = ?", ids)
            if gone:  # one pass over the exposures, not one per vulnerability
                conn.execute(
                    "DELETE FROM exposures WHERE NOT EXISTS"
                    " (SELECT 1 FROM vulns v WHERE v.vuln_id = exposures.vuln_id)"
                )
            conn.executemany(
                "DELETE FROM vuln_cells WHERE vuln_id = ?", [(i,) for i in sorted(gone)]
            )
            conn.executemany(
                "INSERT INTO vulns (vuln_id, source, severity, summary, published, modified,"
                " aliases) VALUES (?,?,?,?,?,?,?)",
                [(v.vuln_id, source, v.severity, v.summary, _ts(v.published), _ts(v.modified),
                  json.dumps(list(v.aliases))) for v in live],
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO vuln_affected (vuln_id, release, package, introduced, fixed)"
                " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(v.vuln_id, a.release, a.package, a.introduced, a.fixed)
                 for v in live for a in v.affected],
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO vuln_aliases (alias, vuln_id) VALUES (?,?) ON CONFLICT DO NOTHING",
                [(alias, v.vuln_id) for v in live for alias in v.aliases if alias != v.vuln_id],
            )
            generation = self.vuln_generation() + 1
            count = conn.execute(
                "SELECT COUNT(*) FROM vulns WHERE source = ?", (source,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO vuln_sources (source, generation, feed_date, imported_at, imported_by,"
                " records) VALUES (?,?,?,?,?,?) ON CONFLICT (source) DO UPDATE SET"
                " generation = excluded.generation, feed_date = excluded.feed_date,"
                " imported_at = excluded.imported_at, imported_by = excluded.imported_by,"
                " records = excluded.records",
                (source, generation, _ts(feed_date), _ts(now), actor, count),
            )  # fmt: skip
        return ImportSummary(
            source,
            len(live),
            len({v.vuln_id for v in live} - before),
            len(gone & before),
            generation,
        )

    def vuln_generation(self) -> int:
        """Counts imports: hosts matched at an older one are matched again."""
        row = self._conn.execute("SELECT MAX(generation) FROM vuln_sources").fetchone()
        return int(row[0] or 0)

    def vuln_sources(self) -> list[SourceRow]:
        rows = self._conn.execute(
            "SELECT source, generation, feed_date, imported_at, imported_by, records"
            " FROM vuln_sources ORDER BY source"
        ).fetchall()
        return [
            SourceRow(r[0], r[1], _dt(r[2]), _dt(r[3]) or datetime.now(UTC), r[4], r[5])
            for r in rows
        ]

    def fleet_releases(self) -> set[str | None]:
        """The releases active hosts run (None: one no feed covers)."""
        return {
            releases.host_release(json.loads(r[0]))
            for r in self._conn.execute("SELECT facts FROM hosts WHERE status = 'active'")
        }

    def affected_releases(self) -> list[tuple[str, int]]:
        """Each release some feed names, with how many ranges it has."""
        return self._conn.execute(
            "SELECT release, COUNT(*) FROM vuln_affected GROUP BY release ORDER BY release"
        ).fetchall()

    def affected_in(self, releases: Iterable[str]) -> list[tuple[str, str, str, str, str]]:
        """(release, package, vuln_id, introduced, fixed) of ``releases``."""
        found: list[tuple[str, str, str, str, str]] = []
        for release in sorted(set(releases)):
            found += self._conn.execute(
                "SELECT release, package, vuln_id, introduced, fixed FROM vuln_affected"
                " WHERE release = ?",
                (release,),
            ).fetchall()
        return found

    # -- matching ------------------------------------------------------------------

    def hosts_to_match(self, generation: int, limit: int, after: str = "") -> list[StoredHost]:
        """Active hosts whose inventory, updates, region, ring or the feeds
        changed since they were last matched, by host id after ``after``,
        at most ``limit``."""
        key = (
            "h.inventory_hash || '|' || h.updates_hash || '|' || ? || '|' || h.region"
            " || '|' || CAST(h.ring AS TEXT)"
        )
        rows = self._conn.execute(
            f"SELECT h.host_id, h.facts, {key}, i.packages, u.updates, h.region, h.ring"
            " FROM hosts h"
            " LEFT JOIN inventories i ON i.host_id = h.host_id"
            " LEFT JOIN available_updates u ON u.host_id = h.host_id"
            f" WHERE h.status = 'active' AND h.host_id > ? AND h.vulns_matched != {key}"
            " ORDER BY h.host_id LIMIT ?",
            (str(generation), after, str(generation), limit),
        ).fetchall()
        return [StoredHost(r[0], r[2], json.loads(r[1]), r[3], r[4], r[5], r[6]) for r in rows]

    def record_matches(self, results: Sequence[Matched], now: datetime) -> int:
        """Write each host's exposures: new ones first seen now, those no
        longer found fixed now, ones found again reopened; and keep the
        per-cell counts. Returns how many were newly exposed."""
        at = now.timestamp()
        opened = 0
        with self._transaction() as conn:
            cells = _Cells()
            for m in results:
                before = {
                    (r[0], r[1]): (r[2], r[3], (r[4], r[5]), r[6], r[7])
                    for r in conn.execute(
                        "SELECT vuln_id, package, fixed_at, available, region, ring, installed,"
                        " fixed FROM exposures WHERE host_id = ?",
                        (m.host_id,),
                    )
                }
                open_before = [(k, v) for k, v in before.items() if v[0] is None]
                if open_before:
                    cell = open_before[0][1][2]
                    cells.remove(cell, {k[0] for k, _ in open_before},
                                 {k[0] for k, v in open_before if v[1]})  # fmt: skip
                fresh = [f for f in m.found if (f.vuln_id, f.package) not in before]
                opened += len(fresh)
                conn.executemany(
                    "INSERT INTO exposures (host_id, vuln_id, package, installed, fixed, available,"
                    " first_seen, region, ring) VALUES (?,?,?,?,?,?,?,?,?)",
                    [(m.host_id, f.vuln_id, f.package, f.installed, f.fixed, int(f.available), at,
                      m.region, m.ring) for f in fresh],
                )  # fmt: skip
                # Rows found again: written only where something changed.
                cell = (m.region, m.ring)
                conn.executemany(
                    "UPDATE exposures SET installed = ?, fixed = ?, available = ?, fixed_at = NULL,"
                    " region = ?, ring = ? WHERE host_id = ? AND vuln_id = ? AND package = ?",
                    [(f.installed, f.fixed, int(f.available), m.region, m.ring, m.host_id,
                      f.vuln_id, f.package) for f in m.found
                     if (held := before.get((f.vuln_id, f.package))) is not None
                     and held != (None, int(f.available), cell, f.installed, f.fixed)],
                )  # fmt: skip
                still = {(f.vuln_id, f.package) for f in m.found}
                conn.executemany(
                    "UPDATE exposures SET fixed_at = ?, available = 0"
                    " WHERE host_id = ? AND vuln_id = ? AND package = ?",
                    [(at, m.host_id, v, p) for (v, p), held in open_before if (v, p) not in still],
                )  # fmt: skip
                cells.add((m.region, m.ring), {f.vuln_id for f in m.found},
                          {f.vuln_id for f in m.found if f.available}, at)  # fmt: skip
                conn.execute(
                    "UPDATE hosts SET vulns_matched = ? WHERE host_id = ?", (m.key, m.host_id)
                )
            cells.write(conn)
        return opened

    def forget_exposures(self) -> int:
        """Drop the exposures of hosts no longer active (revoked, forgotten):
        they leave the counts, and are not remediations. Returns how many
        hosts."""
        with self._transaction() as conn:
            gone = [r[0] for r in conn.execute(
                "SELECT host_id FROM hosts WHERE status != 'active' AND EXISTS"
                " (SELECT 1 FROM exposures e WHERE e.host_id = hosts.host_id)"
            )]  # fmt: skip
            cells = _Cells()
            for host_id in gone:
                rows = conn.execute(
                    "SELECT vuln_id, available, region, ring FROM exposures"
                    " WHERE host_id = ? AND fixed_at IS NULL",
                    (host_id,),
                ).fetchall()
                if rows:
                    cells.remove((rows[0][2], rows[0][3]), {r[0] for r in rows},
                                 {r[0] for r in rows if r[1]})  # fmt: skip
                conn.execute("DELETE FROM exposures WHERE host_id = ?", (host_id,))
                conn.execute("UPDATE hosts SET vulns_matched = '' WHERE host_id = ?", (host_id,))
            cells.write(conn)
        return len(gone)

    # -- views ---------------------------------------------------------------------

    def list_vulns(
        self, min_severity: str = "", region: str = "", ring: int | None = None
    ) -> list[VulnSummary]:
        """Vulnerabilities exposing at least one active host (in ``region``
        and ``ring`` when given), most severe and widest first. Reads the
        per-cell counts the matcher keeps, never every exposure."""
        where, args = _host_filter(region, ring, "c")
        if min_severity:
            allowed = SEVERITIES[: SEVERITIES.index(min_severity) + 1]
            where += f" AND v.severity IN ({','.join('?' * len(allowed))})"
            args += list(allowed)
        rows = self._conn.execute(
            "SELECT c.vuln_id, v.severity, v.published, CAST(SUM(c.hosts) AS INTEGER),"
            " CAST(SUM(c.fixable) AS INTEGER),"
            " MIN(c.first_seen) FROM vuln_cells c JOIN vulns v ON v.vuln_id = c.vuln_id"
            f" WHERE c.hosts > 0{where} GROUP BY c.vuln_id, v.severity, v.published",
            args,
        ).fetchall()
        in_fleet = [r for r in self.fleet_releases() if r is not None] or [""]
        details: dict[str, tuple[set[str], set[str]]] = {}
        for vuln_id, package, fixed in self._conn.execute(
            "SELECT a.vuln_id, a.package, a.fixed FROM vuln_affected a"
            " WHERE a.vuln_id IN (SELECT DISTINCT vuln_id FROM vuln_cells WHERE hosts > 0)"
            f" AND a.release IN ({','.join('?' * len(in_fleet))})",
            in_fleet,
        ):
            packages, fixes = details.setdefault(vuln_id, (set(), set()))
            packages.add(package)
            if fixed:
                fixes.add(fixed)
        empty: tuple[set[str], set[str]] = (set(), set())
        found = [
            VulnSummary(
                r[0], r[1], _dt(r[2]), r[3], r[4], tuple(sorted(details.get(r[0], empty)[1])),
                tuple(sorted(details.get(r[0], empty)[0])), _dt(r[5]),
            )
            for r in rows
        ]  # fmt: skip
        found.sort(key=lambda v: (SEVERITIES.index(v.severity), -v.hosts, v.vuln_id))
        return found

    def resolve_vuln(self, name: str) -> list[str]:
        """The ids ``name`` names: itself when imported, and the advisories
        that list it as an alias (a CVE fixed by a DSA)."""
        found = self._conn.execute("SELECT vuln_id FROM vulns WHERE vuln_id = ?", (name,))
        rows = self._conn.execute(
            "SELECT vuln_id FROM vuln_aliases WHERE alias = ? ORDER BY vuln_id", (name,)
        )
        return list(dict.fromkeys(r[0] for r in [*found.fetchall(), *rows.fetchall()]))

    def get_vuln(self, vuln_id: str) -> VulnRecord | None:
        row = self._conn.execute(
            "SELECT vuln_id, source, severity, summary, published, modified, aliases FROM vulns"
            " WHERE vuln_id = ?",
            (vuln_id,),
        ).fetchone()
        if row is None:
            return None
        affected = self._conn.execute(
            "SELECT release, package, introduced, fixed FROM vuln_affected WHERE vuln_id = ?"
            " ORDER BY release, package, introduced",
            (vuln_id,),
        ).fetchall()
        return VulnRecord(
            row[0], row[1], row[2], row[3], _dt(row[4]), _dt(row[5]), tuple(json.loads(row[6])),
            tuple(tuple(a) for a in affected),
        )  # fmt: skip

    def exposures(
        self,
        vuln_ids: Sequence[str] = (),
        host_id: str = "",
        open_only: bool = False,
        region: str = "",
        ring: int | None = None,
    ) -> list[ExposureRow]:
        """Exposures of active hosts, open and fixed (``open_only``: open),
        of ``vuln_ids`` or ``host_id`` when given."""
        where, args = _host_filter(region, ring)
        if vuln_ids:
            where += f" AND e.vuln_id IN ({','.join('?' * len(vuln_ids))})"
            args += list(vuln_ids)
        if host_id:
            where += " AND e.host_id = ?"
            args.append(host_id)
        if open_only:
            where += " AND e.fixed_at IS NULL"
        rows = self._conn.execute(
            "SELECT e.host_id, e.vuln_id, v.severity, e.package, e.installed, e.fixed, e.available,"
            " e.first_seen, e.fixed_at, v.published, h.region, h.ring, h.facts"
            " FROM exposures e JOIN vulns v ON v.vuln_id = e.vuln_id"
            " JOIN hosts h ON h.host_id = e.host_id"
            f" WHERE h.status = 'active'{where}"
            " ORDER BY e.host_id, e.vuln_id, e.package",
            args,
        ).fetchall()
        return [
            ExposureRow(
                r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), _dt(r[7]) or datetime.now(UTC),
                _dt(r[8]), _dt(r[9]), r[10], r[11], _os(r[12]),
            )
            for r in rows
        ]  # fmt: skip

    def inventory_rows(self, host_ids: Sequence[str]) -> dict[str, list[list[str]]]:
        """Stored inventory rows (name, version, arch[, source, source
        version]) of ``host_ids``."""
        found: dict[str, list[list[str]]] = {}
        for host_id in host_ids:
            row = self._conn.execute(
                "SELECT packages FROM inventories WHERE host_id = ?", (host_id,)
            ).fetchone()
            found[host_id] = json.loads(zlib.decompress(row[0])) if row is not None else []
        return found

    def baseline_packages(
        self, host_id: str, min_severity: str, older_than: timedelta, now: datetime
    ) -> list[tuple[str, str]]:
        """A patch baseline resolved for one host: (package, minimum
        version) of every installed package that fixes an open exposure of
        ``min_severity`` or worse, disclosed (else first seen on the fleet)
        at least ``older_than`` before ``now``. The minimum is the highest
        fixed version, where the binary follows its source's versions."""
        allowed = SEVERITIES[: SEVERITIES.index(min_severity) + 1]
        rows = [
            e for e in self.exposures(host_id=host_id, open_only=True)
            if e.fixed and e.severity in allowed
        ]  # fmt: skip
        first = self.fleet_first_seen()
        due = [e for e in rows if now - (e.published or first.get(e.vuln_id, now)) >= older_than]
        inventory = self.inventory_rows([host_id])[host_id]
        wanted: dict[str, str] = {}
        for e in due:
            family = releases.os_family(e.os)
            for name, version in releases.binaries_for(family, e.package, inventory):
                minimum = e.fixed if releases.follows_source(version, e.installed) else ""
                held = wanted.get(name)
                if held is None or (
                    minimum and (not held or versions.compare(family, minimum, held) > 0)
                ):
                    wanted[name] = minimum
        return sorted(wanted.items())

    def fleet_first_seen(self) -> dict[str, datetime]:
        """When each vulnerability open on some host was first seen on the
        fleet (since it was last closed everywhere), from the cell counts."""
        rows = self._conn.execute(
            "SELECT vuln_id, MIN(first_seen) FROM vuln_cells WHERE hosts > 0 GROUP BY vuln_id"
        ).fetchall()
        return {r[0]: datetime.fromtimestamp(r[1], UTC) for r in rows}

    def remediations(self) -> list[tuple[str, str, str, datetime, datetime]]:
        """(host id, vuln id, severity, start, fixed) for every exposure a
        host closed: start is the disclosure when the feed dates it, else
        when the vulnerability was first seen on the fleet; fixed is when
        the host's last exposed package was seen fixed."""
        rows = self._conn.execute(
            "SELECT e.host_id, e.vuln_id, v.severity, v.published, MAX(e.fixed_at),"
            " CAST(SUM(CASE WHEN e.fixed_at IS NULL THEN 1 ELSE 0 END) AS INTEGER),"
            " MIN(e.first_seen)"
            " FROM exposures e JOIN vulns v ON v.vuln_id = e.vuln_id"
            " JOIN hosts h ON h.host_id = e.host_id WHERE h.status = 'active'"
            " GROUP BY e.host_id, e.vuln_id, v.severity, v.published"
        ).fetchall()
        first: dict[str, float] = {}
        for r in rows:
            first[r[1]] = min(first.get(r[1], r[6]), r[6])
        return [
            (r[0], r[1], r[2], _dt(r[3]) or datetime.fromtimestamp(first[r[1]], UTC),
             datetime.fromtimestamp(r[4], UTC))
            for r in rows if r[5] == 0 and r[4] is not None
        ]  # fmt: skip


def _host_filter(region: str, ring: int | None, table: str = "h") -> tuple[str, list[Any]]:
    """SQL fragments (and their arguments) keeping ``region`` and ``ring``
    when given, on the columns of ``table`` (a fixed alias)."""
    where, args = "", list[Any]()
    if region:
        where += f" AND {table}.region = ?"
        args.append(region)
    if ring is not None:
        where += f" AND {table}.ring = ?"
        args.append(ring)
    return where, args


def _os(facts: str) -> str:
    doc = json.loads(facts or "{}")
    return f"{doc.get('os_id', '')} {doc.get('os_version', '')}".strip() or "unknown"
