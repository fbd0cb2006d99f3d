"""A host's inventory against the imported feeds: which vulnerabilities its
installed versions leave open, and whether its last scan offers the fix.

On dpkg releases the feeds name source packages, so a host's binaries are
taken by their source (libssl3 -> openssl) at its source version; on rpm
releases they name binary packages. Versions compare by the release's own
rules (versions.py). `Matcher` runs in the controller: after every import,
and now and then for hosts whose inventory or scan changed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from fleetpatch.inventory import UPDATE_FIELDS

from controller.store import Store
from controller.store.thread import StoreThread
from controller.store.vulns import Found, MatchInput
from controller.vulns import releases, versions

log = logging.getLogger(__name__)

_NAME, _CANDIDATE = UPDATE_FIELDS.index("name"), UPDATE_FIELDS.index("candidate")


class Index:
    """The feeds' affected ranges of some releases, by (release, package)."""

    def __init__(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        self._by: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for release, package, vuln_id, introduced, fixed in rows:
            self._by[(release, package)].append((vuln_id, introduced, fixed))

    def ranges(self, release: str, package: str) -> list[tuple[str, str, str]]:
        return self._by.get((release, package), [])


def installed_by_feed_name(family: str, rows: Sequence[Sequence[str]]) -> dict[str, set[str]]:
    """Package name as feeds of ``family`` name it -> the versions installed:
    sources on dpkg, binaries on rpm."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if family == "dpkg" and len(row) >= 5:
            found[row[3]].add(row[4])
        else:
            found[row[0]].add(row[1])
    return found


def offered(
    family: str, rows: Sequence[Sequence[str]], updates: Sequence[Sequence[Any]]
) -> dict[str, list[str]]:
    """Feed package name -> the candidate versions the host's last scan
    offers for its binaries."""
    source_of = {r[0]: r[3] for r in rows if family == "dpkg" and len(r) >= 5}
    found: dict[str, list[str]] = defaultdict(list)
    for update in updates:
        name = str(update[_NAME])
        found[source_of.get(name, name)].append(str(update[_CANDIDATE]))
    return found


def match(index: Index, host: MatchInput) -> list[Found]:
    """The host's open exposures; empty for a release no feed covers."""
    release = releases.host_release(host.facts)
    if release is None:
        return []
    family = releases.family(release)
    candidates = offered(family, host.packages, host.updates)
    found: list[Found] = []
    for package, installed in installed_by_feed_name(family, host.packages).items():
        ranges = index.ranges(release, package)
        if not ranges:
            continue
        for vuln_id, introduced, fixed in ranges:
            hit = sorted(v for v in installed if _affected(family, v, introduced, fixed))
            if not hit:
                continue
            available = bool(fixed) and any(
                _at_least(family, c, fixed) for c in candidates.get(package, ())
            )
            found.append(Found(vuln_id, package, hit[0], fixed, available))
    return found


def _affected(family: str, installed: str, introduced: str, fixed: str) -> bool:
    try:
        return versions.affected(family, installed, introduced, fixed)
    except versions.BadVersion:
        return False  # a version its own package manager would not write


def _at_least(family: str, candidate: str, fixed: str) -> bool:
    try:
        return versions.compare(family, candidate, fixed) >= 0
    except versions.BadVersion:
        return False


def match_all(index: Index, hosts: Sequence[MatchInput]) -> list[tuple[str, str, list[Found]]]:
    return [(h.host_id, h.key, match(index, h)) for h in hosts]


def _record(results: Sequence[tuple[str, str, list[Found]]], now: datetime, store: Store) -> int:
    return store.record_matches(results, now)


class Matcher:
    """Matches hosts whose inventory, scan or feeds changed, a page at a
    time: reads on the store thread, compares off it, writes on it."""

    PAGE = 500

    def __init__(self, db: StoreThread) -> None:
        self._db = db
        self._index: tuple[int, frozenset[str], Index] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Match at once (after an import), not at the next interval."""
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        """Until woken or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def run_once(self) -> int:
        """Match every host that needs it; how many were matched."""
        generation = await self._db.call(lambda s: s.vuln_generation())
        if generation == 0:
            return 0  # nothing imported yet
        done = 0
        while True:
            page = await self._db.call(lambda s: s.hosts_to_match(generation, self.PAGE))
            if not page:
                return done
            index = await self._index_for(generation, page)
            results = await asyncio.to_thread(match_all, index, page)
            await self._db.call(functools.partial(_record, results, datetime.now(UTC)))
            done += len(page)

    async def _index_for(self, generation: int, page: Sequence[MatchInput]) -> Index:
        wanted = frozenset(r for h in page if (r := releases.host_release(h.facts)) is not None)
        if self._index is not None:
            held_generation, held, index = self._index
            if held_generation == generation and wanted <= held:
                return index
            if held_generation == generation:
                wanted |= held
        rows = await self._db.call(lambda s: s.affected_in(wanted))
        index = await asyncio.to_thread(Index, rows)
        self._index = (generation, wanted, index)
        return index
