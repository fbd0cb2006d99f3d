"""benchmarks.push refuses bad options in one line, exit 2, and a load
that fails before its agents are enrolled ends the benchmark at once with
the load's own error line (it waited ten minutes for them before)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.push import Load
from tests.support.benchruns import run_benchmark


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--streams", "0"], "argument --streams: 0 is not a whole number of at least 1"),
        (["--busy", "-1"], "argument --busy: -1 is not a whole number of at least 1"),
        (["--seconds", "0"], "argument --seconds: 0 is not a number of seconds of at least 1"),
        (["--ramp", "-1"], "argument --ramp: -1 is not a number of seconds of at least 0"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = run_benchmark("push", *args)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # one line after argparse's usage
    assert last.endswith(said)
    assert "Traceback" not in done.stderr


def test_a_load_that_fails_before_enrolling_is_reported_at_once(tmp_path: Path) -> None:
    load = Load(tmp_path / "no-such-data-dir", 10)
    started = time.monotonic()
    with pytest.raises(SystemExit) as failed:
        load.wait_enrolled(timeout=120)
    assert time.monotonic() - started < 30  # not the timeout
    said = str(failed.value.code)
    assert said.startswith("the load did not enroll its agents: fleetpatch-sim: error: data dir ")
    assert "no-such-data-dir does not exist" in said
    assert "\n" not in said
