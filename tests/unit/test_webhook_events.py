"""controller.notify.events: which audit records are campaign events, and
[[webhooks]] in controller.toml."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.api.server import reachable
from controller.audit import GENESIS, AuditEntry, AuditRecord
from controller.datadir import DataDir, WebhookSetting
from controller.errors import UsageError
from controller.notify.events import events_of
from controller.notify.webhooks import signature

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _record(seq: int, action: str, target: str, detail: str = "") -> AuditRecord:
    return AuditRecord(seq, AuditEntry(T0, "admin:ada", action, target, "ok", detail), GENESIS, "")


FIRST = {("c-1", 0): "o-a", ("c-1", 1): "o-b"}


def _events(record: AuditRecord) -> list[tuple[str, str, dict[str, object]]]:
    found = events_of(record, lambda c, r: FIRST.get((c, r)), lambda c, r: r - 1 if r else None)
    return [(e.key, e.kind, e.fields) for e in found]


def test_campaign_transitions_are_events():
    assert _events(_record(7, "campaign.halt", "c-1", "ring 0: 1 failure over a budget of 0")) == [
        ("7:campaign.halted", "campaign.halted", {"reason": "ring 0: 1 failure over a budget of 0"})
    ]
    assert _events(_record(8, "campaign.abort", "c-1", "and revert patched hosts")) == [
        ("8:campaign.aborted", "campaign.aborted", {"revert": True})
    ]
    assert _events(_record(9, "campaign.complete", "c-1"))[0][1] == "campaign.completed"
    assert _events(_record(10, "campaign.create", "c-1")) == []
    assert _events(_record(11, "order.result", "o-a", "")) == []


def _assigned(seq: int, order: str, ring: int, action: str = "order.assign.patch") -> AuditRecord:
    detail = f"campaign c-1 host h-1 ring {ring} region eu sequence 3"
    return _record(seq, action, order, detail)


def test_the_first_order_of_a_ring_starts_it_and_promotes_the_ring_before():
    assert _events(_assigned(20, "o-a", 0)) == [("20:ring.started", "ring.started", {"ring": 0})]
    assert _events(_assigned(21, "o-x", 0)) == []  # not the first: nothing
    assert _events(_assigned(22, "o-b", 1)) == [
        ("22:ring.promoted", "ring.promoted", {"ring": 0, "next_ring": 1}),
        ("22:ring.started", "ring.started", {"ring": 1}),
    ]
    assert _events(_assigned(23, "o-a", 0, "order.assign.revert")) == []


def test_the_body_is_signed_with_hmac_sha256():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert signature(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def _settings(tmp_path: Path, text: str) -> tuple[WebhookSetting, ...]:
    (tmp_path / "controller.toml").write_text(text)
    return DataDir(tmp_path).settings().webhooks


def test_webhooks_settings(tmp_path):
    assert _settings(tmp_path, "") == ()
    text = '[[webhooks]]\nname = "ops"\nurl = "https://h.example/x"\nsecret_file = "ops.key"\n'
    assert _settings(tmp_path, text) == (
        WebhookSetting("ops", "https://h.example/x", tmp_path / "ops.key"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[webhooks]]\nname = "a"\nurl = "ftp://h/x"\nsecret_file = "k"\n',
         r"webhooks\[0\]\.url: 'ftp://h/x' is not an http:// or https:// URL"),
        ('[[webhooks]]\nname = "a"\nurl = "http://[::1/x"\nsecret_file = "k"\n',
         r"webhooks\[0\]\.url: 'http://\[::1/x' is not an http:// or https:// URL"),
        ('[[webhooks]]\nname = "a"\nurl = "https://h/x"\n',
         r"webhooks\[0\]\.secret_file is required"),
        ('[[webhooks]]\nname = "a"\nurl = "https://h/x"\nsecret_file = "k"\nevents = []\n',
         r"webhooks\[0\]: unknown key events"),
        ('[[webhooks]]\nname = "a"\nurl = "http://h/"\nsecret_file = "k"\n'
         '[[webhooks]]\nname = "a"\nurl = "http://i/"\nsecret_file = "k"\n',
         r"webhooks\[1\]\.name: 'a' is used twice"),
        ('[webhooks]\nname = "a"\n', r"webhooks must be an array of tables"),
    ],
)  # fmt: skip
def test_bad_webhooks_are_one_line_naming_the_field(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        _settings(tmp_path, text)


def test_a_receiver_that_cannot_be_reached_is_told_at_start_up():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert reachable(f"http://127.0.0.1:{port}/hook") == ""
    assert "refused" in reachable(f"http://127.0.0.1:{port}/hook").lower()
