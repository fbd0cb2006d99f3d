"""User mistakes get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.orders.journal import Journal
from controller.cli.admin_client import CONNECT_TIMEOUT_SECONDS
from tests.support import mounts
from tests.support.controller import BIN, Controller, Result, cli, ok
from tests.support.waiting import scaled, sigint_not_ignored

GARBLED_KEY = b"-----BEGIN PRIVATE KEY-----\nTUlJRXZ3SUJBREFO\n-----END PRIVATE KEY-----\n"
GARBLED_CERT = b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"


def _one_line(result: Result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def initialised(tmp_path) -> Controller:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    return ctl


def test_admin_command_with_a_missing_data_dir(tmp_path):
    _one_line(
        cli("fleetpatch", "hosts", "list", "--data-dir", tmp_path / "nope"),
        2, "does not exist", "controller init",
    )  # fmt: skip


def test_admin_command_with_an_uninitialised_data_dir(tmp_path):
    _one_line(cli("fleetpatch", "token", "list", "--data-dir", tmp_path), 2, "is not initialised")


def test_data_dir_comes_from_the_environment(tmp_path):
    result = cli("fleetpatch", "hosts", "list", env={"FLEETPATCH_DATA_DIR": str(tmp_path / "x")})
    _one_line(result, 2, str(tmp_path / "x"))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("admin.pem", b"garbage\n", "admin.pem is not a PEM certificate"),
        ("ca.pem", GARBLED_CERT, "ca.pem is not a PEM certificate"),
        ("admin.key", GARBLED_KEY, "admin.key is not a PEM private key"),
    ],
)
def test_admin_command_with_damaged_credentials_says_which_file(initialised, name, content,
                                                                needle):  # fmt: skip
    # gRPC's core printed its own lines first, then the call failed as a
    # trust failure (exit 7), blaming the controller.
    (initialised.data_dir / name).write_bytes(content)
    _one_line(cli("fleetpatch", "token", "list", "--data-dir", initialised.data_dir), 2, needle)


def test_admin_command_with_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    _one_line(cli("fleetpatch", "token", "list", "--data-dir", tmp_path / "file"), 2,
              "is not a directory")  # fmt: skip


def test_admin_command_with_the_controller_down(initialised):
    _one_line(
        cli("fleetpatch", "hosts", "list", "--data-dir", initialised.data_dir),
        3, "cannot reach the controller", initialised.address,
    )  # fmt: skip


def test_ctrl_c_while_the_controller_is_silent_stops_the_command_at_once(initialised):
    """A controller that takes connections and never answers: Ctrl-C stops
    a command that waits to connect, without a traceback and well before
    its 10 s connect deadline (it once left grpc waiting for ever)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(scaled(60))
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        argv = [BIN / "fleetpatch", "hosts", "list", "--data-dir", initialised.data_dir,
                "--controller", address]  # fmt: skip
        with sigint_not_ignored(), subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        ) as command:  # fmt: skip
            try:
                connection, _ = listener.accept()  # it is connecting now
                with connection:
                    command.send_signal(signal.SIGINT)
                    sent = time.monotonic()
                    _, stderr = command.communicate(timeout=scaled(30))
                    took = time.monotonic() - sent
            finally:
                command.kill()
    assert (command.returncode, stderr) == (130, "aborted\n")  # one line, as the contract says
    assert took < CONNECT_TIMEOUT_SECONDS / 2  # at once, not at the connect deadline


def test_ctrl_c_while_a_program_loads_is_one_line_not_a_traceback(tmp_path):
    """A real SIGINT while `fleetpatch.launch` imports a program (here one
    whose import waits): one line, exit 130. Every console script starts
    so (tests/unit/test_launch.py)."""
    (tmp_path / "slow_program.py").write_text(
        "import sys, time\nprint('importing', flush=True)\ntime.sleep(60)\ndef main(): pass\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-c", "from fleetpatch.launch import launch; launch('slow_program')"]
    with sigint_not_ignored(), subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    ) as command:  # fmt: skip
        try:
            assert command.stdout is not None
            assert command.stdout.readline() == "importing\n"
            command.send_signal(signal.SIGINT)
            _, stderr = command.communicate(timeout=scaled(30))
        finally:
            command.kill()
    assert (command.returncode, stderr) == (130, "aborted\n")


