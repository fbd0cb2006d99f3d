"""`fleetpatch-agent run`: the daemon, and the console entry point.

The daemon lives for months on every host, so its memory counts (issue 18:
at most 40 MiB idle). The command-line framework (typer, click) is needed
to parse and explain the other verbs, not to run: `main` recognises the
service's own command line (`run` with only --state-dir, --once, --verbose)
and starts the daemon without importing agent.cli; anything else (--help, a
typo, another verb) goes to the full CLI, which parses and words errors as
before. tests/unit/test_daemon.py holds this parser to the CLI's `run`
options, so the two cannot drift.

Nor does the idle daemon load cryptography (about 12 MiB): it checks its
key and certificates at start-up in a short-lived child (agent.preflight),
and imports cryptography only when an order, a new key or CA, or a
certificate renewal needs it. Nor OpenSSL or grpc.aio (`lean_imports`), nor
the order runner until an order needs it (`service.Agent.runner`).
tests/unit/test_daemon.py fails when its start-up and check-ins load any
of these, or the other modules kept out, again.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fleetpatch import logline

from agent.errors import STORAGE_ERRNOS, AgentError, ConfigError, StateDirError, storage_error
from agent.leanimports import lean_imports

log = logging.getLogger("agent")

#: What `run` takes (agent.cli's options of the same names).
STATE_DIR_OPTION = "--state-dir"
STATE_DIR_ENV = "FLEETPATCH_AGENT_STATE_DIR"
FLAGS = {"--once": "once", "--verbose": "verbose", "-v": "verbose"}


def setup_logging(verbose: bool) -> None:
    logline.setup(logging.DEBUG if verbose else logging.INFO)


def require_root(command: str) -> None:
    """Commands that install packages or own the state dir need root: say
    so in one line (exit 2) rather than failing later on a permission."""
    if os.geteuid() != 0:
        raise ConfigError(
            f"`fleetpatch-agent {command}` must run as root: it changes packages and "
            f"writes the agent's state dir (try: sudo fleetpatch-agent {command})"
        )


def run(state_dir: Path, once: bool = False, verbose: bool = False) -> None:
    """Check in and carry out work orders, once or until SIGTERM; orders
    interrupted by a crash or reboot are finished first. Raises AgentError
    (and HandOver when a new version of the agent takes over)."""
    from agent.link.checkin import CheckIns
    from agent.link.keys import learn_announced
    from agent.link.renewal import Renewal
    from agent.link.watch import Watcher
    from agent.preflight import in_child
    from agent.service import Agent
    from agent.statedir import StateDir, settings_for

    require_root("run")
    setup_logging(verbose)
    # The state dir's key and certificates are checked in a child process,
    # which loads cryptography so that the daemon need not (agent.preflight).
    state = StateDir(state_dir, settings_for(state_dir))
    state.require_enrolled()
    # Held until the process ends. The service waits for an enroll or an
    # apply at work here (it must not end for it: exit 2 is not restarted);
    # a --once run by hand beside the service is refused.
    state.hold(wait=not once)
    agent = Agent.open(state, online=True, check=in_child)
    assert agent.client is not None  # noqa: S101 - opened online
    checkins = CheckIns(
        agent.config, agent.journal, agent.client, on_order=agent.handle, between=agent.between,
        on_keys=lambda answer: learn_announced(agent.state, answer), after=agent.write_metrics,
        renewal=Renewal(agent.state, agent.client),
    )  # fmt: skip
    try:
        agent.resume()
        if once:
            report = checkins.once()
            print(
                f"checked in as {agent.host_id}: "
                f"{'inventory sent' if report.inventory_sent else 'inventory unchanged'} "
                f"({report.package_count} packages), "
                f"{'healthy' if report.healthy else 'UNHEALTHY'}, "
                f"next check-in in {report.next_in.total_seconds():.0f}s"
            )
            if report.work_order is not None:
                final = agent.handle(report.work_order)
                print(f"work order: {final or 'refused'}")
            agent.report()
            return
        stop, wake = threading.Event(), threading.Event()
        watcher = Watcher(agent.client, wake, stop)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping after the current step", signal.Signals(signum).name)
            stop.set()
            wake.set()
            watcher.close()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("agent %s running; controller %s", agent.host_id, agent.client.address)
        # Push: nudges bring check-ins forward; polling stays the fallback.
        watcher.start()
        try:
            checkins.run(stop, wake)
        finally:
            stop.set()
            watcher.close()
    finally:
        agent.close()


def exit_on_error(call: Callable[[], None]) -> None:
    """Run a command: one clear line and an exit code for every error."""
    from agent.orders.handover import HandOver

    try:
        call()
    except AgentError as exc:
        print(f"fleetpatch-agent: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A write outside the journal and the state files (which name
        # their file themselves): a package cache, say. Only where the
        # filesystem is the cause; anything else is a bug and shows its
        # traceback.
        if exc.errno not in STORAGE_ERRNOS or exc.filename is None:
            raise
        error = storage_error(Path(exc.filename), exc) or StateDirError(str(exc))
        print(f"fleetpatch-agent: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except HandOver as exc:
        # Not an error: a new version of the agent is installed and carries
        # on (systemd starts it: the package's restart, or Restart=always).
        print(f"fleetpatch-agent: {exc}", file=sys.stderr)
        sys.exit(0)


@dataclass(frozen=True)
class RunArgs:
    state_dir: Path
    once: bool = False
    verbose: bool = False


def parse_run(argv: Sequence[str], environ: dict[str, str] | None = None) -> RunArgs | None:
    """The arguments of a plain `run` command line (as the unit runs it),
    or None for anything else: the full CLI parses that (and explains it)."""
    words = _run_words(argv)
    if words is None:
        return None
    from agent.statedir import DEFAULT_STATE_DIR

    state_dir, seen = words
    env = os.environ if environ is None else environ
    chosen = state_dir or env.get(STATE_DIR_ENV) or str(DEFAULT_STATE_DIR)
    return RunArgs(Path(chosen), once=seen.get("once", False), verbose=seen.get("verbose", False))


def _run_words(argv: Sequence[str]) -> tuple[str | None, dict[str, bool]] | None:
    """The state dir given (or None) and the flags of a plain `run`
    command line, or None for anything else; imports nothing."""
    if not argv or argv[0] != "run":
        return None
    state_dir: str | None = None
    seen: dict[str, bool] = {}
    rest = list(argv[1:])
    while rest:
        word = rest.pop(0)
        if word in FLAGS and FLAGS[word] not in seen:
            seen[FLAGS[word]] = True
        elif word == STATE_DIR_OPTION and rest and state_dir is None:
            state_dir = rest.pop(0)
        elif word.startswith(STATE_DIR_OPTION + "=") and state_dir is None:
            state_dir = word.split("=", 1)[1]
        else:
            return None
    if state_dir == "" or (state_dir is not None and state_dir.startswith("-")):
        return None  # the full CLI says what is wrong with it
    return state_dir, seen


def run_optimized() -> None:
    """Start the daemon again, with the same command line, under `python
    -OO`, unless it runs so already, or this Python's standard library
    comes without -OO bytecode (the daemon's start-up, first).

    A daemon that lives for months needs neither docstrings nor asserts:
    without them the idle agent holds about 0.8 MiB less (the docstrings of
    grpcio, asyncio, protobuf and its own; benchmarks/agent_footprint.py).
    The same process (exec keeps its pid, so systemd sees no change); the
    children it starts are plain Python again, and the packages compile the
    -OO bytecode of their own venv at install, as they do the plain one.
    Where exec fails, the daemon runs as it was started."""
    if sys.flags.optimize >= 2 or not sys.executable or not sys.orig_argv:
        return
    if not stdlib_has_optimized_bytecode():
        return
    try:
        os.execv(sys.executable, [sys.executable, "-OO", *sys.orig_argv[1:]])  # noqa: S606 - argv
    except OSError:
        return


def stdlib_has_optimized_bytecode(stdlib: str | None = None) -> bool:
    """Whether this Python's standard library was installed with its -OO
    bytecode, as CPython's own `make install` (python.org, pyenv) does.

    Debian's and Ubuntu's Python ship only the plain bytecode: under -OO
    the daemon would compile some 150 standard modules from source at
    every start (2.7 MiB more at idle, measured, not 0.8 less), or as root
    write their bytecode into /usr/lib, which is not the agent's to write.
    So there it runs as started. One file stands for the library."""
    directory = os.path.join(stdlib or os.path.dirname(os.__file__), "asyncio", "__pycache__")
    name = f"base_events.{sys.implementation.cache_tag}.opt-2.pyc"
    return os.path.isfile(os.path.join(directory, name))


def main() -> None:
    """Console entry point of `fleetpatch-agent`."""
    if _run_words(sys.argv[1:]) is not None:
        run_optimized()
        lean_imports()  # first: the daemon's modules import hashlib
    args = parse_run(sys.argv[1:])
    if args is None:
        from agent.cli import main as cli_main

        cli_main()
        return
    exit_on_error(lambda: run(args.state_dir, once=args.once, verbose=args.verbose))
