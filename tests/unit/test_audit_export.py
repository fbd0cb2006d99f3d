"""`audit export` writes records as they arrive, in the format it always had."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from fleetpatch import render
from fleetpatch.v1 import admin_pb2

from controller.api import convert
from controller.audit import AuditEntry, chain
from controller.cli.campaigns import _stream_json, _stream_table

T0 = datetime(2026, 11, 27, 12, 0, 0, 250000, tzinfo=UTC)


def _records(n: int) -> list[admin_pb2.AuditRecord]:
    out, prev = [], "0" * 64
    for i in range(n):
        record = chain(i + 1, AuditEntry(T0, "host:h-1", "order.refused", f"o-{i}", "refused",
                                         f"détail «{i}» \"quoted\"\nline"), prev)  # fmt: skip
        prev = record.hash
        out.append(convert.audit_to_pb(record))
    return out


@pytest.mark.parametrize("n", [0, 1, 3, 2500])
def test_streamed_json_is_byte_for_byte_what_the_whole_list_printed(n):
    records = _records(n)
    whole, streamed = io.StringIO(), io.StringIO()
    render.print_json([convert.to_json(r) for r in records], whole)
    _stream_json(iter(records), streamed)
    assert streamed.getvalue() == whole.getvalue()


def test_streamed_table_has_one_line_per_record_under_a_header():
    out = io.StringIO()
    _stream_table(iter(_records(2500)), out)
    lines = out.getvalue().split("\n")
    assert lines[0].split() == ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"]
    assert lines[1].startswith("1       2026-11-27 12:00:00  host:h-1")
