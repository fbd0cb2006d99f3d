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
from functools import cmp_to_key, lru_cache
from typing import Any

from fleetpatch.inventory import UPDATE_FIELDS

from controller.store import Store
from controller.store.thread import StoreThread
from controller.store.vulns import Found, Matched, MatchInput, StoredHost
from controller.vulns import releases, versions

log = logging.getLogger(__name__)

_NAME, _CANDIDATE = UPDATE_FIELDS.index("name"), UPDATE_FIELDS.index("candidate")


class Index:
    """The feeds' affected ranges of some releases, by (release, package)."""

    def __init__(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        self._by: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        names: dict[str, set[str]] = defaultdict(set)
        for release, package, vuln_id, introduced, fixed in rows:
            self._by[(release, package)].append((vuln_id, introduced, fixed))
            names[release].add(package)
        self._names = {release: frozenset(found) for release, found in names.items()}

    def ranges(self, release: str, package: str) -> list[tuple[str, str, str]]:
        return self._by.get((release, package), [])

    def names(self, release: str) -> frozenset[str]:
        """The packages of ``release`` some feed names."""
        return self._names.get(release, frozenset())


def installed_by_feed_name(
    family: str, rows: Sequence[Sequence[str]], wanted: frozenset[str] | None = None
) -> dict[str, set[str]]:
    """Package name as feeds of ``family`` name it -> the versions installed:
    sources on dpkg, binaries on rpm; only names in ``wanted`` when given."""
    by_source = family == "dpkg"
    found: dict[str, set[str]] = {}
    for row in rows:
        name, version = (row[3], row[4]) if by_source and len(row) >= 5 else (row[0], row[1])
        if wanted is None or name in wanted:
            found.setdefault(name, set()).add(version)
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
    """The host's open exposures; empty for a release no feed covers.
    Only the packages some feed names are looked at (a host has hundreds,
    a feed names thousands, few of them the host's)."""
    release = releases.host_release(host.facts)
    if release is None:
        return []
    family = releases.family(release)
    installed = installed_by_feed_name(family, host.packages, index.names(release))
    if not installed:
        return []
    candidates = offered(family, host.packages, host.updates) if host.updates else {}
    found: list[Found] = []
    for package, versions_installed in installed.items():
        held = tuple(sorted(versions_installed))
        for vuln_id, introduced, fixed in index.ranges(release, package):
            hit = _lowest_affected(family, held, introduced, fixed)
            if hit is None:
                continue
            offers = candidates.get(package)
            available = False
            if fixed and offers:
                available = any(_at_least(family, c, fixed) for c in offers)
            found.append(Found(vuln_id, package, hit, fixed, available))
    return found


# A fleet runs few distinct versions of a package, and a feed names few
# fixed versions: most of a match is answered from here.
@lru_cache(maxsize=1 << 18)
def _lowest_affected(
    family: str, installed: tuple[str, ...], introduced: str, fixed: str
) -> str | None:
    """The lowest of ``installed`` in [introduced, fixed); None if none is."""
    hits = [v for v in installed if _affected(family, v, introduced, fixed)]
    if len(hits) <= 1:
        return hits[0] if hits else None
    return min(hits, key=cmp_to_key(lambda a, b: versions.compare(family, a, b)))


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


def match_all(index: Index, hosts: Sequence[StoredHost]) -> list[Matched]:
    """Decode and match a page of hosts (on a worker thread)."""
    found = []
    for stored in hosts:
        host = stored.decoded()
        found.append(Matched(host.host_id, host.key, host.region, host.ring, match(index, host)))
    return found


def _record(results: Sequence[Matched], now: datetime, store: Store) -> int:
    return store.record_matches(results, now)


def _to_match(generation: int, limit: int, after: str, store: Store) -> list[StoredHost]:
    return store.hosts_to_match(generation, limit, after)


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
        """Match every host that needs it; how many were matched. Pages are
        pipelined: a page is decoded and matched on a worker thread while
        the store thread writes the page before it."""
        generation = await self._db.call(lambda s: s.vuln_generation())
        if generation == 0:
            return 0  # nothing imported yet
        await self._db.call(lambda s: s.forget_exposures())
        done = 0
        writing: asyncio.Future[int] | None = None
        page = await self._db.call(functools.partial(_to_match, generation, self.PAGE, ""))
        while page:
            index = await self._index_for(generation, page)
            results = await asyncio.to_thread(match_all, index, page)  # while the last page writes
            if writing is not None:
                await writing
            # The next page is read before this one is written: the store
            # thread then writes while the worker matches.
            reading = asyncio.ensure_future(
                self._db.call(functools.partial(_to_match, generation, self.PAGE, page[-1].host_id))
            )
            writing = asyncio.ensure_future(
                self._db.call(functools.partial(_record, results, datetime.now(UTC)))
            )
            done += len(page)
            page = await reading
        if writing is not None:
            await writing
        return done

    async def _index_for(self, generation: int, page: Sequence[StoredHost]) -> Index:
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
