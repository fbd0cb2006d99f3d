"""What the real console scripts do when their output cannot be written,
and with input no valid one resembles: one line and the documented exit
code, never a traceback nor Python's "Exception ignored" lines.

- A reader that stops reading (`| head`, `| true`): exit 0, not a word.
- A full disk (/dev/full): `cannot write the output: No space left on
  device`, exit 1.
- A closed standard output (`>&-`): one line, exit 1.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from fleetpatch.v1 import admin_pb2, admin_pb2_grpc

from controller.cli.admin_client import _credentials
from controller.datadir import DataDir
from controller.fleet.tokens import new_token
from controller.store import inventory_blob
from tests.support import mounts
from tests.support.controller import BIN, Controller, Result, cli
from tests.support.engine import host_row
from tests.support.waiting import scaled

FULL = "cannot write the output: No space left on device"
CLOSED = "cannot write the output: standard output is closed"
LONG_ID = "a" * 20000


def _writing(mode: str, *args: str | Path, buffered: bool = True) -> Result:
    """Run a console script (the first arg) with its standard output a
    pipe nobody reads ("gone"), /dev/full ("full"), or closed ("closed");
    its standard error captured."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    argv = [str(BIN / str(args[0])), *(str(a) for a in args[1:])]

    def run(**stdout: object) -> Result:
        done = subprocess.run(
            argv, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL,
            timeout=scaled(120), check=False, **stdout,  # type: ignore[call-overload]
        )  # fmt: skip
        return Result(done.returncode, "", done.stderr)

    if mode == "gone":
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first byte
        with os.fdopen(write, "wb") as out:
            return run(stdout=out)
    if mode == "full":
        with open("/dev/full", "wb") as out:
            return run(stdout=out)
    return run(preexec_fn=lambda: os.close(1))


def _said(result: Result, mode: str, prog: str = "fleetpatch") -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    if mode == "gone":
        assert (result.returncode, result.stderr) == (0, "")
    else:
        line = f"{prog}: error: {FULL if mode == 'full' else CLOSED}\n"
        assert (result.returncode, result.stderr) == (1, line)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("mode", ["gone", "full", "closed"])
@pytest.mark.parametrize(
    "argv",
    [
        ("fleetpatch", "--help"),
        ("fleetpatch", "hosts", "list", "--help"),
        ("fleetpatch-agent", "--help"),
        ("fleetpatch-sim", "--help"),
    ],
)
def test_help_that_cannot_be_written(argv, mode, buffered):
    # `--help | true` was a silent exit 1; /dev/full a traceback
    _said(_writing(mode, *argv, buffered=buffered), mode, argv[0])


@pytest.mark.parametrize("mode", ["gone", "full", "closed"])
def test_a_local_command_whose_output_cannot_be_written(tmp_path, mode):
    result = _writing(
        mode, "fleetpatch", "controller", "init", "--data-dir", tmp_path / "ctl",
        "--hostname", "localhost", "--listen", "127.0.0.1:1",
    )  # fmt: skip
    _said(result, mode)
    assert (tmp_path / "ctl" / "ca.pem").exists()  # done; only its report was lost


def test_a_controllers_answers_that_cannot_be_written(controller):
    data_dir = controller.data_dir
    for argv in (("hosts", "list"), ("hosts", "list", "--json"), ("token", "list", "--json"),
                 ("audit", "export"), ("audit", "checkpoint")):  # fmt: skip
        for mode in ("gone", "full", "closed"):
            result = _writing(mode, "fleetpatch", *argv, "--data-dir", data_dir)
            if argv == ("hosts", "list") and mode != "full":
                # said on stderr once its (empty) table has been written
                result.stderr = result.stderr.replace("no hosts enrolled\n", "")
            try:
                _said(result, mode)
            except AssertionError as exc:
                raise AssertionError(f"{argv} {mode}: {exc}") from None


