"""agent.daemon: the service's `run` command line starts the daemon without
the CLI framework, and means what the full CLI's `run` means."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from agent import cli, daemon
from agent.statedir import DEFAULT_STATE_DIR

ENV = {"FLEETPATCH_AGENT_STATE_DIR": "/srv/agent"}


def _run_command() -> click.Command:
    group = typer.main.get_command(cli.app)
    assert isinstance(group, click.Group)
    return group.commands["run"]


def test_the_fast_path_knows_exactly_the_options_of_the_cli_run():
    params = _run_command().params
    options = {opt for p in params for opt in p.opts if opt != "--help"}
    assert options == set(daemon.FLAGS) | {daemon.STATE_DIR_OPTION}
    (state_dir,) = [p for p in params if daemon.STATE_DIR_OPTION in p.opts]
    assert state_dir.envvar == daemon.STATE_DIR_ENV
    assert state_dir.default == DEFAULT_STATE_DIR
    flags = {opt: p.name for p in params for opt in p.opts if opt in daemon.FLAGS}
    assert flags == daemon.FLAGS


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], daemon.RunArgs(Path("/srv/agent"))),
        (["run", "--once"], daemon.RunArgs(Path("/srv/agent"), once=True)),
        (["run", "-v", "--state-dir", "/x"], daemon.RunArgs(Path("/x"), verbose=True)),
        (["run", "--state-dir=/y", "--verbose", "--once"], daemon.RunArgs(Path("/y"), True, True)),
    ],
)
def test_plain_run_command_lines(argv, expected):
    assert daemon.parse_run(argv, ENV) == expected


def test_without_the_environment_the_default_state_dir():
    assert daemon.parse_run(["run"], {}) == daemon.RunArgs(DEFAULT_STATE_DIR)


@pytest.mark.parametrize(
    "argv",
    [
        [], ["status"], ["run", "--help"], ["run", "-h"], ["run", "--onse"],
        ["run", "--state-dir"], ["run", "--state-dir", "--once"], ["run", "--state-dir="],
        ["run", "--once", "--once"], ["run", "extra"], ["--help"], ["enroll", "run"],
    ],
)  # fmt: skip
def test_anything_else_goes_to_the_full_cli(argv):
    assert daemon.parse_run(argv, ENV) is None


def test_the_daemon_path_loads_no_cli_framework(tmp_path):
    """`fleetpatch-agent run` as the unit runs it, up to the first error (a
    state dir that is not enrolled): no typer, click or rich, no
    sqlite-utils, and it still says what is wrong in one line, exit 2."""
    code = (
        "import sys\n"
        f"sys.argv = ['fleetpatch-agent', 'run', '--state-dir', {str(tmp_path)!r}]\n"
        "import os; os.geteuid = lambda: 0\n"  # the root check is not what is measured
        "from agent import daemon\n"
        "try:\n    daemon.main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('typer', 'click', 'rich', 'sqlite_utils', 'dateutil', 'agent.cli'))\n"
        "print(code, heavy, 'agent.cli' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "2 [] False", done.stderr
    assert done.stderr.strip().startswith("fleetpatch-agent: error: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
