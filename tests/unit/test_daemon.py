"""agent.daemon: the service's `run` command line starts the daemon without
the CLI framework, and means what the full CLI's `run` means; the daemon
checks its state dir in a child (agent.preflight) and, idle, does without
cryptography."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch import envelope
from fleetpatch.identity import Identity, Role

from agent import cli, daemon, preflight
from agent.errors import AgentError, ConfigError, NotEnrolled, StateDirError
from agent.orders.journal import Journal
from agent.orders.states import TERMINAL, State
from agent.service import Agent, Machine
from agent.statedir import DEFAULT_STATE_DIR, StateDir
from controller.fleet.pki import CertificateAuthority, key_to_pem, new_key
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.orders import sign, trusted, work_order

ENV = {"FLEETPATCH_AGENT_STATE_DIR": "/srv/agent"}


def _run_command() -> click.Command:
    group = typer.main.get_command(cli.app)
    assert isinstance(group, click.Group)
    return group.commands["run"]


def test_the_fast_path_knows_exactly_the_options_of_the_cli_run():
    params = _run_command().params
    options = {opt for p in params for opt in p.opts if opt != "--help"}
    assert options == set(daemon.FLAGS) | {daemon.STATE_DIR_OPTION}
    (state_dir,) = [p for p in params if daemon.STATE_DIR_OPTION in p.opts]
    assert state_dir.envvar == daemon.STATE_DIR_ENV
    assert state_dir.default == DEFAULT_STATE_DIR
    flags = {opt: p.name for p in params for opt in p.opts if opt in daemon.FLAGS}
    assert flags == daemon.FLAGS


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], daemon.RunArgs(Path("/srv/agent"))),
        (["run", "--once"], daemon.RunArgs(Path("/srv/agent"), once=True)),
        (["run", "-v", "--state-dir", "/x"], daemon.RunArgs(Path("/x"), verbose=True)),
        (["run", "--state-dir=/y", "--verbose", "--once"], daemon.RunArgs(Path("/y"), True, True)),
    ],
)
def test_plain_run_command_lines(argv, expected):
    assert daemon.parse_run(argv, ENV) == expected


def test_without_the_environment_the_default_state_dir():
    assert daemon.parse_run(["run"], {}) == daemon.RunArgs(DEFAULT_STATE_DIR)


@pytest.mark.parametrize(
    "argv",
    [
        [], ["status"], ["run", "--help"], ["run", "-h"], ["run", "--onse"],
        ["run", "--state-dir"], ["run", "--state-dir", "--once"], ["run", "--state-dir="],
        ["run", "--once", "--once"], ["run", "extra"], ["--help"], ["enroll", "run"],
    ],
)  # fmt: skip
def test_anything_else_goes_to_the_full_cli(argv):
    assert daemon.parse_run(argv, ENV) is None


def test_the_daemon_path_loads_no_cli_framework(tmp_path):
    """`fleetpatch-agent run` as the unit runs it, up to the first error (a
    state dir that is not enrolled): no typer, click or rich, no
    sqlite-utils, and it still says what is wrong in one line, exit 2."""
    code = (
        "import sys\n"
        f"sys.argv = ['fleetpatch-agent', 'run', '--state-dir', {str(tmp_path)!r}]\n"
        "import os; os.geteuid = lambda: 0\n"  # the root check is not what is measured
        "from agent import daemon\n"
        "try:\n    daemon.main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('typer', 'click', 'rich', 'sqlite_utils', 'dateutil', 'agent.cli'))\n"
        "print(code, heavy, 'agent.cli' in sys.modules, sys.flags.optimize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    # ... and it ran under -OO (daemon.run_optimized started it again so),
    # where this Python's standard library has the bytecode for it.
    optimize = 2 if daemon.stdlib_has_optimized_bytecode() else 0
    assert done.stdout.strip() == f"2 [] False {optimize}", done.stderr
    assert done.stderr.strip().startswith("fleetpatch-agent: error: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- what the idle daemon loads ---------------------------------------------------

HOST_ID = "h-0123456789abcdef"
#: Loaded only when an order, a new signing key or CA, or a renewal comes
#: (cryptography: about 10 MiB of the 40 the daemon may take, issue 18), an
#: HTTP health check runs (urllib.request, with http.client and email: over
#: 1 MiB), a `process` health check runs (psutil: 0.9 MiB, agent.host.sysinfo
#: reads the rest), or a settings file is refused (difflib); not at all
#: (platform, _strptime, secrets).
NOT_WHILE_IDLE = (
    "cryptography", "fleetpatch.catrust", "fleetpatch.envelope", "fleetpatch.identity",
    "fleetpatch.releasefmt", "urllib.request", "http.client", "email", "psutil", "difflib",
    "platform", "_strptime", "secrets",
    # The order runner and its steps: made when an order comes or one was
    # interrupted (Agent.runner); and dnf's backend on an apt host (this one).
    "agent.orders.runner", "agent.orders.selfupdate", "agent.orders.restartsteps",
    "agent.boot.bootsteps", "agent.boot.bootloader", "agent.boot.livepatch",
    "agent.host.restarts", "agent.backends.dnf", "agent.backends.rpmrepack", "xml",
    "ssl", "_ssl", "_hashlib", "hmac", "grpc.aio",  # leanimports.lean_imports
)  # fmt: skip


def _enrolled(path: Path, ca: CertificateAuthority | None = None) -> StateDir:
    """A state dir as `fleetpatch-agent enroll` leaves it."""
    ca = ca or CertificateAuthority.create()
    key = new_key()
    state = StateDir(path)
    state.create()
    state.write_config("localhost:1", "localhost:2")
    state.write(state.ca, ca.cert_pem, mode=0o644)
    state.write(state.key, key_to_pem(key), mode=0o600)
    cert = ca.issue_client(Identity(Role.HOST, HOST_ID), key.public_key())
    state.write(state.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    signing = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    state.write_trusted_signing_keys({envelope.key_id(signing): signing})
    Journal.open(state.journal).close()
    return state


def test_the_daemons_check_in_child_checks_what_the_cli_checks(tmp_path):
    state = _enrolled(tmp_path / "state")
    assert preflight.in_child(state) == preflight.in_process(state)
    assert preflight.in_child(state).host_id == HOST_ID


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda s: s.key.write_bytes(b"junk\n"), StateDirError),
        (lambda s: s.key.write_bytes(key_to_pem(new_key())), StateDirError),
        (lambda s: s.cert.unlink(), StateDirError),
        (lambda s: s.config_file.write_text("[controler]\n"), ConfigError),
        (lambda s: s.trusted_keys.write_text("[]"), StateDirError),
        (lambda s: [p.unlink() for p in s.path.iterdir() if p.is_file()], NotEnrolled),
    ],
)
def test_the_daemons_check_fails_as_the_clis_does(tmp_path, damage, error):
    state = _enrolled(tmp_path / "state")
    damage(state)
    with pytest.raises(error) as in_process:
        preflight.in_process(state)
    with pytest.raises(error) as in_child:
        preflight.in_child(state)
    assert type(in_child.value) is type(in_process.value)
    assert str(in_child.value) == str(in_process.value)
    assert in_child.value.exit_code == in_process.value.exit_code


@pytest.mark.parametrize(("child", "code"), [("false", 1), ("echo", 0)])
def test_a_check_that_crashes_stops_the_daemon_saying_so(tmp_path, monkeypatch, child, code):
    """A child that fails without its answer (a bug: a traceback), or
    answers something else, stops the daemon: nothing unchecked is used."""
    state = _enrolled(tmp_path / "state")
    monkeypatch.setattr(sys, "executable", shutil.which(child))
    with pytest.raises(AgentError, match=rf"checking the state dir .* failed \(exit {code};"):
        preflight.in_child(state)


IDLE = """
import sys
from datetime import timedelta
from pathlib import Path

