"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controller import Controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    """A real controller on loopback (real TLS, real SQLite), stopped after."""
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    ctl.start()
    yield ctl
    ctl.stop()
