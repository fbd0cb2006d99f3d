"""fleetpatch.render: the plain-text output of both CLIs."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from fleetpatch.render import ago, print_json, size, table

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _table(headers, rows) -> str:
    out = io.StringIO()
    table(headers, rows, out=out)
    return out.getvalue()


def test_table_aligns_columns_two_spaces_apart():
    text = _table(["HOST", "RING", "STATUS"], [["h-1", 0, "active"], ["h-longer-id", 12, "ok"]])
    assert text == ("HOST         RING  STATUS\nh-1          0     active\nh-longer-id  12    ok\n")


def test_table_header_wider_than_cells():
    assert _table(["REGION", "N"], [["eu", 1]]) == "REGION  N\neu      1\n"


def test_table_strips_trailing_spaces_of_a_short_last_cell():
    text = _table(["A", "LAST"], [["x", ""], ["y", "z"]])
    assert all(line == line.rstrip() for line in text.splitlines())
    assert text == "A  LAST\nx\ny  z\n"


def test_table_columns_start_at_the_same_offset_on_every_line():
    rows = [["a", "bb", "ccc"], ["dddd", "e", "f"], ["g", "hhhhhh", "i"]]
    lines = _table(["X", "Y", "Z"], rows).splitlines()
    starts = {line.index(cell) for line, cell in zip(lines[1:], ["ccc", "f", "i"], strict=True)}
    assert starts == {lines[0].index("Z")}


def test_table_without_rows_prints_the_header():
    assert _table(["HOST", "STATUS"], []) == "HOST  STATUS\n"


def test_table_stringifies_cells():
    assert _table(["V"], [[None], [1.5]]) == "V\nNone\n1.5\n"


def test_table_rejects_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="zip"):
        _table(["A", "B"], [["only one"]])


def test_table_and_json_follow_a_redirected_stdout():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        table(["A"], [["x"]])
        print_json({"k": 1})
    assert out.getvalue() == 'A\nx\n{\n  "k": 1\n}\n'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s ago"),
        (12, "12s ago"),
        (59, "59s ago"),
        (60, "1m ago"),
        (3599, "59m ago"),
        (3600, "1h ago"),
        (86399, "23h ago"),
        (86400, "1d ago"),
        (10 * 86400 + 5, "10d ago"),
    ],
)
def test_ago(seconds, text):
    assert ago(NOW - timedelta(seconds=seconds), NOW) == text


def test_ago_never():
    assert ago(None, NOW) == "never"


def test_ago_in_the_future():
    assert ago(NOW + timedelta(seconds=5), NOW) == "in the future"


def test_ago_ignores_sub_second_differences():
    assert ago(NOW - timedelta(milliseconds=999), NOW) == "0s ago"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2, "1.0 MiB"),
        (5 * 1024**3 + 1024**3 // 2, "5.5 GiB"),
        (1024**4, "1.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),  # TiB is the largest unit
    ],
)
def test_size(n, text):
    assert size(n) == text


def test_print_json_is_sorted_indented_and_handles_datetimes():
    out = io.StringIO()
    print_json({"b": 1, "a": NOW}, out=out)
    text = out.getvalue()
    assert text.endswith("}\n")
    assert text.index('"a"') < text.index('"b"')
    assert '\n  "a"' in text
    assert json.loads(text) == {"a": str(NOW), "b": 1}


def test_json_times_are_rfc3339_with_z_and_missing_values_null():
    from datetime import UTC, datetime, timedelta, timezone

    from fleetpatch import render as r

    at = datetime(2026, 12, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert r.rfc3339(at) == "2026-12-01T12:00:00Z"
    assert r.rfc3339(datetime(2026, 12, 1, tzinfo=UTC)) == "2026-12-01T00:00:00Z"
    assert r.rfc3339(None) is None
    assert r.nulls({"a": "", "b": [{"c": ""}, "x"], "d": 0, "e": False}) == {
        "a": None, "b": [{"c": None}, "x"], "d": 0, "e": False,
    }  # fmt: skip
