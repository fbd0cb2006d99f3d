"""Artifacts (published agent packages) as files named by their SHA-256:
``DATA_DIR/artifacts/<sha256 hex>``, mode 0644.

An upload streams into a hidden temp file in that directory while it is
hashed, so a package is never held in memory; only a complete, checked
upload is fsynced and renamed into place (then the directory is fsynced),
so a crash leaves either no artifact or the whole one. Every method here
blocks: callers on the event loop run them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

_HEX = re.compile(r"^[0-9a-f]{64}$")
MODE = 0o644


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the artifact with this digest (hex) lives."""
        if not _HEX.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a SHA-256 hex digest")
        return self.root / sha256

    def upload(self) -> Upload:
        """A new upload into a temp file beside the artifacts."""
        self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-", suffix=".tmp")
        try:
            os.fchmod(fd, MODE)
            handle = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        return Upload(self, Path(tmp), handle)

    def sweep(self) -> None:
        """Remove uploads a crash broke off (at start, before any upload)."""
        if self.root.is_dir():
            for stale in self.root.glob(".upload-*.tmp"):
                stale.unlink(missing_ok=True)

    def open(self, sha256: str) -> BinaryIO:
        """The artifact for reading; OSError when it is not there."""
        return self.path(sha256).open("rb")


class Upload:
    """Bytes on their way into the store, hashed as they are written."""

    def __init__(self, store: ArtifactStore, tmp: Path, handle: BinaryIO) -> None:
        self._store = store
        self._tmp = tmp
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._digest.update(data)
        self._handle.write(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self) -> Path:
        """Make the upload the artifact named by its digest, durably."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        final = self._store.path(self.sha256)
        os.replace(self._tmp, final)
        dir_fd = os.open(self._store.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def discard(self) -> None:
        """Drop an upload that was refused or broken off (idempotent)."""
        if not self._handle.closed:
            self._handle.close()
        self._tmp.unlink(missing_ok=True)
