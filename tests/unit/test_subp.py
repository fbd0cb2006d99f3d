"""agent.subp: the one way the agent runs a command."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends.subp import BASE_ENV, Result, run
from agent.errors import AgentError, CommandFailed


def test_argv_is_passed_as_is_without_a_shell():
    result = run(["printf", "%s\\n", "a b", "$HOME", "*", "; echo injected"])
    assert result == Result(
        ["printf", "%s\\n", "a b", "$HOME", "*", "; echo injected"],
        0,
        "a b\n$HOME\n*\n; echo injected\n",
        "",
    )


def test_stderr_is_captured_separately():
    result = run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_non_zero_exit_raises_with_what_a_person_needs():
    argv = ["sh", "-c", "echo partial; echo first >&2; echo 'E: the real reason' >&2; exit 3"]
    with pytest.raises(CommandFailed) as caught:
        run(argv)
    failure = caught.value
    assert failure.argv == argv
    assert failure.returncode == 3
    assert failure.stdout == "partial\n"
    assert failure.stderr == "first\nE: the real reason\n"
    assert str(failure) == "sh exited with 3: E: the real reason"
    assert isinstance(failure, AgentError)


def test_non_zero_exit_without_stderr():
    with pytest.raises(CommandFailed, match=r"^false exited with 1$"):
        run(["false"])


def test_check_false_returns_the_failure():
    result = run(["sh", "-c", "exit 4"], check=False)
    assert result.returncode == 4


@pytest.mark.parametrize("name", ["fleetpatch-no-such-command", "/nonexistent/bin/tool"])
def test_missing_binary(name):
    with pytest.raises(CommandFailed, match=f"^{name} is not installed$") as caught:
        run([name, "--version"])
    assert caught.value.returncode is None
    assert caught.value.argv == [name, "--version"]


def test_timeout_kills_the_command():
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"^sleep timed out after") as caught:
        run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 5
    assert caught.value.returncode is None


def test_timeout_keeps_the_output_so_far():
    with pytest.raises(CommandFailed, match="timed out after 1s") as caught:
        run(["sh", "-c", "echo started; echo warming >&2; exec sleep 30"], timeout=1)
    assert caught.value.stdout == "started\n"
    assert caught.value.stderr == "warming\n"
    assert str(caught.value) == "sh timed out after 1s: warming"


@pytest.fixture
def stdin_is_an_open_pipe() -> Iterator[None]:
    """Make our fd 0 a pipe nobody writes to: a child that inherits it waits forever.

    (Under pytest fd 0 is usually /dev/null, which would hide an inherited stdin.)
    """
    saved = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


@pytest.mark.usefixtures("stdin_is_an_open_pipe")
def test_stdin_is_closed():
    started = time.monotonic()
    result = run(["cat"], timeout=3)
    assert result.stdout == ""
    assert time.monotonic() - started < 2


def test_environment_is_explicit_and_minimal(monkeypatch):
    monkeypatch.setenv("FLEETPATCH_TEST_LEAK", "secret")
    lines = set(run(["env"]).stdout.splitlines())
    assert not any(line.startswith("FLEETPATCH_TEST_LEAK=") for line in lines)
    assert lines == {f"{k}={v}" for k, v in BASE_ENV.items()}


def test_environment_can_be_extended_and_overridden():
    lines = set(
        run(["env"], env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}).stdout.split()
    )
    assert "DEBIAN_FRONTEND=noninteractive" in lines
    assert "LC_ALL=C" in lines
    assert f"PATH={BASE_ENV['PATH']}" in lines


def test_undecodable_output_is_replaced_not_fatal():
    assert run(["printf", "ok\\377"]).stdout == "ok\ufffd"


def test_not_executable_raises_command_failed(tmp_path: Path):
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(CommandFailed, match="tool"):
        run([str(script)])