from agent import daemon  # the console script's module

daemon.lean_imports()  # as daemon.main does first for `run`

from fleetpatch.v1 import agent_pb2
from agent.backends.packages import Inventory
from agent.link.checkin import CheckIns
from agent.link.keys import learn_announced
from agent.link.renewal import Renewal
from agent.link.watch import Watcher
from agent.preflight import in_child
from agent.service import Agent
from agent.statedir import StateDir


class Controller:
    address = "localhost:1"

    def check_in(self, request):
        assert request.ca_trust_hash and request.facts.hostname
        answer = agent_pb2.CheckInResponse(known_inventory_hash=request.inventory_hash)
        answer.next_checkin.FromTimedelta(timedelta(minutes=5))
        return answer

    def report_progress(self, request):
        return agent_pb2.ReportProgressResponse()


state = StateDir(Path(sys.argv[1]))
agent = Agent.open(state, online=True, check=in_child)  # as daemon.run does
client = Controller()
checkins = CheckIns(
    agent.config, agent.journal, client, take_inventory=lambda manager: Inventory([]),
    between=agent.between, on_keys=lambda answer: learn_announced(state, answer),
    after=agent.write_metrics, renewal=Renewal(state, client),
)
agent.resume()
for _ in range(2):
    agent.between()
    report = checkins.once()
    agent.write_metrics()
assert report.next_in == timedelta(minutes=5), report
print(" ".join(sorted(m for m in sys.modules if m.startswith(tuple(sys.argv[2:])))))
"""


def test_the_idle_daemon_loads_no_cryptography(tmp_path):
    """The daemon's start-up and check-ins, as `daemon.run` wires them (the
    controller faked): nothing that only an order, a renewal or a new key
    needs is loaded. Fails when a module of that path imports one of them
    at module level again."""
    state = _enrolled(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-c", IDLE, str(state.path), *NOT_WHILE_IDLE],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def _offline(state: StateDir, backend: FakeBackend) -> Agent:
    """The agent of ``state`` as the daemon opens it, its machine faked."""
    machine = Machine(
        backend=lambda manager, config: backend, prober=FakeProber, rebooter=lambda config: None,
        reboot_signals=lambda config, backend: list, livepatch=tuple, watchdog=lambda: None,
        services=lambda backend: None,
    )  # fmt: skip
    return Agent.open(state, online=False, machine=machine)


def test_an_order_a_crash_interrupted_is_still_finished_at_start_up(tmp_path):
    """The runner is made only when needed (the idle daemon does without
    it), and an order left unfinished in the journal is such a need: the
    start-up's resume makes it and finishes the order, as before."""
    state = _enrolled(tmp_path / "state")
    key = Ed25519PrivateKey.generate()
    state.write_trusted_signing_keys(trusted(key))
    backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
    crashed = _offline(state, backend)
    order = crashed.runner.receive(sign(work_order(HOST_ID, 1), key), trusted(key), HOST_ID)
    crashed.close()  # journaled RECEIVED, then gone before running it

    restarted = _offline(state, backend)
    restarted.resume()
    record = restarted.journal.order(order.order_id)
    restarted.close()
    assert record is not None
    assert record.state == State.SUCCEEDED
    assert backend.installed == {"fp-demo": "1.1"}


