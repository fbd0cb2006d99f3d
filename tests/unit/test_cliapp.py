"""What the three CLIs share (fleetpatch.cliapp): a float option refuses
nan and inf, Ctrl-C within a command is one line, exit 130, and output
that cannot be written is exit 0 (the reader left) or one line."""

from __future__ import annotations

import errno
import io
import os
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


# -- output that cannot be written ---------------------------------------------------


class _Failing(io.StringIO):
    """A standard output whose writes fail with ``code`` (after ``after``
    characters have gone), as a pipe whose reader left or a full disk."""

    def __init__(self, code: int, buffered: bool) -> None:
        super().__init__()
        self._code, self._buffered = code, buffered

    def write(self, text: str) -> int:
        if not self._buffered:
            raise OSError(self._code, os.strerror(self._code))
        return super().write(text)

    def flush(self) -> None:
        if self.getvalue():
            raise OSError(self._code, os.strerror(self._code))


def _run_writing_to(monkeypatch, stdout: object, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(SystemExit) as exited:
        cliapp.run(_app(), prog_name="prog")
    assert sys.stdout is stdout, "run leaves standard output as it found it"
    return int(exited.value.code or 0), err.getvalue()


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv", [("wait",), ("--help",), ("wait", "--help")])
def test_a_reader_that_stops_reading_ends_the_command_quietly(monkeypatch, argv, buffered):
    # click took it for a silent exit 1 (`| true`, `| head`)
    assert _run_writing_to(monkeypatch, _Failing(errno.EPIPE, buffered), *argv) == (0, "")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv", [("wait",), ("--help",)])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(monkeypatch, argv, buffered, code):
    # was: the OSError's traceback
    assert _run_writing_to(monkeypatch, _Failing(code, buffered), *argv) == (
        1,
        f"prog: error: cannot write the output: {os.strerror(code)}\n",
    )


@pytest.mark.parametrize("argv", [("wait",), ("--help",)])
def test_a_closed_standard_output_is_one_line_when_written_to(monkeypatch, argv):
    # was: AttributeError: 'NoneType' object has no attribute 'write'
    # (and --help said nothing, exit 0)
    assert _run_writing_to(monkeypatch, None, *argv) == (
        1,
        "prog: error: cannot write the output: standard output is closed\n",
    )


def test_a_command_that_writes_nothing_runs_without_standard_output(monkeypatch):
    assert _run_writing_to(monkeypatch, None, "other") == (0, "")


def test_the_output_goes_out_before_what_the_command_says_after_it(monkeypatch):
    """Standard error writes out what standard output holds first: a full
    disk is said before the command's next words, not after them."""
    app = cliapp.new_app("A test app.")

    @app.command()
    def checkpoint() -> None:
        print("{}")
        print("checkpoint taken", file=sys.stderr)

    @app.command()
    def other() -> None:
        pass

    err = io.StringIO()
    monkeypatch.setattr(sys, "argv", ["prog", "checkpoint"])
    monkeypatch.setattr(sys, "stdout", _Failing(errno.ENOSPC, buffered=True))
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(SystemExit) as exited:
        cliapp.run(app, prog_name="prog")
    assert (exited.value.code, err.getvalue()) == (
        1,
        "prog: error: cannot write the output: No space left on device\n",
    )