def test_init_refuses_to_replace_a_ca(initialised):
    before = (initialised.data_dir / "ca.key").read_bytes()
    _one_line(
        cli("fleetpatch", "controller", "init", "--data-dir", initialised.data_dir,
            "--hostname", "localhost"),
        2, "already initialised",
    )  # fmt: skip
    assert (initialised.data_dir / "ca.key").read_bytes() == before


def test_init_takes_several_host_names_for_the_server_certificate(tmp_path):
    """Repeated and comma-separated: all in the certificate, the first
    advertised. One that is not a name: one line, exit 2, nothing made."""
    data_dir = tmp_path / "ctl"
    ok("fleetpatch", "controller", "init", "--data-dir", data_dir, "--listen", "0.0.0.0:7443",
       "--hostname", "ctl.example.com", "--hostname", "ctl-a.example.com,10.0.0.5")  # fmt: skip
    cert = x509.load_pem_x509_certificate((data_dir / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ctl.example.com", "ctl-a.example.com"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert 'advertise = "ctl.example.com:7443"' in (data_dir / "controller.toml").read_text()

    for bad in ("ctl.example.com,", "ctl example.com", "user@ctl.example.com"):
        other = tmp_path / "other"
        _one_line(
            cli("fleetpatch", "controller", "init", "--data-dir", other, "--hostname", bad),
            2, "--hostname", "is not a host name",
        )  # fmt: skip
        assert not other.exists()


def test_serve_on_a_port_in_use(initialised):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "fleetpatch", "controller", "serve", "--data-dir", initialised.data_dir,
            "--listen", f"127.0.0.1:{port}",
        )  # fmt: skip
    _one_line(result, 2, "cannot listen on", str(port))


def test_serve_with_a_broken_settings_file(initialised):
    config = initialised.data_dir / "controller.toml"
    config.write_text(config.read_text().replace("jitter = 0.2", "jiter = 0.2"))
    result = cli("fleetpatch", "controller", "serve", "--data-dir", initialised.data_dir)
    _one_line(result, 2, "unknown key checkin.jiter")


def test_serve_on_a_database_a_newer_version_migrated(initialised):
    with initialised.database() as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('fleetpatch.controller', '0999_from_the_future', '2027-01-01')"
        )
    _one_line(initialised.serve_to_exit(), 2, "migrated by a newer fleetpatch",
              "0999_from_the_future unknown here; upgrade this controller")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--region", "EU West", "--ring", "1"], "region 'EU West'"),
        (["--region", "eu", "--ring", "100"], "ring 100 is out of range"),
        (["--region", "eu", "--ring", "1", "--ttl", "soon"], "'soon' is not a duration"),
        (["--region", "eu", "--ring", "1", "--label", "role"], "label 'role' is not KEY=VALUE"),
    ],
)
def test_token_create_with_bad_input(initialised, args, needle):
    result = cli("fleetpatch", "token", "create", *args, "--data-dir", initialised.data_dir)
    _one_line(result, 2, needle)


def test_token_create_with_zero_uses_is_refused_by_the_controller(controller):
    result = cli(
        "fleetpatch", "token", "create", "--region", "eu", "--ring", "0", "--uses", "0",
        "--data-dir", controller.data_dir,
    )  # fmt: skip
    _one_line(result, 2, "at least one use")


def test_unknown_host(controller):
    _one_line(
        cli("fleetpatch", "hosts", "show", "h-0123456789abcdef", "--data-dir", controller.data_dir),
        5, "no host 'h-0123456789abcdef'",
    )  # fmt: skip


