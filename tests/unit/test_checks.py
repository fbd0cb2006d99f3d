"""Health checks against real sockets, a real HTTP server and processes,
and the values they are refused before any probe runs."""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import socket
import threading
from datetime import UTC, datetime
from typing import Any

import psutil
import pytest
from fleetpatch.v1 import types_pb2

from agent.backends import subp
from agent.host.checks import CheckSpec, Kind, Prober, check_from_config, check_from_pb
from agent.host.health import ResourceLimits
from agent.orders.workorder import OrderRefused, RefusalReason, from_pb
from controller.campaigns import parse_campaign
from tests.support.orders import work_order


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
    assert seen[0] == ["systemctl", "is-active", "--", "good.service"]


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


# -- values no probe could use: refused where they are read, never a crash -------

# (the check's fields, the field an error must name, what it must say)
HOSTILE: list[tuple[dict[str, Any], str, str]] = [
    ({"kind": "tcp", "port": 1, "host": "a" * 100}, "host", "a label is longer than 63 characters"),
    ({"kind": "tcp", "port": 1, "host": "a..b"}, "host", "(a label is empty)"),
    ({"kind": "tcp", "port": 1, "host": ".".join(["a" * 63] * 5)}, "host",
     "longer than 253 characters"),
    ({"kind": "tcp", "port": 1, "host": "a\0b"}, "host", "'a\\x00b' is not a host name"),
    ({"kind": "tcp", "port": 1, "host": "[::1]"}, "host", "only letters, digits"),

    ({"kind": "http", "url": "http://[::1"}, "url", "is not a URL (Invalid IPv6 URL)"),
    ({"kind": "http", "url": "http://local host/"}, "url", "must not contain spaces or control"),
    ({"kind": "http", "url": "http://127.0.0.1/a\tb"}, "url", "must not contain spaces or control"),
    ({"kind": "http", "url": "http://127.0.0.1:99999/"}, "url", "Port out of range 0-65535"),
    ({"kind": "http", "url": "http://127.0.0.1:x/"}, "url", "Port could not be cast"),
    ({"kind": "http", "url": "http://127.0.0.1:0/"}, "url", "names port 0"),
    ({"kind": "http", "url": "http://a..b/"}, "url", "names 'a..b', not a host name or IP"),
    ({"kind": "http", "url": "http:///healthz"}, "url", "names no host"),
    ({"kind": "http", "url": "http://u:pw@127.0.0.1/"}, "url", "must not carry a user name"),
    ({"kind": "http", "url": "http://127.0.0.1/\u00fc"}, "url", "must be ASCII after the host"),
    ({"kind": "command", "argv": ["/bin/true\0x"]}, "argv[0]",
     "'/bin/true\\x00x' contains a control character"),
    ({"kind": "command", "argv": ["sh", "-c", "true\0"]}, "argv[2]",
     "'true\\x00' contains a NUL character"),
    ({"kind": "systemd", "unit": "a\0b"}, "unit", "'a\\x00b' is not a systemd unit name"),
    ({"kind": "process", "process": "a\0b"}, "process", "contains a control character"),
]  # fmt: skip
HOSTILE_IDS = [f"{fields['kind']}-{n}" for n, (fields, _, _) in enumerate(HOSTILE)]
# Refused too, though a probe may "work": another host than the one meant.
ELSEWHERE: list[tuple[dict[str, Any], str, str]] = [
    # libc reads these as shorthand IPv4 (1.2.0.3, 0.15.66.63).
    ({"kind": "tcp", "port": 1, "host": "1.2.3"}, "host", "neither a dotted-quad IPv4"),
    ({"kind": "tcp", "port": 1, "host": "999999"}, "host", "neither a dotted-quad IPv4"),
    ({"kind": "http", "url": "http://1.2.3:9/"}, "url", "neither a dotted-quad IPv4"),
    ({"kind": "http", "url": "http://[v1.x]/"}, "url", "names [v1.x], which is not an IPv6"),
]
REFUSED = HOSTILE + ELSEWHERE
REFUSED_IDS = HOSTILE_IDS + [f"{f['kind']}-elsewhere-{n}" for n, (f, _, _) in enumerate(ELSEWHERE)]


def _order_check(fields: dict[str, Any]) -> types_pb2.HealthCheckSpec:
    """The same check as a work order carries it."""
    kind = fields["kind"]
    spec = types_pb2.HealthCheckSpec(name="x")
    if kind == "tcp":
        spec.tcp.CopyFrom(types_pb2.TcpCheck(host=fields.get("host", ""), port=fields["port"]))
    elif kind == "http":
        spec.http.url = fields["url"]
    elif kind == "command":
        spec.command.argv.extend(fields["argv"])
    elif kind == "systemd":
        spec.systemd.unit = fields["unit"]
    else:
        spec.process.name = fields["process"]
    return spec


def _spec(fields: dict[str, Any]) -> CheckSpec:
    """The check built directly, as if validation had let it through."""
    kind = Kind(fields["kind"])
    values = {key: value for key, value in fields.items() if key != "kind"}
    if "argv" in values:
        values["argv"] = tuple(values["argv"])
    return CheckSpec("x", kind, **values)


