"""benchmarks.load_ab refuses bad options in one line, exit 2, before it
starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_ab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.load_ab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--rev", "no-such-revision-here"],
            "--rev no-such-revision-here: fatal: invalid reference",
        ),
        (["--rounds", "0"], "--rounds, --seconds, --agents and --processes must be >= 1"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = _load_ab(*args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr.strip().splitlines()[-1]  # one line (after argparse's usage)
    assert "Traceback" not in done.stderr
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert "fleetpatch-ab-" not in listed  # no worktree left behind
