"""controller.store: every SQL statement of the controller, on a real SQLite."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fleetpatch import __version__
from fleetpatch.orderspec import OrderState

from controller.audit import AuditEntry, verify
from controller.campaigns.tallies import CampaignState
from controller.errors import NotFound, TokenRefused, UsageError
from controller.fleet.lineage import Lineage
from controller.fleet.relabel import Relabel
from controller.fleet.tokens import Token, new_token
from controller.model import (
    Assignment,
    AssignmentKind,
    AssignmentStatus,
    CampaignRecord,
    CheckIn,
    CheckInOutcome,
    Heartbeat,
    Host,
    HostPlace,
    HostStatus,
    Package,
)
from controller.store import Store

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PACKAGES: list[Package] = [("bash", "5.2-1", "amd64"), ("zlib1g", "1:1.3", "amd64")]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The contract: every test taking ``store`` runs on both backends, on
    a real SQLite (in memory) and a real PostgreSQL (emptied after each test)."""
    if request.param == "sqlite":
        store = Store.memory()
    else:
        store = Store.connect(request.getfixturevalue("postgres_emptied_url"))
    yield store
    store.close()


def _token(
    uses: int = 10, ttl: timedelta = timedelta(hours=1), now: datetime = NOW, region: str = "eu"
) -> Token:
    token, _ = new_token(region, 1, uses, ttl, {"role": "web"}, now)
    return token


def _host(n: int, region: str = "eu", ring: int = 0) -> Host:
    return Host(
        host_id=f"h-{n:016x}",
        region=region,
        ring=ring,
        status=HostStatus.ACTIVE,
        enrolled_at=NOW,
        labels={"role": "web"},
        facts={"os": "debian", "kernel": "6.1"},
        certificate_serial=str(1000 + n),
        certificate_expires_at=NOW + timedelta(days=365),
    )


def _enrolled(store: Store, *hosts: Host) -> Token:
    token = _token(uses=max(1, len(hosts)))
    store.create_token(token)
    for host in hosts:
        store.enroll_host(host, token.token_id, NOW)
    return token


def _checkin(
    host_id: str,
    packages: list[Package] | None,
    inventory_hash: str = "sha256:abc",
    at: datetime = NOW,
) -> CheckIn:
    return CheckIn(host_id, at, {"os": "debian"}, {"healthy": True}, inventory_hash, packages)


# -- schema ---------------------------------------------------------------------

MIGRATIONS = [
    "0001_initial", "0002_progress_reports", "0003_campaigns_and_audit",
    "0004_agent_releases", "0005_webhook_cursors", "0006_available_updates",
    "0007_certificate_renewal", "0008_admins", "0009_vulnerabilities",
    "0010_agent_release_families", "0011_host_placement_generation", "0012_fleet_lineage",
    "0013_facts_without_nul",
]  # fmt: skip


def test_migrations_are_recorded_by_name(store):
    assert store.applied_migrations() == MIGRATIONS


def test_reopening_does_not_reapply_migrations(tmp_path):
    path = tmp_path / "controller.db"
    Store.open(path).close()
    store = Store.open(path)
    try:
        assert store.applied_migrations() == MIGRATIONS
    finally:
        store.close()


def test_releases_published_before_families_became_deb_packages():
    """0010 moves every release row to agent_release_packages, as a .deb."""
    from sqlite_utils import Database

    from controller.store.migrations import registered

    db = Database(memory=True)
    steps = registered()
    names = [m.name for m in steps]
    for step in steps[: names.index("0010_agent_release_families")]:
        step.fn(db)
    db.execute(
        "INSERT INTO agent_releases VALUES (?,?,?,?,?,?,?,?,?)",
        ("0.2.0", "fleetpatch-agent_0.2.0_amd64.deb", "ab" * 32, 10, "", b"m", b"s", 1.0, "ann"),
    )
    steps[names.index("0010_agent_release_families")].fn(db)
    moved = db.execute("SELECT version, family, artifact FROM agent_release_packages")
    assert moved.fetchall() == [("0.2.0", "deb", "fleetpatch-agent_0.2.0_amd64.deb")]
    assert "agent_releases" not in db.table_names()


def test_file_database_uses_wal(tmp_path):
    path = tmp_path / "controller.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


# -- tokens ---------------------------------------------------------------------


def test_create_and_get_token(store):
    token = _token()
    store.create_token(token)
    assert store.get_token(token.token_id) == token


