"""`fleetpatch-agent` on a damaged state dir, a bad flag or a bad value: one
line naming the file or option and what to do, exit 2, never a traceback,
nothing half-done, and never a hang on a FIFO."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import cli
from agent.errors import ConfigError
from agent.orders.journal import Journal
from agent.statedir import SETTINGS_ENV, StateDir
from controller.api.limits import MAX_TEXT
from controller.fleet import tokens
from tests.unit.test_daemon import HOST_ID, _enrolled

RESTORE = "restore it from a backup, or enroll this host again into an empty state dir"


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the agent's full CLI in process: exit code, stdout, stderr."""
    old = sys.argv
    sys.argv = ["fleetpatch-agent", *map(str, argv)]
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def _error(err: str) -> str:
    """The one line of an error, without its prefix."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fleetpatch-agent: error: "), err
    return lines[0].removeprefix("fleetpatch-agent: error: ")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.delenv("FLEETPATCH_AGENT_STATE_DIR", raising=False)
    state = _enrolled(tmp_path / "state")
    journal = Journal.open(state.journal)
    now = datetime.now(UTC)
    journal.record_checkin("sha256:one", now + timedelta(minutes=5), now=now)
    journal.close()
    return state


def _meta(state: StateDir, key: str, value: str) -> None:
    conn = sqlite3.connect(state.journal)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.close()


# -- 1. values in the journal ----------------------------------------------------


def test_status_reads_an_enrolled_state_dir(state, capsys):
    code, out, err = _cli(capsys, "status", "--state-dir", state.path)
    assert code == 0, err
    assert HOST_ID in out
    assert "next check-in" in out


@pytest.mark.parametrize("json_out", [[], ["--json"]])
def test_status_on_a_damaged_journal_value_says_which_exit_2(state, capsys, json_out):
    _meta(state, "last_checkin_success", "garbage")
    code, out, err = _cli(capsys, "status", "--state-dir", state.path, *json_out)
    assert code == 2
    assert out == ""
    assert _error(err) == (
        f"the journal {state.journal} is damaged: meta.last_checkin_success holds 'garbage', "
        f"not a time ({RESTORE})"
    )


def test_status_takes_a_damaged_next_checkin_as_unset_and_warns(state, capsys, caplog):
    """The schedule heals itself (Journal._schedule): warned of, not fatal."""
    _meta(state, "next_checkin", "not-a-date")
    code, out, err = _cli(capsys, "status", "--state-dir", state.path)
    assert code == 0, err
    assert "next check-in" not in out
    assert "meta.next_checkin holds 'not-a-date', not a time; taken as unset" in caplog.text


# -- 2. integer options ----------------------------------------------------------


@pytest.mark.parametrize("limit", ["99999999999999999999", "-1", "100001"])
def test_status_limit_is_bounded(state, capsys, limit):
    code, out, err = _cli(capsys, "status", "--state-dir", state.path, f"--limit={limit}")
    assert code == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "--limit" in line
    assert "0<=x<=100000" in line


@pytest.mark.parametrize("limit", ["0", "100000"])
def test_status_limit_within_bounds(state, capsys, limit):
    code, _, err = _cli(capsys, "status", "--state-dir", state.path, "--limit", limit)
    assert code == 0, err


# -- 3. the enrollment token -----------------------------------------------------


def _new_token() -> str:
    now = datetime.now(UTC)
    return tokens.new_token("eu", 0, 1, timedelta(hours=1), {}, now)[1]


def test_the_token_bound_is_the_controllers():
    assert cli.MAX_TOKEN_CHARS == MAX_TEXT


def test_every_token_the_controller_makes_is_taken(tmp_path, monkeypatch):
    for _ in range(200):
        token = _new_token()
        assert tokens.parse(token)  # the controller's own check
        assert cli._token(token, None) == token
        path = tmp_path / "t"
        path.write_text(f"\n  {token}\n")
        assert cli._token(None, str(path)) == token
        monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
        assert cli._token(None, "-") == token


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("fpt_" + "x" * 2000, "2004 characters, where a token has at most 1024"),
        ("fpt_" + "x" * 20_000_000, "over 65536 characters, where a token has at most 1024"),
        ("\n" * 70_000 + "fpt_x", "over 65536 characters, where a token has at most 1024"),
        ("fpt_abc def", "a token starts with 'fpt_' and has only letters, digits, '_' and '-'"),
        ("fpt_abc\x00", "a token starts with 'fpt_' and has only letters, digits, '_' and '-'"),
        ("token=fpt_abc", "a token starts with 'fpt_'"),
        ("-----BEGIN CERTIFICATE-----", "a token starts with 'fpt_'"),
    ],
)
def test_a_token_the_controller_would_refuse_is_refused_here(tmp_path, monkeypatch, text, says):
    path = tmp_path / "t"
    path.write_text(text)
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    for where, args in (
        (f"--token-file {path}", (None, str(path))),
        ("--token-file - (standard input)", (None, "-")),
        ("--token", (text, None)),
    ):
        with pytest.raises(ConfigError) as refused:
            cli._token(*args)
        message = str(refused.value)
        assert message.startswith(f"{where} does not hold an enrollment token: "), message
        assert says in message
        assert len(message) < 300


def test_enroll_with_an_oversized_token_writes_and_sends_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_require_root", lambda command: None)

    def no_enrollment(*args: object) -> None:
        raise AssertionError("enrolled with a token the controller would refuse")

    monkeypatch.setattr(cli, "do_enroll", no_enrollment)
    token = tmp_path / "t"
    token.write_text("fpt_" + "x" * 20_000_000 + "\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    code, out, err = _cli(
        capsys, "enroll", "--controller", "localhost:1", "--ca-cert", ca,
        "--token-file", token, "--state-dir", tmp_path / "s1",
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert _error(err).startswith(f"--token-file {token} does not hold an enrollment token: ")
    assert "at most 1024" in err
    assert not (tmp_path / "s1").exists()


# -- 4. files that exist and are not regular files --------------------------------


def _replace(path: Path, kind: str) -> str:
    """Put something that is not a regular file at path; what it is called."""
    if path.exists():
        path.unlink()
    if kind == "directory":
        path.mkdir()
        return "a directory"
    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO"
    path.symlink_to("/dev/null")
    return "a character device"


KINDS = ["directory", "fifo", "devnull"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["status", "check", "inventory"])
def test_an_agent_toml_that_is_not_a_regular_file_is_said_so(state, capsys, kind, command):
    what = _replace(state.config_file, kind)
    code, out, err = _cli(capsys, command, "--state-dir", state.path)
    assert code == 2
    assert out == ""
    assert _error(err) == f"{state.config_file} is not a regular file (it is {what}; {RESTORE})"


@pytest.mark.parametrize("command", ["status", "check", "inventory"])
def test_an_enrolled_state_dir_without_agent_toml_is_said_so(state, capsys, command):
    state.config_file.unlink()
    code, out, err = _cli(capsys, command, "--state-dir", state.path)
    assert code == 2
    assert out == ""
    assert _error(err) == f"{state.config_file} is missing ({RESTORE})"


def test_check_runs_the_checks_of_agent_toml(state, capsys):
    with state.config_file.open("a") as config:
        config.write('\n[[checks]]\nname = "nothing-listens"\nkind = "tcp"\nport = 1\n')
    code, out, err = _cli(capsys, "check", "--state-dir", state.path)
    assert code == 1, err
    assert "FAIL nothing-listens:" in out


def test_check_reports_a_bad_agent_toml(state, capsys):
    with state.config_file.open("a") as config:
        config.write('\n[[checks]]\nname = "web"\nkind = "htp"\n')
    code, out, _ = _cli(capsys, "check", "--state-dir", state.path)
    assert code == 2
    assert out == ""


def test_check_without_a_state_dir_uses_the_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    code, out, err = _cli(capsys, "check", "--state-dir", tmp_path / "none", "--json")
    assert code in (0, 1), err  # this machine's own health decides
    assert '"healthy"' in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["status", "check"])
def test_a_settings_file_that_is_not_a_regular_file_is_refused_never_waited_on(
    state, tmp_path, kind, command
):
    """In a child: the old code waited forever on the FIFO."""
    settings = tmp_path / "settings.toml"
    what = _replace(settings, kind)
    env = {**os.environ, SETTINGS_ENV: str(settings)}
    done = subprocess.run(
        [sys.executable, "-c", "from agent import cli; cli.main()", command,
         "--state-dir", str(state.path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert _error(done.stderr) == (
        f"{settings} is not a regular file (it is {what}; the agent's settings must be a TOML "
        f"file: make it one, or name another with {SETTINGS_ENV})"
    )
