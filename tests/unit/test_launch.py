"""fleetpatch.launch: Ctrl-C while a console script loads its program, or
past the program's own handling, is one line and exit 130."""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import entry_points

import pytest
from fleetpatch.launch import INTERRUPTED_EXIT, launch


def _interrupted(*args: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_during_the_import_is_one_line_and_exit_130(monkeypatch, capsys):
    monkeypatch.setattr("importlib.import_module", _interrupted)
    with pytest.raises(SystemExit) as exited:
        launch("controller.cli.main")
    assert exited.value.code == INTERRUPTED_EXIT == 130
    assert capsys.readouterr().err == "aborted\n"


def test_the_program_runs_and_its_own_exit_is_kept(monkeypatch, capsys):
    ran: list[str] = []
    program = types.ModuleType("fake_program")

    def main() -> None:
        ran.append("main")
        sys.exit(3)

    program.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_program", program)
    with pytest.raises(SystemExit) as exited:
        launch("fake_program")
    assert (ran, exited.value.code) == (["main"], 3)
    program.main = _interrupted  # type: ignore[attr-defined]
    with pytest.raises(SystemExit) as exited:
        launch("fake_program")
    assert exited.value.code == 130
    assert capsys.readouterr().err == "aborted\n"


SCRIPTS = {"fleetpatch": "controller.cli.main", "fleetpatch-agent": "agent.daemon",
           "fleetpatch-sim": "simulator.cli"}  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_loads_its_program_under_the_guard(script, monkeypatch, capsys):
    """The installed entry point of each console script, called with its
    program's import interrupted: exit 130, one line."""
    (entry,) = (e for e in entry_points(group="console_scripts") if e.name == script)
    # The program imported already (as by other tests): its module must not
    # shadow the entry point (controller.cli.main, the submodule, once did).
    importlib.import_module(SCRIPTS[script])
    imported: list[str] = []

    def interrupted(module: str) -> None:
        imported.append(module)
        raise KeyboardInterrupt

    monkeypatch.setattr("importlib.import_module", interrupted)
    with pytest.raises(SystemExit) as exited:
        entry.load()()
    assert (imported, exited.value.code) == ([SCRIPTS[script]], 130)
    assert capsys.readouterr().err == "aborted\n"
