"""benchmarks.load_ab refuses bad options in one line, exit 2, before it
starts anything."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.benchruns import ROOT, run_benchmark


def _load_ab(*args: str) -> subprocess.CompletedProcess[str]:
    return run_benchmark("load_ab", *args, timeout=120)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--rev", "no-such-revision-here"],
            "benchmarks.load_ab: --rev no-such-revision-here:"
            " fatal: invalid reference: no-such-revision-here",
        ),
        (
            ["--rounds", "0"],
            "load_ab.py: error: argument --rounds: 0 is not a whole number of at least 1",
        ),
        (
            ["--seconds", "nan"],
            "load_ab.py: error: argument --seconds: nan is not a number of seconds of at least 1",
        ),
        (
            ["--concurrency", "-5"],
            "load_ab.py: error: argument --concurrency: -5 is not a whole number of at least 0",
        ),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = _load_ab(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == said  # one line (after argparse's usage)
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


def test_thread_cpu_is_split_by_thread_and_shown_per_check_in() -> None:
    from benchmarks.load_ab import per_checkin, thread_cpu

    spun, done = threading.Event(), threading.Event()

    def spin() -> None:
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass
        spun.set()
        done.wait(timeout=30)  # alive: an ended thread leaves /proc/PID/task

    before = thread_cpu(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    assert spun.wait(timeout=30)
    after = thread_cpu(os.getpid())
    done.set()
    worker.join()
    assert set(before) <= set(after)
    assert "main" in after
    grown = {name: after[name] - before.get(name, 0.0) for name in after}
    assert sum(grown.values()) >= 0.25  # the worker's CPU is counted, under its name
    # Shares of the process's CPU per check-in, the largest first.
    shown = per_checkin({"main": 1.0}, {"main": 4.0, "store": 1.0}, 0.8)
    assert shown == "main 0.600, store 0.200"


def test_each_revision_keeps_the_store_url_and_its_own_defaults_for_the_rest(
    tmp_path: Path,
) -> None:
    # --store postgresql: every revision must run on the cluster the
    # agents were enrolled in, and nothing else of the working tree's
    # template may reach an older revision (an unknown key to it).
    import tomllib

    from benchmarks.checkin_load import init_controller, set_store
    from benchmarks.load_ab import own_defaults
    from controller.datadir import DataDir

    url = "postgresql:///fleetpatch?host=/tmp/fp-pg-x"
    init_controller(tmp_path, 5999)
    set_store(tmp_path, url)
    own_defaults(tmp_path)
    kept = tomllib.loads((tmp_path / "controller.toml").read_text())
    assert kept["store"] == {"url": url}
    assert set(kept) == {"server", "checkin", "store"}
    assert set(kept["checkin"]) == {"interval", "jitter"}
    assert DataDir(tmp_path).settings().store_url == url

    sqlite = tmp_path / "sqlite"
    init_controller(sqlite, 5998)
    own_defaults(sqlite)
    assert "store" not in tomllib.loads((sqlite / "controller.toml").read_text())


def test_the_summary_gives_each_controller_against_the_bare_server_by_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.load_ab import Variant, summary

    ours = Variant(".", ROOT, [(1500.0, 0.70), (1700.0, 0.60)])
    bare = Variant("bare", None, [(2000.0, 0.45), (2000.0, 0.44)])
    summary([ours, bare])
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].split() == [".", "80", "%", "of", "the", "bare", "server", "(75,", "85",
                                   "%", "by", "round)"]  # fmt: skip
    assert "125 %" in printed[2]  # the bare server against the first variant, as before

    summary([ours])  # no bare server: no such line
    assert "bare server" not in capsys.readouterr().out
