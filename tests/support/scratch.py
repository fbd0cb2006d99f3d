"""Scratch directories that live as long as the test process: made once,
shared by what that process runs, removed when it exits."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def until_exit(prefix: str, parent: str | Path | None = None) -> Path:
    """A new directory (in ``parent``, else the temp dir), removed with
    everything in it when this process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
