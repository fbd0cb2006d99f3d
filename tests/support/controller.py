"""A real controller process and the real CLIs, for integration tests.

Everything runs as the user would run it: the console scripts of the
project's venv, a controller listening on loopback with real TLS, a real
SQLite file (or, given a store URL, a real PostgreSQL database).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from controller.store import Store
from controller.store.dialect import Connection
from tests.support.waiting import scaled

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nobody listens on now, with the next one free too (for the
    enrollment listener), from this test process's own block (`_port_block`)."""
    block = _port_block()
    for _ in range(len(block)):
        port = block[next(_turn) % len(block)]
        if _bindable(port) and _bindable(port + 1):
            return port
    for _ in range(50):  # no block here: one the kernel picks
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65535 and _bindable(port + 1):
            return port
    raise RuntimeError("no pair of free ports on loopback")


def _port_block() -> range:
    """Ports outside the kernel's ephemeral range, where no outgoing
    connection's source port can land between the pick and the server's
    bind (as a port the kernel picks, bound and closed, could), split
    between the pytest-xdist workers, so that two never pick the same.
    Empty where that range leaves no room."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's defaults
    first, end = (10_000, low) if low >= 12_000 else (high + 1, 65_535)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = max(end - first, 0) // max(workers, 1)
    return range(first + worker * size, first + (worker + 1) * size - 1, 2)


# Where in its block this process picks next: a start of its own, so that
# a session after another does not go over the same ports first.
_turn = itertools.count(os.getpid())


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run `fleetpatch` or `fleetpatch-agent` (the first arg) from the venv."""
    argv = [str(BIN / str(args[0])), *(str(a) for a in args[1:])]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def ok(*args: str | Path) -> Result:
    """Run a CLI that must succeed; fail the test with its output if not."""
    result = cli(*args)
    if result.returncode != 0:
        raise AssertionError(
            f"{args} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def in_process(*args: str | Path) -> Result:
    """Run `fleetpatch` (the first arg) in this process, through the entry
    point its console script calls (controller.cli.main.main), with its
    output captured; fail the test with it, as `ok` does, if it does not
    exit 0. For commands that only write files (`controller init`): one that
    starts threads, event loops or logging would leave them in the tests'
    process."""
    from controller.cli.main import main

    assert args[0] == "fleetpatch", args
    out, err = io.StringIO(), io.StringIO()
    argv = [str(BIN / "fleetpatch"), *(str(a) for a in args[1:])]
    code: object = 0
    with (
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    if code not in (0, None):
        raise AssertionError(
            f"{args} exited {code}\nstdout: {out.getvalue()}\nstderr: {err.getvalue()}"
        )
    return Result(0, out.getvalue(), err.getvalue())


class Controller:
    """`fleetpatch controller serve` on loopback, with a data dir of its own."""

    def __init__(
        self, data_dir: Path, port: int | None = None, store_url: str = "", host: str = "127.0.0.1"
    ) -> None:
        self.data_dir = data_dir
        self.listen_host = host  # the loopback address it listens on (all of 127/8 is loopback)
        self.port = port or free_port()
        self.store_url = store_url  # empty: SQLite in the data dir
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    @property
    def enroll_address(self) -> str:
        return f"{self.listen_host}:{self.port + 1}"

    def init(
        self, interval: str = "30s", *, console: bool = False, hostname: str = "localhost"
    ) -> None:
        """`fleetpatch controller init` into the data dir: a CA, keys and a
        database of this controller's own. By default the console script's
        entry point runs in this process (`in_process`): the same command
        line and code, without the imports a new interpreter pays (about
        0.6 s quiet, 1 s with the suite's load), which some 160 controllers
        a session would pay each. ``console``:
        the console script in a process of its own, as a user runs it (the
        e2e fleet's controller is made so). ``hostname``: the names its server
        certificate covers (`init --hostname`, comma-separated)."""
        argv = (
            "fleetpatch", "controller", "init", "--data-dir", self.data_dir,
            "--hostname", hostname, "--listen", self.address, "--checkin-interval", interval,
        )  # fmt: skip
        if console:
            ok(*argv)
        else:
            in_process(*argv)
        if self.store_url:
            config = self.data_dir / "controller.toml"
            text = config.read_text()
            assert '\nurl = ""\n' in text, "the template's [store] url moved"
            config.write_text(
                text.replace('\nurl = ""\n', f"\nurl = {json.dumps(self.store_url)}\n", 1)
            )

    @contextmanager
    def database(self) -> Iterator[Connection]:
        """A connection to the controller's database, whichever it is, behind
        its back (SQL in the store's dialect, controller/store/dialect.py)."""
        store = (
            Store.connect(self.store_url) if self.store_url
            else Store.open(self.data_dir / "controller.db")
        )  # fmt: skip
        try:
            yield store._conn
        finally:
            store.close()

    def open_store(self) -> Store:
        """The controller's store, opened here (close it after)."""
        if self.store_url:
            return Store.connect(self.store_url)
        return Store.open(self.data_dir / "controller.db")

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "fleetpatch"), "controller", "serve", "--data-dir", str(self.data_dir),
                 "--listen", self.address],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
        deadline = time.monotonic() + scaled(60)
        endpoints = self.data_dir / "endpoints.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited early:\n{self.log.read_text()}")
            try:
                if json.loads(endpoints.read_text())["pid"] == self.proc.pid:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"controller did not start:\n{self.log.read_text()}")

    def serve_to_exit(self, timeout: float = 60) -> Result:
        """`serve` expected to stop by itself (a refusal at start)."""
        return cli("fleetpatch", "controller", "serve", "--data-dir", self.data_dir,
                   "--listen", self.address, timeout=timeout)  # fmt: skip

    def stop(self) -> int:
        """SIGTERM, as systemd would; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def admin(self, *args: str | Path) -> Result:
        return ok("fleetpatch", *args, "--data-dir", self.data_dir)

    def admin_json(self, *args: str | Path) -> object:
        return json.loads(self.admin(*args, "--json").stdout)

    def token(self, region: str = "eu-west", ring: int = 1, uses: int = 5, ttl: str = "1h") -> str:
        out = self.admin(
            "token", "create", "--region", region, "--ring", str(ring), "--uses", str(uses),
            "--ttl", ttl,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def enroll(self, state_dir: Path, token: str, *labels: str) -> Result:
        label_args: list[str] = []
        for label in labels:
            label_args += ["--label", label]
        return cli(
            "fleetpatch-agent", "enroll", "--controller", self.address, "--token", token,
            "--ca-cert", self.data_dir / "ca.pem", "--state-dir", state_dir, *label_args,
        )  # fmt: skip

    def host(self, host_id: str) -> dict[str, object]:
        doc = self.admin_json("hosts", "show", host_id)
        assert isinstance(doc, dict)
        return doc