def test_get_unknown_token(store):
    assert store.get_token("0" * 12) is None


def test_list_tokens_oldest_first(store):
    later = _token(now=NOW + timedelta(minutes=1))
    earlier = _token(now=NOW)
    store.create_token(later)
    store.create_token(earlier)
    assert store.list_tokens() == [earlier, later]


def test_list_tokens_empty(store):
    assert store.list_tokens() == []


def test_revoke_token(store):
    token = _token()
    store.create_token(token)
    revoked = store.revoke_token(token.token_id)
    assert revoked.revoked
    assert revoked.token_id == token.token_id
    assert store.get_token(token.token_id) == revoked


def test_revoke_unknown_token(store):
    with pytest.raises(NotFound, match="no enrollment token 'deadbeef0000'"):
        store.revoke_token("deadbeef0000")


# -- enrollment -----------------------------------------------------------------


def test_enroll_records_the_host_and_spends_one_use(store):
    token = _token(uses=3)
    store.create_token(token)
    host = _host(1)
    store.enroll_host(host, token.token_id, NOW)
    assert store.get_host(host.host_id) == host
    stored = store.get_token(token.token_id)
    assert stored is not None
    assert stored.uses == 1


def test_enroll_refuses_when_used_up(store):
    token = _token(uses=1)
    store.create_token(token)
    store.enroll_host(_host(1), token.token_id, NOW)
    with pytest.raises(TokenRefused, match=f"enrollment token {token.token_id} can no longer"):
        store.enroll_host(_host(2), token.token_id, NOW)
    with pytest.raises(NotFound):
        store.get_host(_host(2).host_id)
    stored = store.get_token(token.token_id)
    assert stored is not None
    assert stored.uses == 1


def test_enroll_refuses_a_revoked_token(store):
    token = _token()
    store.create_token(token)
    store.revoke_token(token.token_id)
    with pytest.raises(TokenRefused, match="can no longer be used"):
        store.enroll_host(_host(1), token.token_id, NOW)
    assert store.list_hosts() == []


def test_enroll_refuses_an_expired_token(store):
    token = _token(ttl=timedelta(hours=1))
    store.create_token(token)
    with pytest.raises(TokenRefused, match="can no longer be used"):
        store.enroll_host(_host(1), token.token_id, token.expires_at)
    store.enroll_host(_host(2), token.token_id, token.expires_at - timedelta(seconds=1))
    assert [h.host_id for h in store.list_hosts()] == [_host(2).host_id]


def test_enroll_refuses_an_unknown_token(store):
    with pytest.raises(TokenRefused):
        store.enroll_host(_host(1), "0" * 12, NOW)


def test_enroll_is_atomic(store):
    """When recording the host fails, the token use is not spent."""
    token = _token(uses=5)
    store.create_token(token)
    store.enroll_host(_host(1), token.token_id, NOW)
    with pytest.raises(store._backend.integrity_errors):
        store.enroll_host(_host(1), token.token_id, NOW)  # same host id again
    stored = store.get_token(token.token_id)
    assert stored is not None
    assert stored.uses == 1


def test_enroll_spends_exactly_the_uses_allowed(store):
    token = _token(uses=3)
    store.create_token(token)
    enrolled = 0
    for n in range(10):
        try:
            store.enroll_host(_host(n), token.token_id, NOW)
            enrolled += 1
        except TokenRefused:
            pass
    assert enrolled == 3
    assert len(store.list_hosts()) == 3


# -- hosts ----------------------------------------------------------------------


def test_get_unknown_host(store):
    with pytest.raises(NotFound, match="no host 'h-nope'"):
        store.get_host("h-nope")


def test_list_hosts_filters_by_region_and_ring(store):
    hosts = [
        _host(1, "eu", 0),
        _host(2, "eu", 1),
        _host(3, "us", 0),
        _host(4, "us", 1),
        _host(5, "eu", 0),
    ]
    _enrolled(store, *hosts)

    def ids(found: list[Host]) -> list[int]:
        return [int(h.host_id[2:], 16) for h in found]

    assert ids(store.list_hosts()) == [1, 2, 3, 4, 5]
    assert ids(store.list_hosts(region="eu")) == [1, 2, 5]
    assert ids(store.list_hosts(ring=0)) == [1, 3, 5]
    assert ids(store.list_hosts(ring=1)) == [2, 4]
    assert ids(store.list_hosts(region="us", ring=1)) == [4]
    assert ids(store.list_hosts(region="ap")) == []