@pytest.mark.parametrize(("fields", "field", "problem"), REFUSED, ids=REFUSED_IDS)
def test_agent_toml_refuses_a_value_no_probe_could_use(fields, field, problem):
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        check_from_config({"name": "x", **fields}, "agent.toml", "checks[0]")
    message = str(caught.value)
    assert message.startswith(f"agent.toml: checks[0].{field}: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("fields", "field", "problem"), REFUSED, ids=REFUSED_IDS)
def test_a_work_order_carrying_such_a_check_is_refused(fields, field, problem):
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        check_from_pb(_order_check(fields))
    assert str(caught.value).startswith(f"health check 'x': {field}: ")
    order = work_order("h-1", 1, now=datetime.now(UTC), checks=[_order_check(fields)])
    with pytest.raises(OrderRefused, match=re.escape(f"health check 'x': {field}: ")) as refused:
        from_pb(order)
    assert refused.value.reason is RefusalReason.MALFORMED


@pytest.mark.parametrize(("fields", "field", "problem"), HOSTILE, ids=HOSTILE_IDS)
def test_probes_never_raise_even_on_values_validation_refuses(fields, field, problem):
    (result,) = Prober(timeout=2).run(_spec(fields))
    assert not result.ok
    assert result.kind == fields["kind"]
    assert "\n" not in result.detail


def test_a_probe_that_raises_is_a_failed_result_of_one_line():
    def broken(argv, **kwargs):
        raise RuntimeError("first line\nsecond line")

    (result,) = Prober(run=broken).run(CheckSpec("c", Kind.COMMAND, argv=("true",)))
    assert (result.name, result.kind, result.ok) == ("c", "command", False)
    assert result.detail == "probe failed (RuntimeError): first line second line"


def test_an_interrupt_during_a_probe_is_not_swallowed():
    def interrupted(argv, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Prober(run=interrupted).run(CheckSpec("c", Kind.COMMAND, argv=("true",)))


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "tcp", "port": 1, "host": "::1"},
        {"kind": "tcp", "port": 1, "host": "fe80::1%eth0"},
        {"kind": "tcp", "port": 1, "host": "10.0.0.1"},
        {"kind": "tcp", "port": 1, "host": "db_1.internal."},
        {"kind": "tcp", "port": 1, "host": "b\u00fccher.example"},
        {"kind": "tcp", "port": 1, "host": ".".join(["a" * 63] * 3) + "." + "a" * 61},
        {"kind": "http", "url": "http://[::1]:8080/healthz?full=1"},
        {"kind": "http", "url": "https://b\u00fccher.example/%C3%BC"},
        {"kind": "command", "argv": ["sh", "-c", "printf 'a\tb\n'"]},
        {"kind": "systemd", "unit": "-.mount"},
        {"kind": "systemd", "unit": "getty@tty1.service"},
        {"kind": "process", "process": "nginx: worker"},
    ],
    ids=lambda fields: f"{fields['kind']}-{next(v for k, v in fields.items() if k != 'kind')}",
)
def test_values_that_could_work_are_accepted_from_both_sources(fields):
    from_file = check_from_config({"name": "x", **fields}, "agent.toml", "checks[0]")
    from_order = check_from_pb(_order_check(fields))
    assert from_order == dataclasses.replace(from_file, from_order=True)


def test_a_campaign_refuses_what_a_host_would_refuse():
    with pytest.raises(ValueError, match=re.escape("verify.checks[0].host: 'a..b' is not")):
        parse_campaign(
            '[campaign]\nname = "c"\n[patch]\npackages = ["openssl"]\n'
            "[rollout]\nrings = [{ ring = 0 }]\n"
            '[[verify.checks]]\nname = "db"\nkind = "tcp"\nhost = "a..b"\nport = 5432\n',
            "c.toml",
        )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        # nan compares false with everything: a limit never reached, a gate off.
        ("max_load_per_cpu", float("nan"), "must be a finite number >= 0, not nan"),
        ("max_load_per_cpu", float("inf"), "must be a finite number >= 0, not inf"),
        ("max_load_per_cpu", -1.0, "must be a finite number >= 0, not -1.0"),
        ("max_memory_used_ratio", float("nan"), "must be between 0 and 1, not nan"),
        ("max_disk_used_ratio", 2.0, "must be between 0 and 1, not 2.0"),
    ],
)
def test_a_resource_limit_that_could_never_be_hit_is_refused_from_a_file_and_an_order(
    key, value, problem
):
    with pytest.raises(ValueError, match=re.escape(f"checks[0].{key}: {problem}")):
        check_from_config({"name": "r", "kind": "resource", key: value}, "agent.toml", "checks[0]")
    order = types_pb2.HealthCheckSpec(name="r", resource=types_pb2.ResourceCheck(**{key: value}))
    with pytest.raises(ValueError, match=re.escape(f"health check 'r': {key}: {problem}")):
        check_from_pb(order)


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        (types_pb2.HealthCheckSpec(name="x", command=types_pb2.CommandCheck(argv=[""])),
         "argv[0]", "names no program"),
        (types_pb2.HealthCheckSpec(name="x", process=types_pb2.ProcessCheck(name=" ")),
         "process", "must not be blank"),
        (types_pb2.HealthCheckSpec(
            name="x", http=types_pb2.HttpCheck(url="http://127.0.0.1/", expect_status=1000)),
         "expect_status", "1000 is not an HTTP status (100-599)"),
    ],
)  # fmt: skip
def test_an_order_is_held_to_what_agent_toml_may_hold(spec, field, problem):
    """A check that could never pass, in an order, would fail verification
    and revert the update for nothing; agent.toml refuses the same."""
    with pytest.raises(ValueError, match=re.escape(f"health check 'x': {field}: {problem}")):
        check_from_pb(spec)