def test_with_nothing_interrupted_start_up_makes_no_runner(tmp_path):
    state = _enrolled(tmp_path / "state")
    agent = _offline(state, FakeBackend({"fp-demo": "1.0"}, {}))
    agent.resume()
    assert agent._runner is None
    assert agent.journal.unfinished(frozenset(TERMINAL)) == []
    agent.close()


def test_the_daemon_goes_without_openssl_or_grpc_aio_which_stay_importable():
    """asyncio (which grpcio imports) goes without ssl in the daemon, and
    hashlib without OpenSSL's digests (Python's own give the same); what
    imports ssl later gets it: an https health check's urllib.request. And
    grpcio goes without its asyncio API, which a later import gets."""
    script = (
        "import sys\n"
        "from agent import daemon\n"
        "assert 'hashlib' not in sys.modules\n"
        "daemon.lean_imports()\n"
        "import asyncio.base_events, grpc, hashlib\n"
        "assert not {'ssl', '_ssl', '_hashlib'} & set(sys.modules)\n"
        "assert asyncio.base_events.ssl is None\n"
        "sha = hashlib.sha256(b'fleetpatch').hexdigest()\n"
        f"assert sha == '{hashlib.sha256(b'fleetpatch').hexdigest()}', sha\n"
        "assert hashlib.md5(b'', usedforsecurity=False).hexdigest().startswith('d41d8cd9')\n"
        "import ssl, urllib.request\n"
        "assert ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED\n"
        "assert hasattr(urllib.request, 'HTTPSHandler')\n"
        # Nor grpc.aio, which a later import gets whole.
        "assert 'grpc.aio' not in sys.modules and not hasattr(grpc, 'aio')\n"
        "grpc.insecure_channel('localhost:1').close()\n"
        "import grpc.aio\n"
        "from grpc import aio\n"
        "assert aio is grpc.aio and aio.insecure_channel and aio.Metadata\n"
    )
    done = _python(script)
    assert done.returncode == 0, done.stderr


def test_without_pythons_own_digests_hashlib_keeps_openssl():
    """Fedora's and RHEL's Python has only blake2 built in: there, hashlib
    must keep OpenSSL, or it would have no SHA-256 (ssl is hidden still)."""
    script = (
        "import sys\n"
        "from agent import leanimports\n"
        "assert leanimports.builtin_digests()\n"
        "assert not leanimports.builtin_digests(('_blake2', '_no_such_digest'))\n"
        "leanimports.builtin_digests = lambda: False  # as on Fedora and RHEL\n"
        "leanimports.lean_imports()\n"
        "import hashlib\n"
        "assert '_hashlib' in sys.modules and 'ssl' not in sys.modules\n"
        "assert hashlib.sha256(b'').hexdigest().startswith('e3b0c442')\n"
    )
    done = _python(script)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_where_exec_fails_the_daemon_runs_as_started(monkeypatch):
    tried = []

    def execv(path: str, argv: list[str]) -> None:
        tried.append(argv)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(daemon, "stdlib_has_optimized_bytecode", lambda: True)
    daemon.run_optimized()  # returns: this interpreter runs on, unoptimized
    assert tried == [[sys.executable, "-OO", *sys.orig_argv[1:]]]


def test_without_the_standard_librarys_optimized_bytecode_the_daemon_runs_as_started(
    monkeypatch, tmp_path
):
    """Debian's Python ships plain bytecode only: -OO would compile the
    standard library at every start (or write into /usr/lib as root)."""
    monkeypatch.setattr(os, "execv", lambda path, argv: pytest.fail(f"exec {argv}"))
    cache = tmp_path / "asyncio" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / f"base_events.{sys.implementation.cache_tag}.pyc").touch()
    assert not daemon.stdlib_has_optimized_bytecode(str(tmp_path))
    (cache / f"base_events.{sys.implementation.cache_tag}.opt-2.pyc").touch()
    assert daemon.stdlib_has_optimized_bytecode(str(tmp_path))

    monkeypatch.setattr(daemon, "stdlib_has_optimized_bytecode", lambda: False)
    daemon.run_optimized()  # no exec


def _python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter (a daemon's start-up of its own)."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