def test_list_hosts_paginates_with_after(store):
    hosts = [_host(n) for n in (7, 3, 9, 1, 5, 2, 8)]
    _enrolled(store, *hosts)
    pages: list[list[str]] = []
    after = ""
    while True:
        page = store.list_hosts(after=after, limit=3)
        if not page:
            break
        pages.append([h.host_id for h in page])
        after = page[-1].host_id
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == sorted(h.host_id for h in hosts)


def test_list_hosts_pagination_with_a_filter(store):
    _enrolled(store, *[_host(n, "eu" if n % 2 else "us") for n in range(1, 9)])
    first = store.list_hosts(region="eu", limit=2)
    second = store.list_hosts(region="eu", after=first[-1].host_id, limit=2)
    assert [int(h.host_id[2:], 16) for h in first + second] == [1, 3, 5, 7]


def test_revoke_host(store):
    host = _host(1)
    _enrolled(store, host, _host(2))
    revoked = store.revoke_host(host.host_id, NOW)
    assert revoked.status is HostStatus.REVOKED
    assert store.get_host(host.host_id).status is HostStatus.REVOKED
    assert store.host_ids(HostStatus.REVOKED) == {host.host_id}
    assert store.revoke_host(host.host_id, NOW + timedelta(hours=1)).status is HostStatus.REVOKED


def test_revoke_unknown_host(store):
    with pytest.raises(NotFound, match="no host 'h-nope'"):
        store.revoke_host("h-nope", NOW)


# -- check-ins ------------------------------------------------------------------


def test_checkin_of_an_unknown_host(store):
    assert store.record_checkins([_checkin("h-nope", PACKAGES)]) == [
        CheckInOutcome(known=False, revoked=False, inventory_hash="")
    ]


def test_checkin_of_a_revoked_host_is_not_recorded(store):
    host = _host(1)
    _enrolled(store, host)
    store.revoke_host(host.host_id, NOW)
    outcome = store.record_checkins([_checkin(host.host_id, PACKAGES)])
    assert outcome == [CheckInOutcome(known=True, revoked=True, inventory_hash="")]
    stored = store.get_host(host.host_id)
    assert stored.checkins == 0
    assert stored.last_seen is None
    assert store.get_inventory(host.host_id) == []


def test_checkin_with_inventory(store):
    host = _host(1)
    _enrolled(store, host)
    at = NOW + timedelta(minutes=5)
    outcome = store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one", at)])
    assert outcome == [CheckInOutcome(True, False, "sha256:one", "eu", 0, {"role": "web"})]
    stored = store.get_host(host.host_id)
    assert stored.inventory_hash == "sha256:one"
    assert stored.package_count == 2
    assert stored.inventory_updates == 1
    assert stored.checkins == 1
    assert stored.last_seen == at
    assert stored.facts == {"os": "debian"}
    assert stored.health == {"healthy": True}
    assert store.get_inventory(host.host_id) == PACKAGES


def test_checkin_with_only_the_hash_keeps_the_inventory(store):
    host = _host(1)
    _enrolled(store, host)
    store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one")])
    outcome = store.record_checkins(
        [_checkin(host.host_id, None, "sha256:whatever", NOW + timedelta(minutes=5))]
    )
    # the controller answers with the hash it holds, so a host that differs resends
    assert outcome == [CheckInOutcome(True, False, "sha256:one", "eu", 0, {"role": "web"})]
    stored = store.get_host(host.host_id)
    assert stored.inventory_hash == "sha256:one"
    assert stored.package_count == 2
    assert stored.inventory_updates == 1
    assert stored.checkins == 2
    assert stored.last_seen == NOW + timedelta(minutes=5)
    assert store.get_inventory(host.host_id) == PACKAGES


def test_first_checkin_without_inventory_reports_no_hash(store):
    host = _host(1)
    _enrolled(store, host)
    assert store.record_checkins([_checkin(host.host_id, None)]) == [
        CheckInOutcome(True, False, "", "eu", 0, {"role": "web"})
    ]


# -- the placement generation and check-ins written behind ------------------------


