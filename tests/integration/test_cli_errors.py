"""User mistakes get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

import pytest

from tests.support.controller import Controller, Result, cli


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


def test_admin_command_with_the_controller_down(initialised):
    _one_line(
        cli("fleetpatch", "hosts", "list", "--data-dir", initialised.data_dir),
        3, "cannot reach the controller", initialised.address,
    )  # fmt: skip


def test_init_refuses_to_replace_a_ca(initialised):
    before = (initialised.data_dir / "ca.key").read_bytes()
    _one_line(
        cli("fleetpatch", "controller", "init", "--data-dir", initialised.data_dir,
            "--hostname", "localhost"),
        2, "already initialised",
    )  # fmt: skip
    assert (initialised.data_dir / "ca.key").read_bytes() == before


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
    _one_line(
        cli(*base, "--token", "not-a-token", "--ca-cert", controller.data_dir / "ca.pem"),
        4, "malformed",
    )  # fmt: skip
    _one_line(
        cli(*base, "--token", token, "--ca-cert", controller.data_dir / "ca.pem",
            "--label", "Role=web"),
        2, "label key 'Role'",
    )  # fmt: skip
    _one_line(
        cli("fleetpatch-agent", "enroll", "--controller", "nowhere", "--token", token,
            "--ca-cert", controller.data_dir / "ca.pem", "--state-dir", tmp_path / "b"),
        2, "is not HOST:PORT",
    )  # fmt: skip


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


@pytest.mark.parametrize(
    ("damaged", "content", "needle"),
    [
        ("journal.db", b"this is not a database, it was overwritten", "cannot open the journal"),
        ("cert.pem", b"-----BEGIN CERTIFICATE-----\ngarbage\n", "is not a PEM certificate"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["run", "--once"]])
def test_agent_with_damaged_local_state_says_which_file(
    controller, tmp_path, damaged, content, needle, command
):
    """Issue 12 item 6 (part): one line naming the file, exit 2, no traceback."""
    state = tmp_path / "a"
    assert controller.enroll(state, controller.token()).returncode == 0
    assert cli("fleetpatch-agent", "run", "--once", "--state-dir", state).returncode == 0
    (state / damaged).write_bytes(content)
    for suffix in ("-wal", "-shm"):
        (state / f"{damaged}{suffix}").unlink(missing_ok=True)
    _one_line(cli("fleetpatch-agent", *command, "--state-dir", state), 2, needle, damaged)
