"""The agent's and the controller's logs: one record, one line (a message's
line breaks folded), so that the journal keeps each record whole and a
line quoted from a peer cannot pass for a record of its own."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest
from fleetpatch.logline import FORMAT, QUOTE_LIMIT, OneLineFormatter, one_line, quoted

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) [\w.]+: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        (
            'connection to server on socket "/run/.s.PGSQL.5432" failed: No such file or '
            "directory\n\tIs the server running locally and accepting connections?\n",
            'connection to server on socket "/run/.s.PGSQL.5432" failed: No such file or '
            "directory Is the server running locally and accepting connections?",
        ),
        ("a\r\nb", "a b"),
        ("a \n\n  b", "a b"),
        ("a\u2028b\x85c\vd\fe", "a b c d e"),
        ("tabs\tinside stay", "tabs\tinside stay"),
        ("host evil\x00", "host evil\\x00"),
        ("\x1b[2J\x1b[31mred\x7f\x9b", "\\x1b[2J\\x1b[31mred\\x7f\\x9b"),
        ("a\x00\nb", "a\\x00 b"),
        ("caf\u00e9 \u6771\u4eac", "caf\u00e9 \u6771\u4eac"),
    ],
)
def test_line_breaks_are_folded_and_control_characters_escaped(text, expected):
    assert one_line(text) == expected


def test_a_record_is_one_line_and_a_traceback_stays_whole():
    formatter = OneLineFormatter(FORMAT)
    record = logging.LogRecord("controller.x", logging.WARNING, __file__, 1,
                               "refused %s", ("h-1\n2026-01-01 00:00:00,000 INFO forged: ok",),
                               None)  # fmt: skip
    said = formatter.format(record)
    assert "\n" not in said
    assert said.endswith("refused h-1 2026-01-01 00:00:00,000 INFO forged: ok")
    assert record.getMessage().count("\n") == 1  # other handlers see the record as it was
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord("controller.x", logging.ERROR, __file__, 1, "a\nb", (),
                                    sys.exc_info())  # fmt: skip
    lines = formatter.format(failing).splitlines()
    assert lines[0].endswith(": a b")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


@pytest.mark.parametrize(
    "setup",
    [
        "from agent.daemon import setup_logging; setup_logging(False)",
        "from controller.cli.main import _setup_logging; _setup_logging('info')",
    ],
)
def test_the_agent_and_the_controller_log_so(setup):
    """As `fleetpatch-agent run` and `fleetpatch controller serve` set up
    their logs: a message with line breaks is one line on standard error."""
    code = f"{setup}; import logging; logging.getLogger('x.y').warning('one\\n\\ttwo\\nthree')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    (line,) = done.stderr.splitlines()
    assert RECORD.match(line), line
    assert line.endswith("WARNING x.y: one two three")


# -- a peer's words quoted in a message: one line, and cut short -----------------------


@pytest.mark.parametrize(
    "text",
    ["plain", "a\nforged: line\x1b[2J", "x" * QUOTE_LIMIT, "\x1b" * (QUOTE_LIMIT // 4)],
)
def test_quoted_text_within_the_limit_is_one_line_as_written(text):
    assert quoted(text) == one_line(text)
    assert len(quoted(text)) <= QUOTE_LIMIT


def test_quoted_text_beyond_the_limit_is_cut_with_an_ellipsis():
    assert quoted("x" * (QUOTE_LIMIT + 1)) == "x" * (QUOTE_LIMIT - 3) + "..."
    assert quoted("abcdefghij", 8) == "abcde..."
    assert quoted("abcd efghij", 8) == "abcd..."  # no blank before the ellipsis


@pytest.mark.parametrize("cut", range(1, 5))
def test_quoted_text_is_never_cut_within_an_escape(cut):
    """\\x1b is four characters: the cut falls ``cut`` characters into it,
    and it stays whole (the fourth) or goes whole."""
    text = "a" * (16 - 3 - cut) + "\x1b" + "b" * 20
    said = quoted(text, 16)
    assert len(said) <= 16
    assert said == "a" * (16 - 3 - cut) + ("\\x1b" if cut == 4 else "") + "..."


def test_megabytes_are_cut_without_folding_them_all():
    text = "start " + "\r\n\x00" * (4 * 1024 * 1024)
    said = quoted(text)
    assert said.startswith("start \\x00 \\x00")
    assert said.endswith("...")
    assert len(said) <= QUOTE_LIMIT
    assert "\n" not in said
    assert "\x00" not in said


def test_folding_that_shortens_a_long_text_keeps_what_fits():
    text = "a" + "\n" * (QUOTE_LIMIT * 2) + "b"  # 1002 characters, folded: "a b"
    assert quoted(text) == "a b"