def test_agent_without_enrollment(tmp_path):
    _one_line(
        cli("fleetpatch-agent", "run", "--once", "--state-dir", tmp_path / "none"),
        2, "does not exist",
    )  # fmt: skip
    _one_line(cli("fleetpatch-agent", "status", "--state-dir", tmp_path), 2, "holds no enrollment")


def test_agent_enroll_with_bad_input(controller, tmp_path):
    token = controller.token()
    base = ["fleetpatch-agent", "enroll", "--controller", controller.address,
            "--state-dir", tmp_path / "a"]  # fmt: skip
    _one_line(
        cli(*base, "--token", token, "--ca-cert", tmp_path / "missing.pem"),
        2, "cannot read --ca-cert",
    )  # fmt: skip
    _one_line(
        cli(*base, "--token", token, "--ca-cert", controller.data_dir / "controller.toml"),
        2, "is not a PEM certificate",
    )  # fmt: skip
    # Not a token at all: refused here, nothing sent (agent.cli._token).
    _one_line(
        cli(*base, "--token", "not-a-token", "--ca-cert", controller.data_dir / "ca.pem"),
        2, "--token does not hold an enrollment token: a token starts with 'fpt_'",
    )  # fmt: skip
    # Shaped like one, and not one: the controller refuses it.
    _one_line(
        cli(*base, "--token", "fpt_not-a-token", "--ca-cert", controller.data_dir / "ca.pem"),
        4, "malformed",
    )  # fmt: skip
    _one_line(
        cli(*base, "--token", token, "--ca-cert", controller.data_dir / "ca.pem",
            "--label", "Role=web"),
        2, "label key 'Role'",
    )  # fmt: skip
    # Addresses gRPC would dial as something else (443 for no port, 34463
    # for 99999, a name to resolve for bare IPv6): a bad flag, no token spent.
    for flags, needle in (
        (["--controller", "nowhere"], "--controller: 'nowhere' is not an address"),
        (["--controller", "127.0.0.1:99999"], "'127.0.0.1:99999' is not an address"),
        (["--controller", "::1:7443"], "'::1:7443' is not an address"),
        (["--controller", f"{controller.address},127.0.0.1:0"], "'127.0.0.1:0' is not an"),
        (["--controller", "127.0.0.1:65535"], "no port above it"),  # to enroll on
        (
            ["--controller", controller.address, "--enroll-address", "127.0.0.1"],
            "--enroll-address: '127.0.0.1' is not an address",
        ),
    ):
        _one_line(
            cli("fleetpatch-agent", "enroll", *flags, "--token", token,
                "--ca-cert", controller.data_dir / "ca.pem", "--state-dir", tmp_path / "b"),
            2, needle,
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_agent_with_a_broken_config(controller, tmp_path):
    state = tmp_path / "a"
    assert controller.enroll(state, controller.token()).returncode == 0
    config = state / "agent.toml"
    config.write_text(config.read_text() + "\n[extra]\n")
    _one_line(
        cli("fleetpatch-agent", "run", "--once", "--state-dir", state), 2, "extra: unknown table"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["fleetpatch", "--help"],
        ["fleetpatch", "controller", "init", "--help"],
        ["fleetpatch", "controller", "serve", "--help"],
        ["fleetpatch", "token", "create", "--help"],
        ["fleetpatch", "hosts", "list", "--help"],
        ["fleetpatch", "hosts", "revoke", "--help"],
        ["fleetpatch-agent", "--help"],
        ["fleetpatch-agent", "enroll", "--help"],
        ["fleetpatch-agent", "run", "--help"],
    ],
)
def test_every_command_explains_itself(argv):
    result = cli(*argv)
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 3


# -- broken local state: one line naming the file, exit 2 ----------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Iterator[tuple[Controller, Path]]:
    """A real controller and a state dir enrolled with it that has checked
    in once (its journal holds something); tests damage copies of it."""
    root = tmp_path_factory.mktemp("pristine")
    ctl = Controller(root / "ctl")
    ctl.init()
    ctl.start()
    try:
        state = root / "state"
        ok(*_enroll_argv(ctl, state))
        ok("fleetpatch-agent", "run", "--once", "--state-dir", state)
        yield ctl, state
    finally:
        ctl.stop()