# -- ids longer than any ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (("hosts", "show"), "host id"),
        (("hosts", "revoke"), "host id"),
        (("campaign", "show"), "campaign id"),
        (("campaign", "approve"), "campaign id"),
        (("token", "revoke"), "token id"),
    ],
)
def test_an_id_longer_than_any_is_refused_in_one_short_line(controller, argv, what):
    # was: exit 3, "Stream removed (received metadata size exceeds hard limit ...)"
    result = cli("fleetpatch", *argv, LONG_ID, "--data-dir", controller.data_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert len(result.stderr) < 300, result.stderr
    assert f"{what} 'aaaa" in result.stderr
    assert "20000 characters long" in result.stderr


def test_the_controller_quotes_no_peers_id_unbounded(controller):
    """Asked directly (another client than the CLI), the controller says
    "not found" quoting only the start of the id, in its answer and in its
    log."""
    creds = grpc.ssl_channel_credentials(*_credentials(DataDir.at(controller.data_dir)))
    with grpc.secure_channel(controller.address, creds) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for call in (
            lambda: stub.GetHost(admin_pb2.GetHostRequest(host_id=LONG_ID), timeout=30),
            lambda: stub.RevokeToken(admin_pb2.RevokeTokenRequest(token_id=LONG_ID), timeout=30),
            lambda: stub.GetCampaign(admin_pb2.CampaignRequest(campaign_id=LONG_ID), timeout=30),
            lambda: stub.RevokeAdmin(admin_pb2.RevokeAdminRequest(name=LONG_ID), timeout=30),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            details = refused.value.details() or ""
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND, details
            assert len(details) < 150, details
            assert details.endswith("aaa...'"), details
    longest = max(len(line) for line in controller.log.read_text().splitlines())
    assert longest < 1000


# -- credentials, numbers -------------------------------------------------------------


def test_an_admin_key_that_is_not_the_certificates_is_one_line(tmp_path):
    # was: six lines of gRPC's core ("Invalid private key."), then exit 7,
    # "TLS trust fails", blaming the controller
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    (ctl.data_dir / "admin.key").write_bytes((ctl.data_dir / "server.key").read_bytes())
    result = cli("fleetpatch", "token", "list", "--data-dir", ctl.data_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"fleetpatch: error: the data dir's admin key {ctl.data_dir / 'admin.key'} does not "
        f"belong to its certificate {ctl.data_dir / 'admin.pem'} (put back the key made with "
        "it, or restore both)\n"
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("hosts", "list", "--ring", "4294967296"), "ring 4294967296 is out of range (0-99)"),
        (("hosts", "list", "--ring", "-1"), "ring -1 is out of range (0-99)"),
        (("vulns", "list", "--ring", "2147483648"), "'--ring': 2147483648 is not in the range"),
        (("vulns", "list", "--ring", "-1"), "'--ring': -1 is not in the range"),
    ],
)
def test_a_ring_no_host_can_be_in_is_refused_naming_it(tmp_path, argv, needle):
    # was: a protobuf ValueError's traceback ("Value out of range")
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    result = cli("fleetpatch", *argv, "--data-dir", ctl.data_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr
    assert "--ring" in result.stderr


def test_the_cli_reads_a_host_larger_than_grpcs_default_limit(controller):
    """A host whose inventory makes its answer over 4 MiB, gRPC's default
    receive limit, which the CLI kept while the controller takes 16 MiB
    check-ins: `hosts show` said "retry later" (exit 3) for ever."""
    now = datetime.now(UTC)
    token, _ = new_token("eu", 0, 1, timedelta(days=1), {}, now)
    packages = [(f"package-{i:05d}-{'x' * 60}", f"1.0-{'y' * 30}", "amd64") for i in range(50_000)]
    store = controller.open_store()
    try:
        store.create_token(token)
        store.enroll_host(host_row("h-large", "eu", 0, now), token.token_id, now)
        store._conn.execute(  # autocommit
            "INSERT INTO inventories (host_id, hash, packages, updated_at) VALUES (?,?,?,?)",
            ("h-large", "sha256:large", inventory_blob(packages, {}), now.timestamp()),
        )
    finally:
        store.close()
    result = cli("fleetpatch", "hosts", "show", "h-large", "--json", "--data-dir",
                 controller.data_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["packages"]) == 50_000


def test_a_large_write_to_a_disk_that_fills_up_is_said_not_cut_short(tmp_path):
    """One write larger than Python's buffer, to a disk with less room:
    the file takes part of it, and BufferedWriter dropped the rest without
    an error (audit export to a full disk: a cut export, exit 0)."""
    program = (
        "import os, sys, typer\n"
        "from fleetpatch import cliapp\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def main() -> None:\n"
        "    sys.stdout.write('x' * int(os.environ['SIZE']))  # one write, the last\n"
        "cliapp.run(app, 'big')\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with mounts.full_copy(empty, tmp_path / "fs", size="64k") as disk:
        (tmp_path / "fs" / "filler").unlink()  # room for part of the output
        room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        # More than the room by less than a buffer: the rest was what got lost.
        size = room + 2000
        with open(disk / "out", "wb") as out:
            done = subprocess.run(
                [str(BIN / "python"), "-c", program], stdout=out, stderr=subprocess.PIPE,
                env={**os.environ, "SIZE": str(size)}, text=True, timeout=scaled(60),
                check=False,
            )  # fmt: skip
        written = (disk / "out").stat().st_size
    assert written < size
    assert (done.returncode, done.stderr) == (1, f"big: error: {FULL}\n")
