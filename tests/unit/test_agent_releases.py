"""Publishing agent releases on the controller (controller.agentreleases,
controller.artifacts, the agent_releases table): every refusal, the
streaming upload, idempotent republishing, and reading an artifact back.
A real SQLite store and real files; no server."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.agentrelease import Family

from controller import audit
from controller.errors import AlreadyExists, FleetpatchError, NotFound, Refused, UsageError
from controller.releases import signed as release
from controller.releases.artifacts import ArtifactStore
from controller.releases.publishing import (
    CHUNK,
    MAX_SIZE,
    Header,
    Releases,
    check_header,
    version_of,
)
from controller.store import Store
from controller.store.thread import StoreThread

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEB = "fleetpatch-agent_0.2.0_amd64.deb"


@dataclass
class Made:
    header: Header
    data: bytes
    key: Ed25519PrivateKey


def make(
    data: bytes = b"agent package " * 1000,
    artifact: str = DEB,
    key: Ed25519PrivateKey | None = None,
) -> Made:
    """A release as `release sign` writes it, for one artifact (and another line)."""
    key = key or Ed25519PrivateKey.generate()
    manifest = release.manifest_text(
        {
            artifact: hashlib.sha256(data).hexdigest(),
            "fleetpatch-controller_0.2.0_amd64.deb": "0" * 64,
        }
    ).encode()
    return Made(Header(artifact, manifest, key.sign(manifest), len(data)), data, key)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Where artifacts go (the data dir's artifacts/)."""
    return tmp_path / "artifacts"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StoreThread]:
    thread = StoreThread(Store.open(tmp_path / "controller.db"))
    yield thread
    thread.close()


def releases(db: StoreThread, root: Path, key: Ed25519PrivateKey | None = None) -> Releases:
    return Releases(db, ArtifactStore(root), key.public_key() if key else None, lambda: NOW)


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def publish(r: Releases, made: Made, data: bytes | None = None) -> object:
    payload = made.data if data is None else data
    return asyncio.run(r.publish(made.header, chunks(payload), "admin:test"))


# -- the file name ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("artifact", "version"),
    [
        ("fleetpatch-agent_0.2.0_amd64.deb", "0.2.0"),
        ("fleetpatch-agent_1.2.0~rc1_arm64.deb", "1.2.0rc1"),
        ("fleetpatch-agent_1.2.0+post1_all.deb", "1.2.0.post1"),
        ("fleetpatch-agent_1.2.0~~dev3_amd64.deb", "1.2.0.dev3"),
        ("fleetpatch-agent-0.2.0-1.x86_64.rpm", "0.2.0"),
        ("fleetpatch-agent-1.2.0^post1-1.aarch64.rpm", "1.2.0.post1"),
    ],
)
def test_version_comes_from_the_package_name(artifact: str, version: str) -> None:
    family = Family.RPM if artifact.endswith(".rpm") else Family.DEB
    assert version_of(artifact) == (version, family)


@pytest.mark.parametrize(
    ("artifact", "words"),
    [
        ("fleetpatch-controller_0.2.0_amd64.deb", "is not an agent package name"),
        ("fleetpatch-agent_0.2.0_amd64.rpm", "is not an agent package name"),
        ("fleetpatch-agent-0.2.0+post1-1.x86_64.rpm", "is not the RPM version of a fleetpatch"),
        ("fleetpatch-agent_0.2.0.deb", "is not an agent package name"),
        ("../fleetpatch-agent_0.2.0_amd64.deb", "is not an agent package name"),
        ("fleetpatch-agent_0.2.0~dev1_amd64.deb", "is not the Debian version of a fleetpatch"),
        ("fleetpatch-agent_2:0.2.0_amd64.deb", "is not the Debian version of a fleetpatch"),
    ],
)
def test_other_names_are_refused(artifact: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        version_of(artifact)
    assert words in str(caught.value)


# -- the header -------------------------------------------------------------------


def test_header_checks_pass_and_name_the_manifest_digest() -> None:
    made = make()
    checked = check_header(made.header, made.key.public_key())
    assert checked.version == "0.2.0"
    assert checked.sha256 == hashlib.sha256(made.data).hexdigest()
    assert checked.fingerprint == release.fingerprint(made.key.public_key())
    assert check_header(made.header, None).fingerprint == ""


def _with(made: Made, **changes: Any) -> Header:
    return dataclasses.replace(made.header, **changes)


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"size": MAX_SIZE + 1}, UsageError, "more than the 256 MiB"),
        ({"size": 0}, UsageError, "is empty"),
        ({"signature": b""}, UsageError, "not a raw 64-byte Ed25519 signature"),
        ({"manifest": b"not a manifest\n"}, UsageError, "line 1 is not a SHA256SUMS line"),
        ({"manifest": b"\xff\xfe\n"}, UsageError, "is not text"),
        ({"artifact": "fleetpatch-agent_0.3.0_amd64.deb"}, UsageError, "has no line for"),
        ({"artifact": "agent.deb"}, UsageError, "is not an agent package name"),
    ],
)
def test_header_refusals(changes: dict[str, Any], error: type, words: str) -> None:
    made = make()
    header = _with(made, **changes)
    if "manifest" in changes:
        header = _with(made, **changes, signature=made.key.sign(changes["manifest"]))
    with pytest.raises(error) as caught:
        check_header(header, None)
    assert words in str(caught.value)


