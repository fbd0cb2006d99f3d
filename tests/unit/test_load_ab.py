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


def test_a_revision_runs_its_own_code_not_the_working_trees(tmp_path: Path) -> None:
    # Started from the working tree, `python -c` would put it ahead of
    # PYTHONPATH: every --rev would then have measured the working tree.
    from benchmarks.load_ab import python_in

    for package in ("controller", "proto/fleetpatch"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    spec = python_in(
        tmp_path, "import controller, fleetpatch; print(controller.__file__, fleetpatch.__file__)"
    )
    done = subprocess.run(**spec, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == [
        str(tmp_path / "controller" / "__init__.py"),
        str(tmp_path / "proto" / "fleetpatch" / "__init__.py"),
    ]
