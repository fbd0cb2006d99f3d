"""Bad input to `controller init`, `renew-server-cert`, `serve`, `campaign
plan` and `admin add`, as a person types it: one line naming the file or
option, the documented exit code, no traceback, and nothing half-done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import mounts
from tests.support.controller import Controller, Result, cli, ok


def _one_line(result: Result, code: int, *needles: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def initialised(tmp_path: Path) -> Controller:
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    return ctl


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--hostname", "ünïcode.example"], ["--hostname 'ünïcode.example'", "xn--"]),
        (["--hostname", "-oops"], ["--hostname '-oops' is not a host name"]),
        (["--hostname", "a" * 300], ["at most 253"]),
        (["--hostname", "localhost", "--checkin-interval", "0s"],
         ["--checkin-interval: checkin.interval must be at least 1s"]),
        (["--hostname", "localhost", "--listen", "127.0.0.1:65535"], ["--listen"]),
    ],
)  # fmt: skip
def test_init_with_what_serve_would_refuse_makes_nothing(tmp_path, args, needles):
    data_dir = tmp_path / "di"
    _one_line(cli("fleetpatch", "controller", "init", "--data-dir", data_dir, *args), 2, *needles)
    assert not data_dir.exists()


def test_init_writes_settings_serve_takes(tmp_path):
    ctl = Controller(tmp_path / "ctl")
    ctl.init(interval="1s")
    ctl.start()
    try:
        ctl.admin("hosts", "list")
    finally:
        assert ctl.stop() == 0


def test_renew_server_cert_for_a_name_no_certificate_holds(initialised):
    before = (initialised.data_dir / "server.pem").read_bytes()
    _one_line(
        cli("fleetpatch", "controller", "renew-server-cert", "--data-dir", initialised.data_dir,
            "--hostname", "localhost,ünï.example"),
        2, "--hostname 'ünï.example' is not a host name", "xn--",
    )  # fmt: skip
    assert (initialised.data_dir / "server.pem").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "damage", "needle"),
    [
        ("ca.key", b"", "ca.key is not an unencrypted PEM private key (damaged? restore it"),
        ("ca.key", None, "ca.key is not an unencrypted PEM private key (damaged? restore it"),
        ("ca.pem", None, "ca.pem is not a PEM certificate (damaged? restore it"),
        ("ca.key", "server.key", "ca.key is not the key of"),
    ],
)
def test_a_damaged_ca_stops_every_command_that_loads_it(initialised, name, damage, needle):
    path = initialised.data_dir / name
    if damage is None:  # truncated
        path.write_bytes(path.read_bytes()[:120])
    elif isinstance(damage, str):  # another file copied over it
        shutil.copy(initialised.data_dir / damage, path)
    else:
        path.write_bytes(damage)
    _one_line(initialised.serve_to_exit(), 2, needle)
    for command in (["renew-server-cert"], ["rotate-ca"]):
        _one_line(cli("fleetpatch", "controller", *command, "--data-dir", initialised.data_dir),
                  2, needle)  # fmt: skip
    assert not (initialised.data_dir / "ca-next.pem").exists()


def test_plan_with_a_bad_name_or_output(controller, tmp_path):
    base = ["fleetpatch", "campaign", "plan", "--cve", "CVE-2024-5535",
            "--data-dir", controller.data_dir]  # fmt: skip
    _one_line(cli(*base, "--name", "Bad Name"), 2, "--name 'Bad Name' must be lowercase")
    (tmp_path / "adir.toml").mkdir()
    _one_line(cli(*base, "--out", tmp_path / "adir.toml"), 2, "adir.toml is a directory")
    _one_line(cli(*base, "--out", tmp_path / "no" / "x.toml"), 2, "there is no directory")


def test_admin_add_into_an_out_dir_that_cannot_take_it_adds_nobody(controller, tmp_path):
    gina = tmp_path / "gina"
    (gina / "ca.pem").mkdir(parents=True)
    base = ["fleetpatch", "admin", "add", "gina", "--role", "viewer",
            "--data-dir", controller.data_dir]  # fmt: skip
    _one_line(cli(*base, "--out", gina), 2, f"--out {gina} already holds ca.pem")
    assert [p.name for p in gina.iterdir()] == ["ca.pem"]
    assert "gina" not in [a["name"] for a in controller.admin_json("admin", "list")]
    # Nothing to undo by hand: the same add into another dir succeeds.
    ok(*base, "--out", tmp_path / "gina2")
    assert sorted(p.name for p in (tmp_path / "gina2").iterdir()) == [
        "admin.key", "admin.pem", "ca.pem", "controller.toml",
    ]  # fmt: skip


def test_a_refused_admin_add_leaves_no_out_dir(controller, tmp_path):
    ok("fleetpatch", "admin", "add", "olive", "--role", "operator", "--out", tmp_path / "olive",
       "--data-dir", controller.data_dir)  # fmt: skip
    bad_csr = tmp_path / "bad.csr"
    bad_csr.write_text("not a request\n")
    refusals = [
        (["admin", "--role", "viewer", "--data-dir", controller.data_dir], 6),  # exists
        (["zed", "--role", "viewer", "--csr", bad_csr, "--data-dir", controller.data_dir], 2),
        (["zed", "--role", "viewer", "--data-dir", tmp_path / "olive"], 4),  # an operator asks
    ]
    for args, code in refusals:
        out = tmp_path / "made" / "here"
        _one_line(cli("fleetpatch", "admin", "add", *args, "--out", out), code)
        assert not (tmp_path / "made").exists(), args


@pytest.mark.parametrize("command", ["renew-server-cert", "rotate-key"])
def test_a_read_only_data_dir_is_one_line_naming_the_file(initialised: Controller, command):
    """Was an OSError traceback from the temporary file's creation."""
    data_dir = initialised.data_dir
    before = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    with mounts.read_only(data_dir):
        result = cli("fleetpatch", "controller", command, "--data-dir", data_dir)
    line = _one_line(result, 2, "Read-only file system")
    assert line.startswith(f"fleetpatch: error: cannot use {data_dir}/")
    assert ".tmp" not in line
    assert {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()} == before