def test_a_configured_key_refuses_what_it_did_not_sign() -> None:
    made = make()
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(Refused, match="is not signed by release key SHA256:"):
        check_header(made.header, other)
    changed = _with(made, manifest=made.header.manifest.replace(b"0000", b"1111", 1))
    with pytest.raises(Refused, match="not signed"):
        check_header(changed, made.key.public_key())


# -- publishing ---------------------------------------------------------------------


def test_publish_stores_the_artifact_by_digest_and_the_row(db: StoreThread, root: Path) -> None:
    made = make()
    r = releases(db, root, made.key)
    published = publish(r, made)
    digest = hashlib.sha256(made.data).hexdigest()
    stored = root / digest
    assert stored.read_bytes() == made.data
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    assert [p.name for p in root.iterdir()] == [digest]  # no temp left
    (row,) = asyncio.run(r.list())
    assert row == published
    assert (row.version, row.artifact, row.sha256, row.size) == (
        "0.2.0",
        DEB,
        digest,
        len(made.data),
    )
    assert row.key_fingerprint == release.fingerprint(made.key.public_key())
    assert (row.manifest, row.signature) == (made.header.manifest, made.header.signature)
    assert (row.published_at, row.published_by) == (NOW, "admin:test")
    records = asyncio.run(db.call(lambda s: s.audit_records()))
    assert [(a.entry.action, a.entry.target, a.entry.outcome) for a in records] == [
        ("release.publish", "agent 0.2.0", "ok")
    ]


def test_republishing_the_same_package_is_a_no_op(db: StoreThread, root: Path) -> None:
    made = make()
    r = releases(db, root)
    first = publish(r, made)
    assert publish(r, made) == first
    assert len(asyncio.run(r.list())) == 1
    records = asyncio.run(db.call(lambda s: s.audit_records()))
    assert [a.entry.outcome for a in records] == ["ok", "unchanged"]
    assert audit.verify(records).ok


def test_the_same_version_with_another_package_conflicts(db: StoreThread, root: Path) -> None:
    r = releases(db, root)
    publish(r, make(b"one"))
    other = make(b"two")
    with pytest.raises(AlreadyExists, match=r"0\.2\.0 is already published with another package"):
        publish(r, other)
    assert len(list(root.iterdir())) == 1
    # The store refuses it too, when two publishes race past the early check.
    row = asyncio.run(r.list())[0]
    changed = dataclasses.replace(row, sha256="f" * 64)
    with pytest.raises(AlreadyExists):
        asyncio.run(
            db.call(lambda s: s.publish_release(changed, audit.AuditEntry(NOW, "a", "b", "c", "d")))
        )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"agent package " * 999, "bytes received, 14000 announced"),
        (b"agent package " * 1001, "more bytes than the 14000 announced"),
        (b"AGENT PACKAGE " * 1000, "do not match the release's SHA256SUMS"),
    ],
)
def test_bytes_that_differ_from_the_header_are_refused_and_leave_nothing(
    db: StoreThread, root: Path, data: bytes, words: str
) -> None:
    r = releases(db, root)
    with pytest.raises(UsageError) as caught:
        publish(r, make(), data)
    assert words in str(caught.value)
    assert list(root.iterdir()) == []
    assert asyncio.run(r.list()) == []


def test_a_wrong_key_refuses_before_any_byte_is_stored(db: StoreThread, root: Path) -> None:
    r = releases(db, root, Ed25519PrivateKey.generate())
    with pytest.raises(Refused):
        publish(r, make())
    assert not root.exists() or list(root.iterdir()) == []
    assert asyncio.run(r.list()) == []


def test_a_broken_off_upload_is_swept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    upload = store.upload()
    upload.write(b"half")
    store.sweep()
    assert list(tmp_path.iterdir()) == []


# -- reading back --------------------------------------------------------------------


async def _read_all(r: Releases, digest: bytes) -> list[bytes]:
    found = await r.find(digest)
    return [chunk async for chunk in r.read(found)]


def test_find_and_read_a_published_artifact_in_chunks(db: StoreThread, root: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 3)  # two chunks and a bit
    made = make(data)
    r = releases(db, root)
    publish(r, made)
    got = asyncio.run(_read_all(r, hashlib.sha256(data).digest()))
    assert [len(c) for c in got] == [CHUNK, CHUNK, 768]
    assert b"".join(got) == data


def test_find_refuses_unknown_and_malformed_digests(db: StoreThread, root: Path) -> None:
    r = releases(db, root)
    with pytest.raises(NotFound, match="no published artifact has sha256"):
        asyncio.run(r.find(hashlib.sha256(b"x").digest()))
    with pytest.raises(UsageError, match="32 bytes, not 3"):
        asyncio.run(r.find(b"abc"))


def test_a_damaged_artifact_is_an_error_not_wrong_bytes(db: StoreThread, root: Path) -> None:
    made = make()
    r = releases(db, root)
    publish(r, made)
    digest = hashlib.sha256(made.data)
    (root / digest.hexdigest()).write_bytes(b"short")
    with pytest.raises(FleetpatchError, match="damaged"):
        asyncio.run(_read_all(r, digest.digest()))
    (root / digest.hexdigest()).unlink()
    with pytest.raises(FleetpatchError, match="cannot be read"):
        asyncio.run(_read_all(r, digest.digest()))
