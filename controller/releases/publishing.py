"""Agent releases on the controller: publishing a signed agent package, and
handing its bytes to hosts.

    fleetpatch release publish PKG   AdminService.PublishAgentRelease -> Releases.publish
    fleetpatch release list          AdminService.ListAgentReleases   -> Releases.list
    an agent-update order's package  AgentService.FetchArtifact       -> Releases.find, read

A release is published from the header (the package's file name, the
release's SHA256SUMS and SHA256SUMS.sig, the size) and the package's bytes.
It is refused (UsageError) unless the name is an agent package's
(fleetpatch.agentrelease: ``fleetpatch-agent_<debian version>_<arch>.deb``
for apt hosts, ``fleetpatch-agent-<rpm version>-<release>.<arch>.rpm`` for
dnf hosts) with a version we package, the manifest lists it, and the
bytes received are exactly as many as announced (at most MAX_SIZE) with
the digest the manifest gives. With ``[releases] public_key`` set, the
manifest must be signed by that key (else Refused). The bytes stream to a
temp file while they are hashed; only a checked package becomes an
artifact (controller.artifacts). A version's package of each family is
published once: again with the same package is a no-op, with another one
AlreadyExists. One release (one signed SHA256SUMS listing both) is
published as two packages, one call each.

The controller checking the signature is a convenience (an operator's
mistake is caught at publish time, not on every host); what protects hosts
is that each checks the release against the key pinned on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fleetpatch.agentrelease import Family, parse_artifact

from controller.audit import AuditEntry
from controller.datadir import DataDir
from controller.errors import AlreadyExists, FleetpatchError, NotFound, Refused, UsageError
from controller.model import AgentRelease
from controller.releases import signed as release
from controller.releases.artifacts import ArtifactStore
from controller.store.releases import conflict
from controller.store.thread import StoreThread

log = logging.getLogger(__name__)

MAX_SIZE = 256 * 1024 * 1024
CHUNK = 1024 * 1024
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class Header:
    """What precedes a package's bytes (PublishAgentReleaseHeader)."""

    artifact: str
    manifest: bytes
    signature: bytes
    size: int


@dataclass(frozen=True)
class Checked:
    """A header that passed: the release's version, the package's family,
    the digest its manifest gives the package (hex), and the key that
    signed it ("" when none was asked for)."""

    version: str
    sha256: str
    fingerprint: str
    family: Family = Family.DEB


def version_of(artifact: str) -> tuple[str, Family]:
    """The PEP 440 version an agent package's file name carries, and its
    family; UsageError for any other name."""
    try:
        found = parse_artifact(artifact)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return found.version, found.family


def check_header(header: Header, key: Ed25519PublicKey | None) -> Checked:
    """Everything about a release that can be checked before its bytes;
    raises UsageError, or Refused for a signature ``key`` did not make."""
    version, family = version_of(header.artifact)
    if header.size <= 0:
        raise UsageError(f"{header.artifact}: the package is empty")
    if header.size > MAX_SIZE:
        raise UsageError(
            f"{header.artifact}: {header.size} bytes is more than the {MAX_SIZE // 2**20} MiB "
            "an agent package may have"
        )
    if len(header.signature) != SIGNATURE_SIZE:
        raise UsageError(
            f"{release.SIGNATURE} is not a raw {SIGNATURE_SIZE}-byte Ed25519 signature "
            f"({len(header.signature)} bytes): is the release signed?"
        )
    fingerprint = ""
    if key is not None:
        fingerprint = release.fingerprint(key)
        if not release.is_signed_by(header.manifest, header.signature, key):
            raise Refused(
                f"the release's {release.MANIFEST} is not signed by release key {fingerprint} "
                "(the controller's [releases] public_key): signed by another key, or changed"
            )
    try:
        entries = release.parse_manifest(header.manifest.decode(), Path(release.MANIFEST))
    except UnicodeDecodeError:
        raise UsageError(f"the release's {release.MANIFEST} is not text") from None
    except Refused as exc:  # malformed: bad input here, not a verification
        raise UsageError(str(exc)) from None
    if header.artifact not in entries:
        raise UsageError(f"the release's {release.MANIFEST} has no line for {header.artifact}")
    return Checked(version, entries[header.artifact], fingerprint, family)


