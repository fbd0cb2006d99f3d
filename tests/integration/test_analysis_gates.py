"""Rings gated on live metrics, against the session's real Prometheus
scraping an exporter the test controls, with a real controller (TLS,
SQLite) and in-process agents:

- a query Prometheus cannot parse is refused at `campaign create`, in one line;
- while Prometheus does not answer, the guarded ring waits (never passes);
- once the metric holds, the ring opens and its hosts are patched;
- a breach during a guarded ring halts the campaign with the query, the
  value and the threshold in the reason.

Prometheus is reached through a front the test can switch off, so "not
answering" is a real refused connection, without stopping the session's
server."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.orders.states import State
from tests.support.controller import Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent
from tests.support.prometheus import Prometheus
from tests.support.waiting import scaled

CAMPAIGN = """
[campaign]
name = "gated"

[patch]
packages = ["fp-demo"]

[verify]
timeout = "1s"

[rollout]
prometheus = "{url}"
analysis_interval = "1s"
rings = [
  {{ ring = 0, concurrency = "100%" }},
  {{ ring = 1, concurrency = "100%" }},
  {{ ring = 2, concurrency = "100%" }},
]

[[rollout.analysis]]
name = "error-rate"
query = '{query}'
max = 0.05
rings = [1, 2]
"""
QUERY = "max(fp_app_error_ratio)"


class Serving:
    """A loopback HTTP server on a thread, answering with ``handle``."""

    def __init__(self, handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Exporter:
    """The application's metric, as the test sets it."""

    def __init__(self) -> None:
        self.value = 0.01
        self.serving = Serving(self._metrics)

    def _metrics(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = f"# TYPE fp_app_error_ratio gauge\nfp_app_error_ratio {self.value}\n".encode()
        request.send_response(200)
        request.send_header("Content-Type", "text/plain; version=0.0.4")
        request.end_headers()
        request.wfile.write(body)


class Front:
    """Passes queries on to Prometheus while ``up``; otherwise drops the
    connection unanswered, as a Prometheus that is gone."""

    def __init__(self, prometheus: Prometheus) -> None:
        self.prometheus = prometheus
        self.up = True
        self.serving = Serving(self._pass)

    def _pass(self, request: http.server.BaseHTTPRequestHandler) -> None:
        if not self.up:
            request.close_connection = True
            request.connection.close()
            return
        try:
            with urllib.request.urlopen(f"{self.prometheus.url}{request.path}", timeout=5) as got:  # noqa: S310
                status, body = got.status, got.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        request.wfile.write(body)


@pytest.fixture
def gated(prometheus: Prometheus, tmp_path: Path) -> Iterator[tuple[Controller, Exporter, Front]]:
    exporter, front = Exporter(), Front(prometheus)
    prometheus.set_targets([exporter.serving.address])
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    try:
        yield ctl, exporter, front
    finally:
        ctl.stop()
        prometheus.set_targets([])
        exporter.serving.close()
        front.serving.close()


def _wait(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _scraped(prometheus: Prometheus, value: float) -> bool:
    found = prometheus.query(QUERY)
    return bool(found) and float(found[0]["value"][1]) == value


def test_an_unparsable_query_is_refused_at_create_in_one_line(gated, tmp_path):
    ctl, _, front = gated
    spec = tmp_path / "bad.toml"
    spec.write_text(CAMPAIGN.format(url=f"http://{front.serving.address}", query="max(("))
    done = cli("fleetpatch", "campaign", "create", spec, "--data-dir", ctl.data_dir)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "rollout.analysis 'error-rate'" in lines[0]
    assert "bad_data" in lines[0] or "parse error" in lines[0]


def test_a_guarded_ring_waits_for_prometheus_opens_when_the_metric_holds_and_a_breach_halts(
    gated, prometheus, tmp_path
):
    ctl, exporter, front = gated
    _wait("Prometheus scraping the exporter", lambda: _scraped(prometheus, 0.01))
    agents = [
        InProcessAgent(ctl, tmp_path / f"agent-{ring}", "eu", ring,
                       FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"}), FakeProber())
        for ring in (0, 1, 2)
    ]  # fmt: skip
    try:
        spec = tmp_path / "gated.toml"
        spec.write_text(CAMPAIGN.format(url=f"http://{front.serving.address}", query=QUERY))
        campaign = ctl.admin("campaign", "create", spec).stdout.strip().splitlines()[-1]
        front.up = False  # Prometheus stops answering before the rollout starts
        ctl.admin("campaign", "approve", campaign)
        agents[0].round()
        assert agents[0].outcomes == [State.SUCCEEDED]
        time.sleep(scaled(3))  # several ticks and analysis intervals without an answer
        agents[1].round()
        assert agents[1].outcomes == []  # held back, not passed
        show = ctl.admin("campaign", "show", campaign).stdout
        assert "ring_gate" in show
        front.up = True

        def ring_1_patched() -> bool:
            agents[1].round()
            return agents[1].outcomes == [State.SUCCEEDED]

        _wait("ring 1 to open once the metric holds", ring_1_patched)
        exporter.value = 0.2
        _wait("Prometheus to see the breach", lambda: _scraped(prometheus, 0.2))

        def halted() -> bool:
            doc = ctl.admin_json("campaign", "show", campaign)
            assert isinstance(doc, dict)
            return bool(doc["state"] == "halted")

        _wait("the campaign to halt", halted)
        doc = ctl.admin_json("campaign", "show", campaign)
        assert isinstance(doc, dict)
        assert doc["halt_kind"] == "analysis"
        reason = str(doc["halt_reason"])
        assert QUERY in reason
        assert "= 0.2, beyond its max 0.05" in reason
        assert "guarding ring 1" in reason or "guarding ring 2" in reason
        agents[2].round()
        assert agents[2].outcomes == []  # ring 2 never started
    finally:
        for agent in agents:
            agent.close()