def test_the_placement_generation_counts_what_changes_an_active_hosts_answer(store):
    """Status, region, ring or labels of an active host, by any statement:
    a store method or SQL of its own (another replica's, a future path)."""
    active, pending = _host(1), dataclasses.replace(_host(2), status=HostStatus.PENDING)
    _enrolled(store, active, pending)
    before = store.hosts_generation()
    store.record_checkins([_checkin(active.host_id, PACKAGES, "sha256:one")])
    store.activate_host(pending.host_id)  # held hosts are active ones: nothing held changed
    store.relabel_host(active.host_id, Relabel({"role": "web"}), "admin:a", NOW)  # no change
    assert store.hosts_generation() == before
    store.relabel_host(active.host_id, Relabel({}, ring=3), "admin:a", NOW)
    assert store.hosts_generation() == before + 1
    with store._transaction() as conn:
        conn.execute("UPDATE hosts SET labels = '{}' WHERE host_id = ?", (active.host_id,))
    assert store.hosts_generation() == before + 2
    store.revoke_host(active.host_id, NOW)
    assert store.hosts_generation() == before + 3
    with store._transaction() as conn:  # whatever the host's status
        conn.execute("UPDATE hosts SET region = 'us' WHERE host_id = ?", (active.host_id,))
    assert store.hosts_generation() == before + 4
    with store._transaction() as conn:
        conn.execute("DELETE FROM inventories WHERE host_id = ?", (active.host_id,))
        conn.execute("DELETE FROM hosts WHERE host_id = ?", (active.host_id,))
    assert store.hosts_generation() == before + 5
    expired = dataclasses.replace(_host(3), status=HostStatus.PENDING)
    _enrolled(store, expired)
    with store._transaction() as conn:  # a pending host forgotten: nothing held changed
        conn.execute("DELETE FROM hosts WHERE host_id = ?", (expired.host_id,))
    assert store.hosts_generation() == before + 5


def test_a_checkin_outcome_carries_the_generation_read_with_it(store):
    host = _host(1)
    _enrolled(store, host)
    store.relabel_host(host.host_id, Relabel({}, region="us"), "admin:a", NOW)
    [outcome] = store.record_checkins([_checkin(host.host_id, None)])
    assert outcome.generation == store.hosts_generation() == 1
    assert outcome.region == "us"


def test_heartbeats_written_behind_never_move_last_seen_back(store):
    host, revoked = _host(1), _host(2)
    _enrolled(store, host, revoked)
    store.revoke_host(revoked.host_id, NOW)
    store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one", NOW)])
    later = NOW + timedelta(minutes=10)
    generation = store.record_heartbeats([
        Heartbeat(host.host_id, later, {"uptime": 600}, {"healthy": False}, count=3),
        Heartbeat(revoked.host_id, later, {"uptime": 600}, {"healthy": True}),
    ])  # fmt: skip
    assert generation == store.hosts_generation()
    stored = store.get_host(host.host_id)
    assert (stored.last_seen, stored.facts, stored.health, stored.checkins) == (
        later, {"uptime": 600}, {"healthy": False}, 4,
    )  # fmt: skip
    assert stored.inventory_hash == "sha256:one"  # never touched from here
    # An older one (it waited while the store was down) and one whose facts
    # a newer check-in wrote: counted, nothing else.
    store.record_heartbeats([Heartbeat(host.host_id, NOW + timedelta(minutes=7), None, None)])
    stored = store.get_host(host.host_id)
    assert (stored.last_seen, stored.facts, stored.checkins) == (later, {"uptime": 600}, 5)
    gone = store.get_host(revoked.host_id)
    assert (gone.last_seen, gone.checkins) == (None, 0)


def test_new_inventory_replaces_the_old(store):
    host = _host(1)
    _enrolled(store, host)
    store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one")])
    newer = [("bash", "5.2-2", "amd64")]
    outcome = store.record_checkins([_checkin(host.host_id, newer, "sha256:two")])
    assert outcome[0].inventory_hash == "sha256:two"
    stored = store.get_host(host.host_id)
    assert (stored.inventory_hash, stored.package_count, stored.inventory_updates) == (
        "sha256:two",
        1,
        2,
    )
    assert store.get_inventory(host.host_id) == newer


def test_empty_inventory_is_an_inventory(store):
    host = _host(1)
    _enrolled(store, host)
    store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one")])
    store.record_checkins([_checkin(host.host_id, [], "sha256:empty")])
    stored = store.get_host(host.host_id)
    assert (stored.inventory_hash, stored.package_count) == ("sha256:empty", 0)
    assert store.get_inventory(host.host_id) == []


