"""Relabelling a host: the change checked as enrollment checks it, merged
into the host's labels, described for the audit trail, and applied by the
store with one audit record (none when nothing changes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.errors import Conflict, NotFound, UsageError
from controller.fleet.relabel import Relabel
from controller.fleet.tokens import new_token
from controller.store import Store
from tests.support.engine import host_row

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOST = host_row("h-0000000000000001", "eu", 1, NOW, labels={"role": "db", "env": "prod"})


def test_labels_are_set_changed_and_removed_and_the_rest_kept():
    placed = Relabel({"role": "web", "tier": "1"}, ("env",), ring=0).checked().applied_to(HOST)
    assert dict(placed.labels) == {"role": "web", "tier": "1"}
    assert (placed.region, placed.ring) == ("eu", 0)
    assert placed.changes_from(HOST) == (
        "ring 1 -> 0; label env: prod -> -; label role: db -> web; label tier: - -> 1"
    )
    assert Relabel({"role": "db"}).applied_to(HOST).changes_from(HOST) == ""


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (Relabel({"Role": "web"}), "label key 'Role'"),
        (Relabel({}, region="EU West"), "region 'EU West'"),
        (Relabel({}, ring=500), "ring 500 is out of range"),
        (Relabel({"role": "web"}, ("role",)), "'role' is both set and removed"),
    ],
)
def test_what_enrollment_would_refuse_is_refused(change, needle):
    with pytest.raises(UsageError, match=needle):
        change.checked()


def test_a_host_keeps_at_most_the_labels_enrollment_allows():
    many = Relabel({f"k{n}": "v" for n in range(40)})
    with pytest.raises(UsageError, match="at most 32 labels"):
        many.checked().applied_to(HOST)


def test_the_store_applies_and_audits_once_per_change(tmp_path):
    store = Store.open(tmp_path / "controller.db")
    token, _ = new_token("eu", 1, 1, timedelta(days=1), {}, NOW)
    store.create_token(token)
    store.enroll_host(HOST, token.token_id, NOW)
    host, detail = store.relabel_host(HOST.host_id, Relabel({}, region="us"), "admin:a", NOW)
    assert (host.region, detail) == ("us", "region eu -> us")
    again, nothing = store.relabel_host(HOST.host_id, Relabel({}, region="us"), "admin:a", NOW)
    assert (again.region, nothing) == ("us", "")
    relabels = [r.entry for r in store.audit_records() if r.entry.action == "host.relabel"]
    assert [(e.actor, e.target, e.detail) for e in relabels] == [
        ("admin:a", HOST.host_id, "region eu -> us")
    ]
    with pytest.raises(NotFound):
        store.relabel_host("h-ffffffffffffffff", Relabel({}, ring=2), "admin:a", NOW)
    store.revoke_host(HOST.host_id, NOW)
    with pytest.raises(Conflict, match="is revoked"):
        store.relabel_host(HOST.host_id, Relabel({}, ring=2), "admin:a", NOW)
