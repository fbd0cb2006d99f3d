"""Campaign events reach a webhook from the audit trail (the outbox): a
real controller (mTLS, SQLite) runs a campaign that halts, is resumed and
completes, and is restarted in between; a local receiver refuses the first
attempts. Every event arrives, signed, in order, and none is lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.controller import Controller
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.waiting import wait_until

SECRET = b"s3cret-webhook-key"
CAMPAIGN = """
[campaign]
name = "hooked"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
rings = [
  { ring = 0, concurrency = "100%", gate = { min_success = 0.5, failure_budget = 0 } },
  { ring = 1, concurrency = "100%" },
]
"""


class Receiver:
    """A webhook receiver on loopback that answers 500 while ``refusing``,
    then 204; it keeps what it accepted."""

    def __init__(self) -> None:
        self.refusing = True
        self.attempts = 0
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.refusing:
                    self.send_response(500)
                else:
                    receiver.accepted.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, object]]:
        """Accepted events, deduplicated on the delivery key as a receiver must."""
        seen, found = set(), []
        for headers, body in self.accepted:
            key = headers["X-Fleetpatch-Delivery"]
            if key not in seen:
                seen.add(key)
                found.append(json.loads(body))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_campaign_events_reach_the_webhook_signed_in_order_across_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    (ctl.data_dir / "webhook.key").write_bytes(SECRET + b"\n")
    config = ctl.data_dir / "controller.toml"
    config.write_text(
        config.read_text().replace('tick = "10s"', 'tick = "1s"')
        + f'\n[[webhooks]]\nname = "test"\nurl = "{receiver.url}"\nsecret_file = "webhook.key"\n'
    )
    ctl.start()
    agents: list[InProcessAgent] = []
    try:
        for i, (ring, healthy) in enumerate([(0, True), (0, False), (1, True)]):
            agents.append(InProcessAgent(
                ctl, tmp_path / f"agent-{i}", "eu", ring,
                FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}),
                FakeProber([True] if healthy else [True, False]),
            ))  # fmt: skip
        spec = tmp_path / "campaign.toml"
        spec.write_text(CAMPAIGN)
        cid = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        ctl.admin("campaign", "approve", cid)
        for agent in agents:
            agent.round()
        assert ctl.admin_json("campaign", "show", cid)["state"] == "halted"  # type: ignore[index]
        # The receiver refused every attempt so far; the controller restarts
        # with nothing delivered, and the receiver comes back after.
        wait_until("an attempt at the webhook", lambda: receiver.attempts >= 2, timeout=30)
        assert receiver.accepted == []
        ctl.stop()
        ctl.start()
        receiver.refusing = False
        ctl.admin("campaign", "resume", cid)
        for _ in range(5):
            for agent in agents:
                agent.round()
            if ctl.admin_json("campaign", "show", cid)["state"] == "completed":  # type: ignore[index]
                break
        wait_until(
            "the completed event at the webhook",
            lambda: any(e["event"] == "campaign.completed" for e in receiver.events()),
            timeout=30,
        )
    finally:
        for agent in agents:
            agent.close()
        ctl.stop()

    events = receiver.events()
    assert [(e["event"], e.get("ring")) for e in events] == [
        ("campaign.approved", None),
        ("ring.started", 0),
        ("campaign.halted", None),
        ("campaign.resumed", None),
        ("ring.promoted", 0),
        ("ring.started", 1),
        ("campaign.completed", None),
    ]
    assert all(e["campaign"] == cid for e in events)
    halted = events[2]
    assert "ring 0" in str(halted["reason"])
    assert events[4]["next_ring"] == 1
    assert receiver.attempts > len(receiver.accepted)  # the refused attempts
    for headers, body in receiver.accepted:
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert headers["X-Fleetpatch-Signature"] == expected
        assert headers["X-Fleetpatch-Event"] == json.loads(body)["event"]
        assert headers["X-Fleetpatch-Delivery"] == json.loads(body)["id"]
