"""What the three CLIs share (fleetpatch.cliapp): a float option refuses
nan and inf, and Ctrl-C within a command is one line, exit 130."""

from __future__ import annotations

import sys
from typing import Annotated

import pytest
import typer
from fleetpatch import cliapp


def _app() -> typer.Typer:
    app = cliapp.new_app("A test app.")

    @app.command()
    def wait(
        seconds: Annotated[float, typer.Option(min=1, help="How long.")] = 1.0,
        share: Annotated[float, typer.Option(help="A share.")] = 0.5,
        interrupt: Annotated[bool, typer.Option("--interrupt")] = False,
    ) -> None:
        if interrupt:
            raise KeyboardInterrupt
        print(f"{seconds} {share}")

    @app.command()
    def other() -> None:
        pass

    return app


def _run(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    with pytest.raises(SystemExit) as exited:
        cliapp.run(_app(), prog_name="prog")
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
@pytest.mark.parametrize("option", ["--seconds", "--share"])
def test_a_float_option_refuses_what_is_not_a_finite_number(monkeypatch, capsys, option, value):
    code, out, err = _run(monkeypatch, capsys, "wait", option, value)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert f"invalid value for '{option}': " in err
    # -inf under a lower bound is out of its range first
    assert "is not a finite number" in err or (value == "-inf" and "not in the range" in err)


def test_a_float_option_keeps_its_range_and_takes_numbers(monkeypatch, capsys):
    assert _run(monkeypatch, capsys, "wait", "--seconds", "2.5", "--share", "-1") == (
        0,
        "2.5 -1.0\n",
        "",
    )
    code, _, err = _run(monkeypatch, capsys, "wait", "--seconds", "0.5")
    assert code == 2
    assert "0.5 is not in the range x>=1" in err
    code, out, _ = _run(monkeypatch, capsys, "wait", "--help")
    assert "x>=1" in out  # still shown in help


def test_ctrl_c_within_a_command_is_one_line_and_exit_130(monkeypatch, capsys):
    # typer would make it a silent exit 130
    assert _run(monkeypatch, capsys, "wait", "--interrupt") == (130, "", "aborted\n")
