"""Published agent packages: one row per version and package family (a
.deb for apt hosts, an .rpm for dnf hosts), its artifact stored by digest
beside the database (controller.artifacts). A package is published once:
the same artifact again is a no-op, another artifact a conflict."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from fleetpatch.agentrelease import Family

from controller.audit import AuditEntry
from controller.errors import AlreadyExists
from controller.model import AgentRelease
from controller.store import audit
from controller.store.backend import StoreBase

_COLUMNS = (
    "version, family, artifact, sha256, size, key_fingerprint, manifest, signature,"
    " published_at, published_by"
)
_SELECT = f"SELECT {_COLUMNS} FROM agent_release_packages"  # noqa: S608 - constant


def _release(row: tuple[Any, ...]) -> AgentRelease:
    version, family, artifact, sha256, size, key, manifest, signature, at, by = row
    return AgentRelease(
        version=version,
        family=Family(family),
        artifact=artifact,
        sha256=sha256,
        size=size,
        key_fingerprint=key,
        published_at=datetime.fromtimestamp(at, UTC),
        published_by=by,
        manifest=bytes(manifest),
        signature=bytes(signature),
    )


def conflict(version: str, family: Family, stored: str, offered: str) -> AlreadyExists:
    """Publishing ``version``'s ``family`` package again with another one
    (digests in hex)."""
    return AlreadyExists(
        f"the .{family} package of agent release {version} is already published with another "
        f"package (sha256 {stored[:16]}..., this one {offered[:16]}...); a published version "
        "never changes: release a new version"
    )


class ReleaseStore(StoreBase):
    """A part of Store."""

    def publish_release(
        self, release: AgentRelease, entry: AuditEntry
    ) -> tuple[AgentRelease, bool]:
        """Record a release's package and its audit record atomically.
        Returns the release as stored and whether it is new. Publishing a
        version's package again with the same artifact changes nothing (and
        is audited as such); with another artifact it raises AlreadyExists."""
        r = release
        with self._transaction() as conn:
            row = conn.execute(
                f"{_SELECT} WHERE version = ? AND family = ?", (r.version, str(r.family))
            ).fetchone()
            if row is not None:
                stored = _release(row)
                if stored.sha256 != r.sha256:
                    raise conflict(r.version, r.family, stored.sha256, r.sha256)
                audit.append(conn, dataclasses.replace(entry, outcome="unchanged"))
                return stored, False
            conn.execute(
                f"INSERT INTO agent_release_packages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant
                (
                    r.version, str(r.family), r.artifact, r.sha256, r.size, r.key_fingerprint,
                    r.manifest, r.signature, r.published_at.timestamp(), r.published_by,
                ),
            )  # fmt: skip
            audit.append(conn, entry)
        return release, True

    def get_release(self, version: str, family: Family) -> AgentRelease | None:
        """The ``family`` package of a version, if published."""
        row = self._conn.execute(
            f"{_SELECT} WHERE version = ? AND family = ?", (version, str(family))
        ).fetchone()
        return None if row is None else _release(row)

    def releases_of(self, version: str) -> list[AgentRelease]:
        """Every published package of a version, by family."""
        cur = self._conn.execute(f"{_SELECT} WHERE version = ? ORDER BY family", (version,))
        return [_release(row) for row in cur.fetchall()]

    def release_by_digest(self, sha256: str) -> AgentRelease | None:
        """The release whose artifact has this digest (hex), if any."""
        row = self._conn.execute(
            f"{_SELECT} WHERE sha256 = ? ORDER BY published_at LIMIT 1", (sha256,)
        ).fetchone()
        return None if row is None else _release(row)

    def list_releases(self) -> list[AgentRelease]:
        cur = self._conn.execute(f"{_SELECT} ORDER BY published_at, version, family")
        return [_release(row) for row in cur.fetchall()]
