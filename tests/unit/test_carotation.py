"""The CA rotation's two steps on a real data dir (controller.fleet.carotation):
what each writes, what it refuses, and an interrupted retire finished by
running it again."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from fleetpatch import catrust

from controller.datadir import DataDir
from controller.errors import Conflict
from controller.fleet import carotation
from controller.fleet.bootstrap import init_data_dir
from controller.store import Store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    return init_data_dir(tmp_path / "ctl", "localhost", "127.0.0.1:7443")


def test_rotate_then_retire(data_dir: DataDir) -> None:
    old = _cert(data_dir.ca_cert)
    with pytest.raises(Conflict, match="no CA rotation in progress"):
        carotation.retire(data_dir, NOW)
    assert not carotation.load(data_dir).rotating

    new = carotation.rotate(data_dir, NOW)
    assert data_dir.ca_next_key.stat().st_mode & 0o777 == 0o600
    endorsement = _cert(data_dir.ca_endorsement)
    assert catrust.issued_by_any(endorsement, [old])
    assert catrust.accept([old], [old, new], [endorsement], _cert(data_dir.admin_cert)) == [
        old, new,
    ]  # fmt: skip
    found = carotation.load(data_dir)
    assert found.rotating
    assert (found.current.cert, found.issuing.cert) == (old, new)
    with pytest.raises(Conflict, match="in progress already"):
        carotation.rotate(data_dir, NOW)

    retired = carotation.retire(data_dir, NOW)
    assert (retired.old_serial, retired.stragglers) == (format(old.serial_number, "x"), [])
    assert _cert(data_dir.ca_cert) == new
    assert not data_dir.ca_next_cert.exists()
    assert _cert(data_dir.ca_retired(retired.old_serial, "pem")) == old
    assert data_dir.ca_retired(retired.old_serial, "key").stat().st_mode & 0o777 == 0o600
    server = _cert(data_dir.server_cert)
    assert catrust.issued_by_any(server, [new])
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    admin = _cert(data_dir.admin_cert)
    assert catrust.issued_by_any(admin, [new])
    store = Store.open(data_dir.database)
    try:
        assert store.admin_for_certificate("admin", format(admin.serial_number, "x")) is not None
        actions = [r.entry.action for r in store.audit_page(0, 100)]
    finally:
        store.close()
    assert actions == ["admin.add", "ca.rotate", "admin.renew", "ca.retire"]
    assert not carotation.load(data_dir).rotating


def test_an_interrupted_retire_is_finished_by_running_it_again(data_dir: DataDir) -> None:
    new = carotation.rotate(data_dir, NOW)
    # As if it stopped after the new CA became ca.pem, before ca-next went.
    shutil.copy(data_dir.ca_next_cert, data_dir.ca_cert)
    shutil.copy(data_dir.ca_next_key, data_dir.ca_key)
    carotation.retire(data_dir, NOW)
    assert not data_dir.ca_next_cert.exists()
    assert not data_dir.ca_endorsement.exists()
    assert _cert(data_dir.ca_cert) == new
