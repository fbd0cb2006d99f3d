"""Schema migrations: one source for both backends. Each is a named
function, applied once, in order, in a transaction together with its record
(SQLite: sqlite-utils, table `_sqlite_migrations`; PostgreSQL:
controller/store/postgres.py, table `fleetpatch_migrations`). Never edit a
released migration: add a new one.

Writing a migration that works on both:

    @migrations(name="0010_what_it_adds")
    def _what_it_adds(db: Database) -> None:
        db.execute("CREATE TABLE things (thing_id TEXT PRIMARY KEY, at REAL NOT NULL)")
        db.execute("CREATE INDEX things_at ON things (at)")

- Only ``db.execute(sql)`` (with ``?`` parameters if any): on PostgreSQL
  ``db`` is a connection, not a sqlite-utils Database, so no table API
  (``db["t"].create``, ``.transform``, ``.insert``).
- Plain SQL in SQLite's spelling, with the types INTEGER, REAL, TEXT and
  BLOB: dialect.py rewrites them for PostgreSQL (BIGINT, DOUBLE PRECISION,
  TEXT, BYTEA), ``?`` to ``%s``, ``INSERT OR IGNORE`` to ``ON CONFLICT DO
  NOTHING``, ``INTEGER PRIMARY KEY`` to an identity column. Its docstring
  lists what has no rewrite (two-argument MAX, INSERT OR REPLACE, PRAGMA,
  date functions): do not use those.
- ``ALTER TABLE t ADD COLUMN c ... DEFAULT ...`` and ``UPDATE`` work on both;
  SQLite cannot drop or retype a column in place, so add a column instead.
- Store times as REAL epoch seconds, flags as INTEGER 0/1, JSON as TEXT.
- tests/unit/test_store.py runs every migration on both backends: a
  migration that PostgreSQL rejects fails there.
- Replicas are upgraded one at a time, the older ones serving on the
  migrated database meanwhile (an older one refuses to start on it:
  ``refuse_newer``): leave what the version before reads and writes
  working. Add; drop a table or column a release later, once no version
  in use needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleetpatch import __version__
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from controller.errors import UsageError

MIGRATION_SET = "fleetpatch.controller"
migrations = Migrations(MIGRATION_SET)


def registered() -> list[Any]:
    """The migrations in order (each has ``name`` and ``fn(db)``): what the
    PostgreSQL backend applies. sqlite-utils keeps them in ``_migrations``."""
    return list(migrations._migrations)


def refuse_newer(applied: Iterable[str]) -> None:
    """Raise UsageError when the database has migrations this version does
    not know: a newer fleetpatch migrated it (another replica upgraded
    first, or this package was downgraded), and this code may not read or
    write what that one made of it."""
    known = {migration.name for migration in registered()}
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise UsageError(
            f"the database was migrated by a newer fleetpatch than this one ({__version__}): "
            f"{', '.join(unknown)} unknown here; upgrade this controller (replicas: every one, "
            "before an older one starts again)"
        )


_STATEMENTS_0001 = [
    """CREATE TABLE tokens (
        token_id      TEXT PRIMARY KEY,
        secret_hash   TEXT NOT NULL,
        region        TEXT NOT NULL,
        ring          INTEGER NOT NULL,
        labels        TEXT NOT NULL DEFAULT '{}',
        uses_allowed  INTEGER NOT NULL,
        uses          INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL,
        expires_at    REAL NOT NULL,
        revoked       INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE hosts (
        host_id            TEXT PRIMARY KEY,
        region             TEXT NOT NULL,
        ring               INTEGER NOT NULL,
        labels             TEXT NOT NULL DEFAULT '{}',
        status             TEXT NOT NULL,
        token_id           TEXT NOT NULL,
        enrolled_at        REAL NOT NULL,
        last_seen          REAL,
        facts              TEXT NOT NULL DEFAULT '{}',
        health             TEXT NOT NULL DEFAULT '{}',
        inventory_hash     TEXT NOT NULL DEFAULT '',
        package_count      INTEGER NOT NULL DEFAULT 0,
        inventory_updates  INTEGER NOT NULL DEFAULT 0,
        checkins           INTEGER NOT NULL DEFAULT 0,
        cert_serial        TEXT NOT NULL,
        cert_expires_at    REAL NOT NULL,
        revoked_at         REAL
    )""",
    "CREATE INDEX hosts_region_ring ON hosts (region, ring, host_id)",
    """CREATE TABLE inventories (
        host_id     TEXT PRIMARY KEY REFERENCES hosts (host_id),
        hash        TEXT NOT NULL,
        packages    BLOB NOT NULL,  -- zlib(JSON [[name, version, arch], ...])
        updated_at  REAL NOT NULL
    )""",
]


@migrations(name="0001_initial")
def _initial(db: Database) -> None:
    for statement in _STATEMENTS_0001:
        db.execute(statement)


@migrations(name="0002_progress_reports")
def _progress_reports(db: Database) -> None:
    db.execute(
        """CREATE TABLE progress_reports (
            idempotency_key  TEXT NOT NULL,
            host_id          TEXT NOT NULL REFERENCES hosts (host_id),
            order_id         TEXT NOT NULL,
            step             TEXT NOT NULL,
            final            INTEGER NOT NULL,
            outcome          TEXT NOT NULL,
            detail           TEXT NOT NULL,
            at               REAL NOT NULL,
            received_at      REAL NOT NULL,
            payload          BLOB NOT NULL,  -- the ProgressReport as the agent sent it
            PRIMARY KEY (host_id, idempotency_key)
        )"""
    )
    db.execute("CREATE INDEX progress_reports_order ON progress_reports (order_id, at)")


@migrations(name="0003_campaigns_and_audit")
def _campaigns(db: Database) -> None:
    db.execute(
        """CREATE TABLE campaigns (
            campaign_id        TEXT PRIMARY KEY,
            name               TEXT NOT NULL,
            spec               TEXT NOT NULL,   -- the campaign file, as given
            state              TEXT NOT NULL,
            created_at         REAL NOT NULL,
            created_by         TEXT NOT NULL,
            approved_at        REAL,
            updated_at         REAL NOT NULL,
            halt_kind          TEXT NOT NULL DEFAULT '',
            halt_reason        TEXT NOT NULL DEFAULT '',
            accepted_failures  TEXT NOT NULL DEFAULT '{}',  -- ring -> failures a person accepted
            accepted_silent    TEXT NOT NULL DEFAULT '{}',
            revert_requested   INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(
        """CREATE TABLE assignments (
            order_id        TEXT PRIMARY KEY,
            campaign_id     TEXT NOT NULL REFERENCES campaigns (campaign_id),
            host_id         TEXT NOT NULL REFERENCES hosts (host_id),
            kind            TEXT NOT NULL,   -- patch | revert
            ring            INTEGER NOT NULL,
            region          TEXT NOT NULL,
            sequence        INTEGER NOT NULL,
            envelope        BLOB NOT NULL,
            status          TEXT NOT NULL,
            step            TEXT NOT NULL DEFAULT '',
            detail          TEXT NOT NULL DEFAULT '',
            assigned_at     REAL NOT NULL,
            last_report_at  REAL,
            finished_at     REAL,
            UNIQUE (campaign_id, host_id, kind)
        )"""
    )
    db.execute("CREATE INDEX assignments_campaign ON assignments (campaign_id, status)")
    db.execute("CREATE INDEX assignments_host ON assignments (host_id, status)")
    db.execute("ALTER TABLE hosts ADD COLUMN order_sequence INTEGER NOT NULL DEFAULT 0")
    db.execute(
        """CREATE TABLE audit (
            seq        INTEGER PRIMARY KEY,
            at         TEXT NOT NULL,
            actor      TEXT NOT NULL,
            action     TEXT NOT NULL,
            target     TEXT NOT NULL,
            outcome    TEXT NOT NULL,
            detail     TEXT NOT NULL,
            prev_hash  TEXT NOT NULL,
            hash       TEXT NOT NULL
        )"""
    )


@migrations(name="0004_agent_releases")
def _agent_releases(db: Database) -> None:
    db.execute(
        """CREATE TABLE agent_releases (
            version          TEXT PRIMARY KEY,   -- PEP 440
            artifact         TEXT NOT NULL,      -- fleetpatch-agent_<debian version>_<arch>.deb
            sha256           TEXT NOT NULL,      -- hex; the file is DATA_DIR/artifacts/<sha256>
            size             INTEGER NOT NULL,
            key_fingerprint  TEXT NOT NULL,      -- the release key it was checked against, or ''
            manifest         BLOB NOT NULL,      -- SHA256SUMS, byte for byte as signed
            signature        BLOB NOT NULL,      -- SHA256SUMS.sig
            published_at     REAL NOT NULL,
            published_by     TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX agent_releases_sha256 ON agent_releases (sha256)")


@migrations(name="0005_webhook_cursors")
def _webhook_cursors(db: Database) -> None:
    # Campaign events reach webhooks from the audit trail, which is written
    # in the same transaction as the change it records: that is the outbox.
    # A webhook's cursor is the last audit sequence it has been given.
    db.execute(
        """CREATE TABLE webhook_cursors (
            name       TEXT PRIMARY KEY,
            after_seq  INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX assignments_campaign_ring ON assignments (campaign_id, ring)")


@migrations(name="0006_available_updates")
def _available_updates(db: Database) -> None:
    # What each host's agent last found it could install (its scan), kept
    # whole as the inventory is, with the counts the views show.
    db.execute("ALTER TABLE hosts ADD COLUMN updates_hash TEXT NOT NULL DEFAULT ''")
    db.execute(
        """CREATE TABLE available_updates (
            host_id     TEXT PRIMARY KEY REFERENCES hosts (host_id),
            hash        TEXT NOT NULL,
            updates     BLOB NOT NULL,   -- zlib-compressed JSON rows of UPDATE_FIELDS
            scanned_at  REAL,
            total       INTEGER NOT NULL,
            security    INTEGER NOT NULL,
            reboot      INTEGER NOT NULL
        )"""
    )


@migrations(name="0007_certificate_renewal")
def _certificate_renewal(db: Database) -> None:
    # Hosts renew their certificate at two thirds of its life: when it
    # started is kept to say when that is. Certificates issued before this
    # migration lasted 365 days.
    db.execute("ALTER TABLE hosts ADD COLUMN cert_not_before REAL")
    db.execute("UPDATE hosts SET cert_not_before = cert_expires_at - 365 * 86400")
    # Renewals failed in a row (reported by the agent, or refused here) and
    # the last reason; reset by a renewal.
    db.execute("ALTER TABLE hosts ADD COLUMN renew_failures INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE hosts ADD COLUMN renew_error TEXT NOT NULL DEFAULT ''")


@migrations(name="0008_admins")
def _admins(db: Database) -> None:
    # Admins are named people with a role (controller/fleet/admins.py). An
    # admin's certificates are kept by serial: a call is admitted only with
    # a certificate issued here and not revoked, so that revoking an admin
    # takes effect at once and adding the name again later does not bring
    # its old certificates back. Data dirs from before this migration get
    # their admin.pem registered as an owner when `serve` starts.
    db.execute(
        """CREATE TABLE admins (
            name        TEXT PRIMARY KEY,
            role        TEXT NOT NULL,
            status      TEXT NOT NULL,
            created_at  REAL NOT NULL,
            created_by  TEXT NOT NULL,
            revoked_at  REAL
        )"""
    )
    db.execute(
        """CREATE TABLE admin_certificates (
            serial      TEXT PRIMARY KEY,
            name        TEXT NOT NULL REFERENCES admins (name),
            not_before  REAL NOT NULL,
            not_after   REAL NOT NULL,
            revoked     INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX admin_certificates_name ON admin_certificates (name)")


@migrations(name="0009_vulnerabilities")
def _vulnerabilities(db: Database) -> None:
    # Imported feeds (controller/vulns/feeds.py): one row per source, the
    # generation counting imports so hosts are matched again after each.
    db.execute(
        """CREATE TABLE vuln_sources (
            source       TEXT PRIMARY KEY,
            generation   INTEGER NOT NULL,
            feed_date    REAL,
            imported_at  REAL NOT NULL,
            imported_by  TEXT NOT NULL,
            records      INTEGER NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE vulns (
            vuln_id    TEXT PRIMARY KEY,
            source     TEXT NOT NULL,
            severity   TEXT NOT NULL,
            summary    TEXT NOT NULL,
            published  REAL,            -- disclosure, when the feed says
            modified   REAL,
            aliases    TEXT NOT NULL    -- JSON list: CVE ids of an advisory
        )"""
    )
    db.execute("CREATE INDEX vulns_source ON vulns (source)")
    db.execute(
        """CREATE TABLE vuln_affected (
            vuln_id     TEXT NOT NULL REFERENCES vulns (vuln_id) ON DELETE CASCADE,
            release     TEXT NOT NULL,  -- debian:12, almalinux:9 (vulns/releases.py)
            package     TEXT NOT NULL,  -- source package on dpkg releases, binary on rpm
            introduced  TEXT NOT NULL,  -- '': from the first version
            fixed       TEXT NOT NULL,  -- '': no fix yet
            PRIMARY KEY (vuln_id, release, package, introduced)
        )"""
    )
    db.execute("CREATE INDEX vuln_affected_release ON vuln_affected (release, package)")
    db.execute(
        """CREATE TABLE vuln_aliases (
            alias    TEXT NOT NULL,
            vuln_id  TEXT NOT NULL REFERENCES vulns (vuln_id) ON DELETE CASCADE,
            PRIMARY KEY (alias, vuln_id)
        )"""
    )
    # Per host, vulnerability and package: when it was first seen exposed
    # and when the host's inventory first showed it fixed (NULL while open).
    db.execute(
        """CREATE TABLE exposures (
            host_id     TEXT NOT NULL REFERENCES hosts (host_id),
            vuln_id     TEXT NOT NULL,
            package     TEXT NOT NULL,
            installed   TEXT NOT NULL,
            fixed       TEXT NOT NULL,
            available   INTEGER NOT NULL,  -- the host's last scan offers the fix
            first_seen  REAL NOT NULL,
            fixed_at    REAL,
            region      TEXT NOT NULL,     -- the host's when it was matched: its cell
            ring        INTEGER NOT NULL,
            PRIMARY KEY (host_id, vuln_id, package)
        )"""
    )
    # No index by vulnerability: a large fleet's first match writes millions
    # of rows, and one in random key order would triple the time. The views
    # by vulnerability read vuln_cells; `vulns show` scans.
    # Open exposures counted per vulnerability and cell (region, ring): hosts
    # exposed, of which the fix is offered to; kept by the matcher as it
    # writes exposures, so `vulns list` reads counts, not every exposure.
    db.execute(
        """CREATE TABLE vuln_cells (
            vuln_id     TEXT NOT NULL,
            region      TEXT NOT NULL,
            ring        INTEGER NOT NULL,
            hosts       INTEGER NOT NULL,
            fixable     INTEGER NOT NULL,
            first_seen  REAL NOT NULL,
            PRIMARY KEY (vuln_id, region, ring)
        )"""
    )
    # What each host was last matched against: its inventory and updates
    # hashes and the feed generation; a host is matched again when it differs.
    db.execute("ALTER TABLE hosts ADD COLUMN vulns_matched TEXT NOT NULL DEFAULT ''")


@migrations(name="0010_agent_release_families")
def _agent_release_families(db: Database) -> None:
    # One agent version is released as a .deb and an .rpm (one signed
    # SHA256SUMS lists both): a published package is a version and a package
    # family. SQLite cannot change a primary key in place, so the rows move
    # to a table keyed by both; every earlier release was a .deb.
    db.execute(
        """CREATE TABLE agent_release_packages (
            version          TEXT NOT NULL,      -- PEP 440
            family           TEXT NOT NULL,      -- deb | rpm (fleetpatch.agentrelease.Family)
            artifact         TEXT NOT NULL,      -- the package's file name in the release
            sha256           TEXT NOT NULL,      -- hex; the file is DATA_DIR/artifacts/<sha256>
            size             INTEGER NOT NULL,
            key_fingerprint  TEXT NOT NULL,      -- the release key it was checked against, or ''
            manifest         BLOB NOT NULL,      -- SHA256SUMS, byte for byte as signed
            signature        BLOB NOT NULL,      -- SHA256SUMS.sig
            published_at     REAL NOT NULL,
            published_by     TEXT NOT NULL,
            PRIMARY KEY (version, family)
        )"""
    )
    db.execute(
        "INSERT INTO agent_release_packages (version, family, artifact, sha256, size,"
        " key_fingerprint, manifest, signature, published_at, published_by)"
        " SELECT version, 'deb', artifact, sha256, size, key_fingerprint, manifest, signature,"
        " published_at, published_by FROM agent_releases"
    )
    db.execute("DROP TABLE agent_releases")
    db.execute("CREATE INDEX agent_release_packages_sha256 ON agent_release_packages (sha256)")


# A host's placement is what a check-in's answer depends on: its status,
# region, ring and labels. The generation counts the changes to hosts'
# placements, whatever statement or replica makes them (a trigger, so no
# code path can forget it): a controller that answers
# check-ins from memory (controller/store/heartbeats.py) trusts what it
# holds only while the generation it read with it is still the current one.
# A pending host becoming active is not counted (every host does it once),
# nor an expired pending host deleted; any other change is, whatever the
# host's status (a check-in that activates a host reads its row again after
# the activation, so a pending host's change is not missed either way).
_PLACEMENT_CHANGED = (
    "(NEW.status IS DISTINCT FROM OLD.status"
    " AND NOT (OLD.status = 'pending' AND NEW.status = 'active'))"
    " OR NEW.region IS DISTINCT FROM OLD.region OR NEW.ring IS DISTINCT FROM OLD.ring"
    " OR NEW.labels IS DISTINCT FROM OLD.labels"
)
# An upsert: a generations table emptied by hand starts again from no row (0).
_BUMP = (
    "INSERT INTO generations (name, generation) VALUES ('hosts', 1)"
    " ON CONFLICT (name) DO UPDATE SET generation = generations.generation + 1"
)


@migrations(name="0011_host_placement_generation")
def _host_placement_generation(db: Database) -> None:
    db.execute("CREATE TABLE generations (name TEXT PRIMARY KEY, generation INTEGER NOT NULL)")
    if isinstance(db, Database):  # SQLite: a trigger's body is its statements
        changed = _PLACEMENT_CHANGED.replace("IS DISTINCT FROM", "IS NOT")
        db.execute(
            "CREATE TRIGGER hosts_placement_changed AFTER UPDATE OF status, region, ring, labels"
            f" ON hosts WHEN {changed} BEGIN {_BUMP}; END"
        )
        db.execute(
            "CREATE TRIGGER hosts_removed AFTER DELETE ON hosts"
            f" WHEN OLD.status <> 'pending' BEGIN {_BUMP}; END"
        )
        return
    # PostgreSQL: a trigger runs a function.
    db.execute(
        "CREATE FUNCTION fleetpatch_hosts_changed() RETURNS trigger LANGUAGE plpgsql"
        f" AS $$ BEGIN {_BUMP}; RETURN NULL; END $$"
    )
    db.execute(
        "CREATE TRIGGER hosts_placement_changed AFTER UPDATE OF status, region, ring, labels"
        f" ON hosts FOR EACH ROW WHEN ({_PLACEMENT_CHANGED})"
        " EXECUTE FUNCTION fleetpatch_hosts_changed()"
    )
    db.execute(
        "CREATE TRIGGER hosts_removed AFTER DELETE ON hosts FOR EACH ROW"
        " WHEN (OLD.status <> 'pending') EXECUTE FUNCTION fleetpatch_hosts_changed()"
    )


# The CAs and signing keys of the data dirs that serve this database
# (controller/fleet/lineage.py): one row, JSON lists of marks.
@migrations(name="0012_fleet_lineage")
def _fleet_lineage(db: Database) -> None:
    db.execute(
        "CREATE TABLE fleet_lineage (name TEXT PRIMARY KEY, in_use TEXT NOT NULL,"
        " known TEXT NOT NULL)"
    )


# Facts stored before a NUL in a host's text was refused (controller/api/
# limits.py, `scrub_nul`) may hold one, escaped in their JSON: PostgreSQL's
# JSON type refuses such a document, so a query that read every host's facts
# as JSON (the machine-id twins of each enrollment) failed for all hosts.
# Shown as U+FFFD, as free text is.
@migrations(name="0013_facts_without_nul")
def _facts_without_nul(db: Database) -> None:
    nul, shown = "\\u0000", "\\ufffd"  # as JSON escapes them
    db.execute(
        "UPDATE hosts SET facts = replace(facts, ?, ?) WHERE replace(facts, ?, ?) <> facts",
        (nul, shown, nul, shown),
    )
