"""The agent's and the controller's logs: one record, one line (a message's
line breaks folded), so that the journal keeps each record whole and a
line quoted from a peer cannot pass for a record of its own."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest
from fleetpatch.logline import FORMAT, OneLineFormatter, one_line

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
