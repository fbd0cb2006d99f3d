"""Health checks against real sockets, a real HTTP server and processes."""

from __future__ import annotations

import http.server
import os
import re
import socket
import threading

import psutil
import pytest
from fleetpatch.v1 import types_pb2

from agent.backends import subp
from agent.host.checks import CheckSpec, Kind, Prober, check_from_config, check_from_pb
from agent.host.health import ResourceLimits
from controller.campaigns import parse_campaign


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def one(spec: CheckSpec):
    (result,) = Prober(timeout=2).run(spec)
    return result


def test_tcp_check_sees_a_listening_port_and_a_closed_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert one(CheckSpec("svc", Kind.TCP, port=port)).ok
    closed = one(CheckSpec("svc", Kind.TCP, port=port))
    assert not closed.ok
    assert f"127.0.0.1:{port}" in closed.detail


def test_http_check_compares_the_status(http_server):
    good = one(CheckSpec("web", Kind.HTTP, url=f"http://127.0.0.1:{http_server}/healthz"))
    assert good.ok
    bad = one(CheckSpec("web", Kind.HTTP, url=f"http://127.0.0.1:{http_server}/other"))
    assert not bad.ok
    assert "-> 503 (want 200)" in bad.detail
    expected = one(
        CheckSpec("web", Kind.HTTP, url=f"http://127.0.0.1:{http_server}/other", expect_status=503)
    )
    assert expected.ok


def test_http_check_of_nothing_listening_fails_with_the_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = one(CheckSpec("web", Kind.HTTP, url=f"http://127.0.0.1:{port}/"))
    assert not result.ok
    assert "refused" in result.detail.lower()


def test_command_check_runs_an_argv_and_reports_its_exit():
    assert one(CheckSpec("t", Kind.COMMAND, argv=("true",))).ok
    failed = one(CheckSpec("f", Kind.COMMAND, argv=("sh", "-c", "echo broken >&2; exit 3")))
    assert not failed.ok
    assert "exited 3" in failed.detail
    assert "broken" in failed.detail
    missing = one(CheckSpec("m", Kind.COMMAND, argv=("/nonexistent/check",)))
    assert not missing.ok
    assert "is not installed" in missing.detail


def test_process_check_finds_this_process_by_name():
    name = psutil.Process(os.getpid()).name()
    assert one(CheckSpec("me", Kind.PROCESS, process=name)).ok
    assert not one(CheckSpec("ghost", Kind.PROCESS, process="no-such-process-xyz")).ok


def test_systemd_check_speaks_systemctl_is_active():
    seen = []

    def fake_systemctl(argv, **kwargs):
        seen.append(argv)
        active = argv[-1] == "good.service"
        return subp.Result(list(argv), 0 if active else 3, "active\n" if active else "failed\n", "")

    prober = Prober(run=fake_systemctl)
    (good,) = prober.run(CheckSpec("g", Kind.SYSTEMD, unit="good.service"))
    (bad,) = prober.run(CheckSpec("b", Kind.SYSTEMD, unit="bad.service"))
    assert good.ok
    assert not bad.ok
    assert bad.detail == "unit bad.service is failed"
    assert seen[0] == ["systemctl", "is-active", "good.service"]


def test_resource_check_expands_to_one_result_per_resource():
    results = Prober().run(CheckSpec("res", Kind.RESOURCE, limits=ResourceLimits(1000, 1, 1)))
    assert [r.name for r in results] == ["res.load", "res.memory", "res.disk"]
    assert all(r.ok for r in results)
    tight = Prober().run(CheckSpec("res", Kind.RESOURCE, limits=ResourceLimits(0, 0, 1e-9)))
    assert [r.ok for r in tight] == [False]


def test_checks_from_orders_are_marked_and_validated():
    spec = check_from_pb(types_pb2.HealthCheckSpec(name="db", tcp=types_pb2.TcpCheck(port=5432)))
    assert spec == CheckSpec("db", Kind.TCP, host="127.0.0.1", port=5432, from_order=True)
    for bad in (
        types_pb2.HealthCheckSpec(name="x"),
        types_pb2.HealthCheckSpec(name="x", tcp=types_pb2.TcpCheck(port=0)),
        types_pb2.HealthCheckSpec(name="x", http=types_pb2.HttpCheck(url="file:///etc/shadow")),
        types_pb2.HealthCheckSpec(name="x", command=types_pb2.CommandCheck()),
    ):
        with pytest.raises(ValueError, match="incomplete or of an unknown kind"):
            check_from_pb(bad)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "tcp", "port": 1}, "checks[0].name: is required"),
        ({"name": "a", "kind": "ping"}, "checks[0].kind: 'ping' is not a check kind"),
        ({"name": "a", "kind": "tcp", "port": 1, "url": "x"}, "url: does not apply to a tcp"),
        ({"name": "a", "kind": "command", "argv": "true"}, "argv: must be an array"),
        ({"name": "a", "kind": "systemd"}, "checks[0].unit: is required"),
        # What the controller refuses in a campaign, the agent refuses too.
        ({"name": "a", "kind": "tcp", "port": "80"}, "port: must be an integer, not a string"),
        ({"name": "a", "kind": "tcp", "port": 99999}, "99999 is not a TCP port"),
        ({"name": "a", "kind": "http", "url": "ftp://x"}, "must start with http:// or https://"),
        ({"name": "a", "kind": "http", "url": "http://x", "expect_status": "ok"},
         "expect_status: must be an integer"),
        ({"name": "a", "kind": "http", "url": "http://x", "timeout": 3}, "timeout: unknown key"),
        ("web", "checks[0]: must be a table"),
    ],
)  # fmt: skip
def test_host_check_config_errors_name_the_field(table, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        check_from_config(table, "agent.toml", "checks[0]")
    assert str(caught.value).startswith("agent.toml: checks[0]")


def test_the_agent_and_a_campaign_accept_the_same_checks():
    """One validator: a check a campaign file accepts reads the same on a
    host, field for field."""
    campaign = parse_campaign(
        '[campaign]\nname = "c"\n[patch]\npackages = ["openssl"]\n'
        "[rollout]\nrings = [{ ring = 0 }]\n"
        '[[verify.checks]]\nname = "web"\nkind = "tcp"\nport = 8443\n',
        "c.toml",
    )
    (verify,) = campaign.verify.checks
    spec = check_from_config({"name": "web", "kind": "tcp", "port": 8443}, "agent.toml", "c")
    assert (spec.name, spec.kind, spec.host, spec.port) == (
        verify.name, verify.kind, verify.host, verify.port,
    )  # fmt: skip


def test_host_check_config_good():
    spec = check_from_config(
        {"name": "web", "kind": "http", "url": "http://x/", "expect_status": 204}, "w", "c"
    )
    assert spec == CheckSpec("web", Kind.HTTP, url="http://x/", expect_status=204)