def test_a_batch_answers_each_checkin_in_order(store):
    hosts = [_host(n) for n in range(1, 4)]
    _enrolled(store, *hosts)
    store.revoke_host(hosts[1].host_id, NOW)
    outcomes = store.record_checkins(
        [
            _checkin(hosts[0].host_id, PACKAGES, "sha256:a"),
            _checkin("h-unknown", None),
            _checkin(hosts[1].host_id, PACKAGES),
            _checkin(hosts[2].host_id, None),
        ]
    )
    assert outcomes == [  # the revocation was a placement change: generation 1
        CheckInOutcome(True, False, "sha256:a", "eu", 0, {"role": "web"}, generation=1),
        CheckInOutcome(False, False, ""),
        CheckInOutcome(True, True, ""),
        CheckInOutcome(
            True, False, "", hosts[2].region, hosts[2].ring, {"role": "web"}, generation=1
        ),
    ]
    assert [store.get_host(h.host_id).checkins for h in hosts] == [1, 0, 1]


def test_a_batch_past_one_read_chunk_answers_every_host(store):
    """Hosts are read 500 at a time: 1,202 check-ins (one host twice, one
    unknown) span three reads, in an order unlike theirs."""
    hosts = [_host(n) for n in range(1, 1201)]
    _enrolled(store, *hosts)
    ids = [h.host_id for h in reversed(hosts)]
    batch = [_checkin(i, None) for i in [*ids[:700], "h-unknown", ids[0], *ids[700:]]]
    outcomes = store.record_checkins(batch)
    assert [o.known for o in outcomes] == [True] * 700 + [False] + [True] * 501
    assert store.get_host(ids[0]).checkins == 2
    assert {store.get_host(i).checkins for i in ids[1:]} == {1}


def test_empty_batch(store):
    assert store.record_checkins([]) == []


def test_same_host_twice_in_one_batch(store):
    host = _host(1)
    _enrolled(store, host)
    outcomes = store.record_checkins(
        [
            _checkin(host.host_id, PACKAGES, "sha256:new"),
            _checkin(host.host_id, None, "sha256:new", NOW + timedelta(seconds=1)),
        ]
    )
    assert [o.inventory_hash for o in outcomes] == ["sha256:new", "sha256:new"]
    stored = store.get_host(host.host_id)
    assert stored.inventory_hash == "sha256:new"
    # Both counted, the later one's time, the earlier one's inventory kept.
    assert (stored.checkins, stored.inventory_updates, stored.package_count) == (
        2,
        1,
        len(PACKAGES),
    )
    assert stored.last_seen == NOW + timedelta(seconds=1)


def test_same_host_thrice_in_one_batch_keeps_the_last_facts(store):
    host = _host(1)
    _enrolled(store, host)
    checkins = [
        dataclasses.replace(_checkin(host.host_id, None), facts={"n": n}, health={"up": n})
        for n in range(3)
    ]
    store.record_checkins(checkins)
    stored = store.get_host(host.host_id)
    assert (stored.checkins, stored.facts, stored.health) == (3, {"n": 2}, {"up": 2})


# -- durability -----------------------------------------------------------------


def test_reopening_a_file_keeps_everything(tmp_path: Path):
    path = tmp_path / "controller.db"
    store = Store.open(path)
    token = _token(uses=2)
    store.create_token(token)
    host = _host(1)
    store.enroll_host(host, token.token_id, NOW)
    store.record_checkins([_checkin(host.host_id, PACKAGES, "sha256:one")])
    store.close()

    reopened = Store.open(path)
    try:
        stored_token = reopened.get_token(token.token_id)
        assert stored_token is not None
        assert stored_token.uses == 1
        stored = reopened.get_host(host.host_id)
        assert (stored.region, stored.labels, stored.inventory_hash, stored.checkins) == (
            "eu",
            {"role": "web"},
            "sha256:one",
            1,
        )
        assert reopened.get_inventory(host.host_id) == PACKAGES
    finally:
        reopened.close()


def _pending(n: int, enrolled_at: datetime = NOW) -> Host:
    return dataclasses.replace(_host(n), status=HostStatus.PENDING, enrolled_at=enrolled_at)


