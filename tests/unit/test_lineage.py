"""Whether a data dir is the fleet's (controller.fleet.lineage), on real
data dirs: made by `controller init`, copied as a further replica is, and
rotated with the real `rotate-key` and `rotate-ca`."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.datadir import DataDir
from controller.errors import DataDirError
from controller.fleet import carotation, lineage, signing
from controller.fleet.bootstrap import init_data_dir
from controller.fleet.lineage import Lineage, reconcile
from controller.store import Store

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
OLDER = "this data dir is older than the fleet's"
FOREIGN = "this data dir is not the fleet's"


def _lineage(data_dir: DataDir) -> Lineage:
    keys = signing.load_signing_keys(data_dir)
    trusted = carotation.load(data_dir).trusted
    return lineage.of_data_dir(data_dir, trusted, keys.known_ids, keys.current_id)


def _copy(data_dir: DataDir, to: Path) -> DataDir:
    shutil.copytree(data_dir.path, to, ignore=shutil.ignore_patterns("controller.db*"))
    return DataDir(to)


@pytest.fixture
def first(tmp_path: Path) -> DataDir:
    return init_data_dir(tmp_path / "a", "localhost", "127.0.0.1:7443")


def test_a_first_replica_is_recorded_and_its_copies_are_the_fleet(first, tmp_path):
    fleet = reconcile(None, _lineage(first))
    assert fleet == _lineage(first)
    assert {mark.split(":")[0] for mark in fleet.current} == {"ca", "key"}
    assert reconcile(fleet, _lineage(_copy(first, tmp_path / "b"))) == fleet


def test_a_replica_of_its_own_init_is_refused(first, tmp_path):
    fleet = reconcile(None, _lineage(first))
    other = init_data_dir(tmp_path / "b", "localhost", "127.0.0.1:7443")
    with pytest.raises(DataDirError, match=FOREIGN) as refused:
        reconcile(fleet, _lineage(other))
    assert "not a `controller init` of its own" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("revoke", [False, True])
def test_a_key_rotation_moves_the_fleet_on_and_leaves_old_copies_behind(
    first, tmp_path, revoke
):  # fmt: skip
    stale = _copy(first, tmp_path / "b")
    fleet = reconcile(None, _lineage(first))
    old, new = signing.rotate(first, NOW, revoke_old=revoke)

    rotated = reconcile(fleet, _lineage(first))
    (ca,) = (mark[3:19] for mark in fleet.current if mark.startswith("ca:"))
    assert rotated.current == (fleet.current - {f"key:{old}"}) | {f"key:{new}"}
    assert f"key:{old}" in rotated.known
    with pytest.raises(DataDirError, match=OLDER) as refused:
        reconcile(rotated, _lineage(stale))
    assert f"it has CA {ca}, signing key {old}, the fleet has CA {ca}, signing key {new} (" in (
        str(refused.value)
    )
    assert "copy the data dir again from that replica" in str(refused.value)
    # Copied again, it serves.
    assert reconcile(rotated, _lineage(_copy(first, tmp_path / "c"))) == rotated


def test_a_ca_rotation_and_its_retirement_move_the_fleet_on(first, tmp_path):
    fleet = reconcile(None, _lineage(first))
    stale = _copy(first, tmp_path / "b")
    carotation.rotate(first, NOW)
    rotating = reconcile(fleet, _lineage(first))
    assert len([m for m in rotating.current if m.startswith("ca:")]) == 2
    with pytest.raises(DataDirError, match=OLDER):
        reconcile(rotating, _lineage(stale))

    middle = _copy(first, tmp_path / "c")
    carotation.retire(first, NOW)
    retired = reconcile(rotating, _lineage(first))
    assert len([m for m in retired.current if m.startswith("ca:")]) == 1
    assert retired.current < rotating.current | retired.current
    for older in (stale, middle):
        with pytest.raises(DataDirError, match=OLDER):
            reconcile(retired, _lineage(older))


def test_rotations_that_diverge_are_refused(first, tmp_path):
    """Two replicas each rotating on their own copy: whichever starts
    second is not the fleet's any more."""
    second = _copy(first, tmp_path / "b")
    fleet = reconcile(None, _lineage(first))
    signing.rotate(first, NOW)
    signing.rotate(second, NOW)
    fleet = reconcile(fleet, _lineage(first))
    with pytest.raises(DataDirError, match=FOREIGN):
        reconcile(fleet, _lineage(second))


def test_what_the_fleet_retired_stays_known_whichever_replica_starts(first, tmp_path):
    """A replica copied after a rotation but before the retired key's file
    was pruned by hand still knows the older marks; a replica that lost
    them (the retired key files deleted) is still the fleet's: what the
    database knows is the union."""
    fleet = reconcile(None, _lineage(first))
    old, _ = signing.rotate(first, NOW)
    fleet = reconcile(fleet, _lineage(first))
    pruned = _copy(first, tmp_path / "b")
    (pruned.path / f"signing.key.{old}").unlink()
    pruned.signing_rotations.unlink()
    again = reconcile(fleet, _lineage(pruned))
    assert again.current == fleet.current
    assert f"key:{old}" in again.known


def test_a_damaged_retired_ca_is_one_clear_error(first):
    (first.path / "ca-retired-ab12.pem").write_text("not a certificate\n")
    with pytest.raises(DataDirError, match=r"ca-retired-ab12\.pem is not a PEM certificate"):
        _lineage(first)


def test_adopt_records_the_first_and_each_rotation_and_refuses_the_stale(first, tmp_path, caplog):
    stale = _copy(first, tmp_path / "b")
    store = Store.memory()
    try:
        with caplog.at_level(logging.DEBUG, "controller.fleet.lineage"):
            assert lineage.adopt(store, _lineage(first)) == store.recorded_lineage()
            signing.rotate(first, NOW)
            rotated = lineage.adopt(store, _lineage(first))
        assert store.recorded_lineage() == rotated == _lineage(first)
        with pytest.raises(DataDirError, match=OLDER):
            lineage.adopt(store, _lineage(stale))
        assert store.recorded_lineage() == rotated
    finally:
        store.close()
    # One controller on its own SQLite file: no other replicas to tell.
    (said,) = caplog.records
    assert said.getMessage().endswith(" recorded as the fleet's")
