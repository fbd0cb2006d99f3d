"""benchmarks.load refuses bad options in one line, exit 2, before it
starts a controller, and says which rule was broken."""

from __future__ import annotations

import pytest

from tests.support.benchruns import run_benchmark


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--replicas", "0"],
            "load.py: error: argument --replicas: 0 is not a whole number of at least 1",
        ),
        (
            ["--replicas", "2"],
            "load.py: error: --replicas N > 1 needs --store postgresql"
            " (replicas share one database)",
        ),
        (
            ["--agents", "0"],
            "load.py: error: argument --agents: 0 is not a whole number from 1 to 1000000",
        ),
        (
            ["--processes", "257"],
            "load.py: error: argument --processes: 257 is not a whole number from 1 to 256",
        ),
        (
            ["--ramp", "-1"],
            "load.py: error: argument --ramp: -1 is not a number of seconds of at least 0",
        ),
        (
            ["--concurrency", "-1"],
            "load.py: error: argument --concurrency: -1 is not a whole number of at least 0",
        ),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = run_benchmark("load", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == said  # one line after argparse's usage
    assert "Traceback" not in done.stderr