def test_a_pending_host_is_active_from_its_first_check_in(store):
    host = _pending(1)
    _enrolled(store, host)
    assert store.host_ids(HostStatus.PENDING) == {host.host_id}
    [outcome] = store.record_checkins([_checkin(host.host_id, None)])
    assert (outcome.known, outcome.revoked, outcome.activated) == (True, False, True)
    [again] = store.record_checkins([_checkin(host.host_id, None)])
    assert again.activated is False
    assert store.get_host(host.host_id).status is HostStatus.ACTIVE
    assert store.host_ids(HostStatus.PENDING) == set()


def test_activate_host_happens_once(store):
    host = _pending(1)
    _enrolled(store, host)
    activated = store.activate_host(host.host_id)
    assert activated is not None
    assert activated.status is HostStatus.ACTIVE
    assert store.activate_host(host.host_id) is None


def test_a_pending_host_that_never_arrives_expires_and_gives_its_token_use_back(store):
    stale, fresh, active = _pending(1, NOW - timedelta(hours=2)), _pending(2), _host(3)
    token = _token(uses=3)
    store.create_token(token)
    for host in (stale, fresh, active):
        store.enroll_host(host, token.token_id, NOW)
    expired = store.expire_pending_hosts(NOW - timedelta(hours=1), NOW)
    assert [h.host_id for h in expired] == [stale.host_id]
    with pytest.raises(NotFound):
        store.get_host(stale.host_id)
    assert {h.host_id for h in store.list_hosts()} == {fresh.host_id, active.host_id}
    kept = store.get_token(token.token_id)
    assert kept is not None
    assert kept.uses == 2
    [record] = [r for r in store.audit_records() if r.entry.action == "host.expire"]
    assert (record.entry.target, record.entry.actor) == (stale.host_id, "controller")
    assert token.token_id in record.entry.detail
    assert store.expire_pending_hosts(NOW - timedelta(hours=1), NOW) == []


# -- a migration added later (what other branches' migrations go through) ---------


def test_a_new_plain_sql_migration_applies_on_both_backends(tmp_path, request):
    """A migration written as migrations.py's docstring says, registered
    after a database was made, is applied once at the next open, on SQLite
    and on PostgreSQL, and its table works the same on both."""
    from controller.store.migrations import migrations, registered

    path = tmp_path / "controller.db"
    Store.open(path).close()  # both databases exist, migrated, before the new migration
    urls = ["", request.getfixturevalue("postgres_url")]

    @migrations(name="9999_test_widgets")
    def _widgets(db: Any) -> None:
        db.execute(
            """CREATE TABLE widgets (
                widget_id  INTEGER PRIMARY KEY,
                name       TEXT NOT NULL UNIQUE,
                weight     REAL NOT NULL,
                blob       BLOB NOT NULL,
                flag       INTEGER NOT NULL DEFAULT 0
            )"""
        )
        db.execute("CREATE INDEX widgets_weight ON widgets (weight)")
        db.execute("ALTER TABLE hosts ADD COLUMN widget_count INTEGER NOT NULL DEFAULT 0")

    try:
        for url in urls:
            store = Store.connect(url) if url else Store.open(path)
            try:
                assert store.applied_migrations() == [*MIGRATIONS, "9999_test_widgets"]
                conn = store._conn
                for name in ("a", "b", "a"):
                    conn.execute(
                        "INSERT OR IGNORE INTO widgets (name, weight, blob, flag) VALUES (?,?,?,?)",
                        (name, 1.25e9 + 0.125, b"\x00\xff", True),
                    )
                rows = conn.execute(
                    "SELECT widget_id, name, weight, blob, flag FROM widgets ORDER BY widget_id"
                ).fetchall()
                assert [(*r[:3], bytes(r[3]), r[4]) for r in rows] == [
                    (1, "a", 1.25e9 + 0.125, b"\x00\xff", 1),
                    (2, "b", 1.25e9 + 0.125, b"\x00\xff", 1),
                ]
            finally:
                store.close()
    finally:
        migrations._migrations = [m for m in registered() if m.name != "9999_test_widgets"]


