"""benchmarks.load refuses bad options in one line, exit 2, before it
starts a controller, and says which rule was broken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--replicas", "0"], "--replicas must be >= 1"),
        (["--replicas", "2"], "--replicas N > 1 needs --store postgresql"),
        (["--agents", "0"], "--agents, --processes and --seconds must be >= 1"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.load", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert said in done.stderr.strip().splitlines()[-1]  # one line after argparse's usage
    assert "Traceback" not in done.stderr
