"""End-to-end tests need root and namespaces; they skip with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.debrepo import debrepo_available
from tests.support.sandbox import sandbox_available

from .harness import E2EFleet


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[E2EFleet]:
    reason = sandbox_available() or debrepo_available()
    if reason is not None:
        pytest.skip(reason)
    built = E2EFleet(tmp_path)
    try:
        yield built
    finally:
        built.close()