def test_an_order_is_timed_out_only_if_it_is_as_silent_as_the_caller_saw(store):
    """A replica's counts may miss a report that came through another
    replica: the store times an order out only if no report came after the
    last one the caller knew of."""
    hosts = [_host(1), _host(2)]
    _enrolled(store, *hosts)
    record = CampaignRecord("c-1", "c", "", CampaignState.RUNNING, NOW, "admin:a", NOW)
    store.create_campaign(record, AuditEntry(NOW, "admin:a", "campaign.create", "c-1", "ok"))
    for order_id, host in zip(("o-1", "o-2"), hosts, strict=True):
        order = Assignment(order_id, "c-1", host.host_id, AssignmentKind.PATCH, 0, "eu", 1, b"",
                           AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
        store.assign(order, AuditEntry(NOW, "controller", "order.assign", order_id, "ok"))
    later = NOW + timedelta(minutes=30)
    store.apply_results(hosts[0].host_id, [("o-1", "APPLY", "", "", later)])  # another replica
    late = NOW + timedelta(hours=2)
    assert store.time_out(["o-1", "o-2"], late, {"o-1": NOW, "o-2": NOW}) == ["o-2"]
    assert store.time_out(["o-1"], late, {"o-1": later}) == ["o-1"]
    assert {a.order_id: a.status for a in store.assignments("c-1")} == {
        "o-1": AssignmentStatus.TIMED_OUT, "o-2": AssignmentStatus.TIMED_OUT,
    }  # fmt: skip


def test_orders_recorded_together_take_each_host_s_next_sequence_and_refuse_one_alone(store):
    """`assign_many`: each order sealed with its host's next sequence, one
    transaction; an order the store refuses (the host has the campaign's
    patch already: another replica was first) is None and the rest stand."""
    hosts = [_host(1), _host(2), _host(3)]
    _enrolled(store, *hosts)
    record = CampaignRecord("c-1", "c", "", CampaignState.RUNNING, NOW, "admin:a", NOW)
    store.create_campaign(record, AuditEntry(NOW, "admin:a", "campaign.create", "c-1", "ok"))
    first = Assignment("o-0", "c-1", hosts[1].host_id, AssignmentKind.PATCH, 0, "eu", 1, b"",
                       AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
    store.assign(first, AuditEntry(NOW, "controller", "order.assign", "o-0", "ok"))

    def sealing(n: int, host: Host):
        def seal(sequence: int) -> tuple[Assignment, AuditEntry]:
            order = Assignment(f"o-{n}", "c-1", host.host_id, AssignmentKind.PATCH, 0, "eu",
                               sequence, f"signed {sequence}".encode(),
                               AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
            return order, AuditEntry(NOW, "controller", "order.assign", f"o-{n}", "ok")

        return host.host_id, seal

    recorded = store.assign_many([sealing(n, host) for n, host in enumerate(hosts, 1)])
    assert [a and (a.order_id, a.sequence) for a in recorded] == [("o-1", 1), None, ("o-3", 1)]
    assert sorted(a.order_id for a in store.assignments("c-1")) == ["o-0", "o-1", "o-3"]
    assert store.next_sequence(hosts[0].host_id) == 2
    assert store.next_sequence(hosts[1].host_id) == 2  # its refused order took nothing
    assigned = [r.entry.target for r in store.audit_records() if r.entry.action == "order.assign"]
    assert assigned == ["o-0", "o-1", "o-3"]
    assert verify(store.audit_records()).ok


def test_revoking_twice_changes_and_audits_once(store):
    """Asking twice for a state that holds succeeds and records nothing
    (the command-line contract): a token, a host."""
    token = _enrolled(store, _host(1))
    entry = AuditEntry(NOW, "admin:a", "token.revoke", token.token_id, "ok")
    assert store.revoke_token(token.token_id, entry).revoked
    assert store.revoke_token(token.token_id, entry).revoked
    host_entry = AuditEntry(NOW, "admin:a", "host.revoke", _host(1).host_id, "ok")
    assert store.revoke_host(_host(1).host_id, NOW, host_entry).status is HostStatus.REVOKED
    again = store.revoke_host(_host(1).host_id, NOW + timedelta(hours=1), host_entry)
    assert again.status is HostStatus.REVOKED
    actions = [r.entry.action for r in store.audit_records()]
    assert actions.count("token.revoke") == 1
    assert actions.count("host.revoke") == 1
    with pytest.raises(NotFound):
        store.revoke_token("t-nope", entry)
    with pytest.raises(NotFound):
        store.revoke_host("h-nope", NOW, host_entry)


def test_active_places_are_the_active_hosts_and_those_seen_since(store):
    """What campaign counts read of the fleet: active hosts only (not a
    pending or a revoked one), their place and reported facts; with
    ``seen_since``, only those that checked in after it."""
    hosts = [_host(n, region="us" if n == 2 else "eu", ring=n % 2) for n in range(1, 5)]
    _enrolled(store, *hosts)
    store.record_checkins([_checkin(h.host_id, None, at=NOW) for h in hosts[:3]])
    store.record_checkins([_checkin(hosts[1].host_id, None, at=NOW + timedelta(minutes=5))])
    store.revoke_host(hosts[2].host_id, NOW, AuditEntry(NOW, "admin:a", "host.revoke", "x", "ok"))
    places = sorted(store.active_places(), key=lambda p: p.host_id)
    got = {p.host_id: p for p in places}
    assert set(got) == {hosts[0].host_id, hosts[1].host_id, hosts[3].host_id}
    seen = store.get_host(hosts[1].host_id)
    assert got[hosts[1].host_id] == HostPlace(
        seen.host_id, "us", 0, {"role": "web"}, dict(seen.facts), NOW + timedelta(minutes=5)
    )
    since = store.active_places(seen_since=NOW + timedelta(minutes=1))
    assert [p.host_id for p in since] == [hosts[1].host_id]


def test_reads_by_many_keys_span_chunks(store):
    """Orders recorded together for 1,100 hosts (three chunks of keys) and
    read back by id, and what each host owes, come back complete."""
    hosts = [_host(n) for n in range(1, 1101)]
    _enrolled(store, *hosts)
    record = CampaignRecord("c-1", "c", "", CampaignState.RUNNING, NOW, "admin:a", NOW)
    store.create_campaign(record, AuditEntry(NOW, "admin:a", "campaign.create", "c-1", "ok"))

    def sealing(host: Host):
        def seal(sequence: int) -> tuple[Assignment, AuditEntry]:
            order = Assignment(f"o-{host.host_id}", "c-1", host.host_id, AssignmentKind.PATCH, 0,
                               "eu", sequence, b"", AssignmentStatus.IN_FLIGHT, NOW)  # fmt: skip
            return order, AuditEntry(NOW, "controller", "order.assign", order.order_id, "ok")

        return host.host_id, seal

    recorded = store.assign_many([sealing(h) for h in hosts])
    assert all(a is not None and a.sequence == 1 for a in recorded)
    ids = [f"o-{h.host_id}" for h in hosts]
    assert sorted(a.order_id for a in store.assignments_by_id([*ids, "o-none"])) == sorted(ids)
    rebooting = [h.host_id for h in hosts[::3]]
    for host_id in rebooting:
        store.apply_results(
            host_id, [(f"o-{host_id}", "REBOOT", OrderState.PENDING_REBOOT, "", NOW)]
        )
    assert store.owed_by([h.host_id for h in hosts]) == {h: ["reboot"] for h in rebooting}


def test_the_fleet_lineage_is_recorded_once_and_replaced_only_where_read(store):
    """Compare-and-set: two replicas starting at once, each having read the
    same (or no) lineage, cannot both record theirs."""
    first = Lineage.of(["ca:aa", "key:k1"], [])
    other = Lineage.of(["ca:bb", "key:k9"], [])
    assert store.recorded_lineage() is None
    assert store.record_lineage(first, None)
    assert not store.record_lineage(other, None)
    assert store.recorded_lineage() == first

    rotated = Lineage.of(["ca:aa", "key:k2"], ["key:k1"])
    assert not store.record_lineage(rotated, other)
    assert store.record_lineage(rotated, first)
    assert not store.record_lineage(other, first)
    assert store.recorded_lineage() == rotated


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_a_newer_version_migrated_is_refused_untouched(tmp_path, request, backend):
    """A replica upgraded first migrated the database (or this package was
    downgraded): this version refuses it rather than run on a schema it
    does not know."""
    if backend == "sqlite":
        path = tmp_path / "controller.db"
        table, again = "_sqlite_migrations", lambda: Store.open(path)
    else:
        url = request.getfixturevalue("postgres_url")
        table, again = "fleetpatch_migrations", lambda: Store.connect(url)
    store = again()
    store._conn.execute(
        f"INSERT INTO {table} (migration_set, name, applied_at) VALUES (?, ?, ?)",  # noqa: S608
        ("fleetpatch.controller", "0999_from_the_future", "2027-01-01T00:00:00+00:00"),
    )
    store.close()
    with pytest.raises(UsageError) as refused:
        again()
    assert str(refused.value) == (
        f"the database was migrated by a newer fleetpatch than this one ({__version__}): "
        "0999_from_the_future unknown here; upgrade this controller (replicas: every one, "
        "before an older one starts again)"
    )