def _enroll_argv(ctl: Controller, state: Path) -> list[str | Path]:
    return ["fleetpatch-agent", "enroll", "--controller", ctl.address, "--token", ctl.token(),
            "--ca-cert", ctl.data_dir / "ca.pem", "--state-dir", state]  # fmt: skip


def _files(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*") if p.is_file()}


def _other_pem(kind: str) -> bytes:
    """A well-formed key or certificate that is not this host's."""
    key = ec.generate_private_key(ec.SECP256R1())
    if kind == "key":
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


MISSING = None
DAMAGE = [
    ("key.pem", MISSING, "key.pem is missing"),
    ("key.pem", b"", "key.pem is empty"),  # grpc aborted the process (SIGABRT)
    ("key.pem", GARBLED_KEY, "key.pem is not a PEM private key"),  # was exit 3 "cannot reach"
    ("key.pem", "other key", "key.pem is not the key of"),
    ("cert.pem", MISSING, "cert.pem is missing"),
    ("cert.pem", b"", "cert.pem is empty"),
    ("cert.pem", GARBLED_CERT, "cert.pem is not a PEM certificate"),
    ("ca.pem", MISSING, "ca.pem is missing"),
    ("ca.pem", b"\n", "ca.pem is empty"),
    ("ca.pem", b"not a certificate", "ca.pem is not a PEM certificate"),
    ("ca.pem", "other cert", "cert.pem was not issued by the CA pinned in"),
    ("trusted_keys.json", MISSING, "trusted_keys.json is missing"),
    ("trusted_keys.json", b"", "trusted_keys.json is empty"),
    ("trusted_keys.json", b"{}", "trusted_keys.json is damaged"),
    ("trusted_keys.json", b'{"k": "not hex"}', "trusted_keys.json is damaged"),
    ("journal.db", MISSING, "journal.db is missing"),
    ("journal.db", b"", "journal.db is empty"),
    ("journal.db", b"this is not a database, it was overwritten", "journal.db is damaged"),
    ("agent.toml", MISSING, "agent.toml is missing"),
    ("agent.toml", b"", "agent.toml is empty"),
]
ORDER = b'{"payload": "eA==", "signature": "eA==", "keyId": "k"}'
COMMANDS = [["status"], ["run", "--once"], ["apply", "--offline", "ORDER"]]


def _command(command: list[str], tmp_path: Path) -> list[str | Path]:
    order = tmp_path / "order.json"
    order.write_bytes(ORDER)
    return [order if arg == "ORDER" else arg for arg in command]


@pytest.mark.parametrize(("damaged", "content", "needle"), DAMAGE)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_agent_with_damaged_local_state_says_which_file(
    pristine, tmp_path, damaged, content, needle, command
):
    """One line naming the file and what to do, exit 2: no traceback, no
    abort inside grpc, not a network error; and nothing written."""
    _, source = pristine
    state = tmp_path / "state"
    shutil.copytree(source, state)
    target = state / damaged
    if content is MISSING:
        target.unlink()
    elif isinstance(content, str):
        target.write_bytes(_other_pem(content.split()[-1]))
    else:
        target.write_bytes(content)
    for suffix in ("-wal", "-shm"):
        (state / f"{damaged}{suffix}").unlink(missing_ok=True)
    before = _files(state)
    result = cli("fleetpatch-agent", *_command(command, tmp_path), "--state-dir", state)
    _one_line(result, 2, needle, str(state / damaged))
    if content is not MISSING and damaged != "agent.toml":
        assert "enroll this host again" in result.stderr
    assert _files(state) == before


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_agent_on_a_read_only_state_dir(pristine, tmp_path, command):
    _, source = pristine
    state = tmp_path / "state"
    shutil.copytree(source, state)
    before = _files(state)
    with mounts.read_only(state):
        result = cli("fleetpatch-agent", *_command(command, tmp_path), "--state-dir", state)
    _one_line(result, 2, str(state / "journal.db"), "read-only filesystem: remount it read-write")
    assert _files(state) == before


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_agent_on_a_full_state_dir(pristine, tmp_path, command):
    _, source = pristine
    with mounts.full_copy(source, tmp_path / "fs") as state:
        before = _files(state)
        result = cli("fleetpatch-agent", *_command(command, tmp_path), "--state-dir", state)
        _one_line(result, 2, str(state), "no space left", "free some space")
        after = _files(state)
        # With room again, the journal opens and holds what it held:
        # nothing half-written.
        (tmp_path / "fs" / "filler").unlink()
        journal = Journal.open(state / "journal.db", must_exist=True)
        try:
            assert journal.checkin_state().last_success is not None
        finally:
            journal.close()
    assert {k: v for k, v in after.items() if not k.startswith("journal.db")} == {
        k: v for k, v in before.items() if not k.startswith("journal.db")
    }


@pytest.mark.parametrize(
    "command", [["run", "--once"], ["apply", "ORDER"], ["enroll", "--controller", "c:1",
                "--token", "t", "--ca-cert", "ca.pem"]], ids=lambda c: c[0],
)  # fmt: skip
def test_agent_commands_that_need_root_say_so(tmp_path, command):
    """As another user: one line, exit 2, before anything is read."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run the agent as another user")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run(
        [*nobody, str(BIN / "fleetpatch-agent"), *map(str, _command(command, tmp_path)),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    _one_line(Result(done.returncode, done.stdout, done.stderr), 2, "must run as root")
    assert not (tmp_path / "state").exists()


def test_agent_files_have_their_modes_whatever_the_umask(controller, tmp_path):
    """umask 000: the state dir is 0700, the key and the journal (with its
    WAL and shared memory) 0600, nothing is writable by others."""
    state = tmp_path / "state"

    def agent(*args: str | Path) -> None:
        done = subprocess.run(
            [str(BIN / "fleetpatch-agent"), *map(str, args)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            umask=0, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    agent(*_enroll_argv(controller, state)[1:])
    # An open connection keeps -wal and -shm (SQLite gives them the
    # journal's mode); ours is opened with the same umask.
    old = os.umask(0)
    try:
        journal = Journal.open(state / "journal.db", must_exist=True)
    finally:
        os.umask(old)
    try:
        agent("run", "--once", "--state-dir", state)
        modes = {str(p.relative_to(state)): stat.S_IMODE(p.stat().st_mode)
                 for p in [state, *state.rglob("*")]}  # fmt: skip
    finally:
        journal.close()
    assert modes.pop(".") == 0o700
    for private in ("key.pem", "journal.db", "journal.db-wal", "journal.db-shm"):
        assert modes.pop(private) == 0o600, private
    assert modes.pop("cache") == 0o700
    for name, mode in modes.items():
        assert mode in (0o644, 0o600), (name, oct(mode))


# -- the command line itself: one line per usage error, help as written ---------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["fleetpatch", "token", "create", "--region", "eu", "--ring", "abc"],
         ["fleetpatch token create: error:", "'abc' is not a valid integer",
          "--ring takes INTEGER", "Ring (canary wave)"]),
        (["fleetpatch", "token", "create", "--ring", "1"],
         ["missing option '--region'", "--region takes TEXT"]),
        (["fleetpatch", "hosts", "list", "--bogus"], ["no such option '--bogus'"]),
        (["fleetpatch", "hosts", "show"], ["missing argument 'HOST_ID'"]),
        (["fleetpatch", "hosts", "nope"], ["no such command 'nope'"]),
        (["fleetpatch", "campaign", "watch", "c-1", "--interval", "soon"],
         ["--interval takes FLOAT"]),
        (["fleetpatch-agent", "run", "--bogus"], ["fleetpatch-agent run: error:", "--bogus"]),
        (["fleetpatch-sim", "rehearse", "--seed", "x"], ["--seed takes INTEGER"]),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_naming_the_option(argv, needles):
    result = cli(*argv)
    _one_line(result, 2, *needles)
    assert not set(result.stderr) & set("╭╮╰╯│─"), result.stderr  # no Rich box
    assert "Input should be" not in result.stderr  # no pydantic wording


@pytest.mark.parametrize(
    ("argv", "typo", "nearest"),
    [
        (["fleetpatch", "host", "list"], "host", "hosts"),
        (["fleetpatch", "hosts", "lst"], "lst", "list"),
        (["fleetpatch-agent", "stats"], "stats", "status"),
    ],
)
def test_a_mistyped_command_is_answered_with_the_nearest_once(argv, typo, nearest):
    result = cli(*argv)
    _one_line(result, 2, f"no such command '{typo}'", f"Did you mean '{nearest}'")
    assert result.stderr.lower().count("did you mean") == 1, result.stderr


@pytest.mark.parametrize(
    ("argv", "written"),
    [
        (["fleetpatch", "controller", "serve", "--help"], "Override [server] listen"),
        (["fleetpatch", "campaign", "rehearse", "--help"], "Scenario-style [failures] file"),
        (["fleetpatch-agent", "check", "--help"], "agent.toml [[checks]]"),
        (
            ["fleetpatch", "campaign", "pause", "--help"],
            "CAMPAIGN_ID Campaign id, as `campaign list` shows it.",
        ),
    ],
)
def test_help_shows_brackets_as_written(argv, written):
    result = cli(*argv)
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert written in flat, result.stdout
    assert "<bool>" not in result.stdout
    assert not set(result.stdout) & set("╭╮╰╯│"), result.stdout


def test_a_bare_command_group_prints_its_help_and_exits_2():
    result = cli("fleetpatch", "hosts")
    assert result.returncode == 2
    assert "Usage: fleetpatch hosts" in result.stderr
    assert "revoke" in result.stderr


# -- TLS trust: a configuration error (7), not an outage (3) ------------------------


def test_a_controller_our_ca_does_not_vouch_for_is_a_trust_failure(controller, tmp_path):
    other = Controller(tmp_path / "other")
    other.init()  # another CA: its admin CLI pointed at our controller
    result = cli("fleetpatch", "hosts", "list", "--data-dir", other.data_dir,
                 "--controller", controller.address)  # fmt: skip
    _one_line(result, 7, "TLS trust fails", "certificate our CA does not verify",
              str(other.data_dir / "ca.pem"))  # fmt: skip


def test_an_admin_certificate_the_controller_refuses_is_a_trust_failure(controller, tmp_path):
    other = Controller(tmp_path / "other")
    other.init()
    mixed = tmp_path / "mixed"  # the right CA, an admin certificate of another CA
    shutil.copytree(other.data_dir, mixed)
    shutil.copy(controller.data_dir / "ca.pem", mixed / "ca.pem")
    result = cli("fleetpatch", "token", "list", "--data-dir", mixed,
                 "--controller", controller.address)  # fmt: skip
    _one_line(result, 7, "TLS trust fails", "refuses our certificate")


@pytest.mark.parametrize(
    ("argv", "codes"),
    [
        (["fleetpatch", "campaign", "pause", "--help"], ["0 success", "6 conflicts", "7 TLS"]),
        (["fleetpatch", "hosts", "revoke", "--help"], ["3 the controller cannot be reached"]),
        (["fleetpatch", "release", "list", "--help"], ["5 not found"]),
        (["fleetpatch-agent", "enroll", "--help"], ["7 TLS trust fails", "4 refused"]),
    ],
)
def test_every_command_lists_its_exit_codes(argv, codes):
    result = cli(*argv)
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "Exit codes:" in flat
    for code in codes:
        assert code in flat, result.stdout