def load_release_key(data_dir: DataDir, path: Path | None) -> Ed25519PublicKey | None:
    """The ``[releases] public_key`` of controller.toml, if set; UsageError
    naming the setting when it cannot be used."""
    if path is None:
        return None
    try:
        return release.load_public_key(path)
    except UsageError as exc:
        raise UsageError(f"{data_dir.config}: releases.public_key: {exc}") from None


class Releases:
    def __init__(
        self,
        db: StoreThread,
        artifacts: ArtifactStore,
        key: Ed25519PublicKey | None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._key = key
        self._clock = clock or (lambda: datetime.now(UTC))

    async def publish(
        self, header: Header, chunks: AsyncIterator[bytes], actor: str
    ) -> AgentRelease:
        checked = check_header(header, self._key)
        known = await self._db.call(lambda s: s.get_release(checked.version, checked.family))
        if known is not None and known.sha256 != checked.sha256:
            raise conflict(checked.version, checked.family, known.sha256, checked.sha256)
        upload = await asyncio.to_thread(self._artifacts.upload)
        try:
            async for data in chunks:
                if upload.size + len(data) > header.size:
                    raise UsageError(
                        f"{header.artifact}: more bytes than the {header.size} announced"
                    )
                await asyncio.to_thread(upload.write, data)
            if upload.size != header.size:
                raise UsageError(
                    f"{header.artifact}: {upload.size} bytes received, {header.size} announced"
                )
            if upload.sha256 != checked.sha256:
                raise UsageError(
                    f"{header.artifact}: the bytes received (sha256 {upload.sha256[:16]}...) do "
                    f"not match the release's {release.MANIFEST} ({checked.sha256[:16]}...)"
                )
            await asyncio.to_thread(upload.commit)
        except BaseException:
            upload.discard()  # cheap, and safe to run even while being cancelled
            raise
        now = self._clock()
        published = AgentRelease(
            version=checked.version,
            family=checked.family,
            artifact=header.artifact,
            sha256=checked.sha256,
            size=header.size,
            key_fingerprint=checked.fingerprint,
            published_at=now,
            published_by=actor,
            manifest=header.manifest,
            signature=header.signature,
        )
        entry = AuditEntry(
            now, actor, "release.publish", f"agent {checked.version}", "ok",
            f"{header.artifact} sha256 {checked.sha256} size {header.size} "
            f"key {checked.fingerprint or 'none'}",
        )  # fmt: skip
        try:
            stored, new = await self._db.call(lambda s: s.publish_release(published, entry))
        except AlreadyExists:
            await self._drop_unused(checked.sha256)  # lost a race with another publish
            raise
        log.info("%s %s agent release %s (%s, sha256 %s)", actor,
                 "published" if new else "republished (unchanged)", stored.version,
                 stored.artifact, stored.sha256)  # fmt: skip
        return stored

    async def _drop_unused(self, sha256: str) -> None:
        if await self._db.call(lambda s: s.release_by_digest(sha256)) is None:
            await asyncio.to_thread(self._artifacts.path(sha256).unlink, missing_ok=True)

    async def list(self) -> list[AgentRelease]:
        return await self._db.call(lambda s: s.list_releases())

    async def find(self, sha256: bytes) -> AgentRelease:
        """The published release whose package has this digest (32 bytes)."""
        if len(sha256) != 32:
            raise UsageError(f"a SHA-256 digest has 32 bytes, not {len(sha256)}")
        digest = sha256.hex()
        found = await self._db.call(lambda s: s.release_by_digest(digest))
        if found is None:
            raise NotFound(f"no published artifact has sha256 {digest}")
        return found

    async def read(self, published: AgentRelease) -> AsyncGenerator[bytes, None]:
        """The package's bytes in chunks of at most CHUNK, each read in a
        thread so that the event loop never waits for the disk."""
        try:
            handle = await asyncio.to_thread(self._artifacts.open, published.sha256)
        except OSError as exc:
            log.error("artifact of agent release %s unreadable: %s", published.version, exc)
            raise FleetpatchError(
                f"the package of agent release {published.version} cannot be read on the "
                f"controller: {exc.strerror}"
            ) from None
        try:
            if os.fstat(handle.fileno()).st_size != published.size:
                log.error("artifact of agent release %s has the wrong size", published.version)
                raise FleetpatchError(
                    f"the package of agent release {published.version} is damaged on the "
                    "controller (wrong size)"
                )
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()
