"""`fleetpatch-agent`: the host agent.

Exit codes: 0 success, 1 error, 2 bad usage, config or state dir,
3 transient (controller unreachable; retry later), 4 refused by the
controller (bad token, host revoked).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from fleetpatch import labels as labelspec
from fleetpatch import render
from fleetpatch.inventory import inventory_hash

from . import facts as hostfacts
from . import packages
from .checkin import CheckIns
from .client import ControllerClient
from .enrollment import enroll as do_enroll
from .errors import AgentError, ConfigError
from .health import ResourceLimits, resource_checks, summarize
from .journal import Journal
from .statedir import DEFAULT_STATE_DIR, StateDir

app = typer.Typer(
    help="fleetpatch agent: enrolls this host, reports inventory and health, "
    "applies signed work orders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="FLEETPATCH_AGENT_STATE_DIR",
        help="Agent state dir (key, certificates, journal, settings).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
log = logging.getLogger("agent")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def enroll(
    controller: Annotated[str, typer.Option(metavar="HOST:PORT", help="Controller address.")],
    token: Annotated[str, typer.Option(help="Enrollment token from `fleetpatch token create`.")],
    ca_cert: Annotated[
        Path, typer.Option(help="The controller's CA certificate (ca.pem); pinned from now on.")
    ],
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Label for this host (repeatable)."),
    ] = None,
    enroll_address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT", help="Enrollment address; default: the controller's port + 1."
        ),
    ] = None,
) -> None:
    """Join the fleet: make this host's key, get it certified, pin the CA and signing keys."""
    try:
        labels = labelspec.parse_labels(label or [])
    except ValueError as exc:
        raise ConfigError(f"--label: {exc}") from None
    done = do_enroll(StateDir(state_dir), controller, token, ca_cert, labels, enroll_address)
    print(f"enrolled as {done.host_id} (region {done.region}, ring {done.ring})")


def _open(state_dir: Path) -> tuple[StateDir, Journal]:
    state = StateDir(state_dir)
    state.require_enrolled()
    return state, Journal.open(state.journal)


def _client(state: StateDir) -> ControllerClient:
    config = state.config()
    return ControllerClient(
        config.controller, state.read(state.ca), state.read(state.key), state.read(state.cert)
    )


@app.command()
def run(
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    once: Annotated[
        bool, typer.Option("--once", help="Check in once; exit 0 only if it succeeded.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Check in with the controller: once, or until SIGTERM (as the service does)."""
    _setup_logging(verbose)
    state, journal = _open(state_dir)
    client = _client(state)
    checkins = CheckIns(state.config(), journal, client)
    try:
        if once:
            report = checkins.once()
            print(
                f"checked in as {state.host_id()}: "
                f"{'inventory sent' if report.inventory_sent else 'inventory unchanged'} "
                f"({report.package_count} packages), "
                f"{'healthy' if report.healthy else 'UNHEALTHY'}, "
                f"next check-in in {report.next_in.total_seconds():.0f}s"
            )
            return
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("agent %s running; controller %s", state.host_id(), client.address)
        checkins.run(stop)
    finally:
        client.close()
        journal.close()


@app.command()
def status(state_dir: StateDirOption = DEFAULT_STATE_DIR, json_out: JsonOption = False) -> None:
    """Show this host's enrollment and its last check-in."""
    state, journal = _open(state_dir)
    try:
        checkin = journal.checkin_state()
    finally:
        journal.close()
    config = state.config()
    doc = {
        "host_id": state.host_id(),
        "controller": config.controller,
        "last_checkin": checkin.last_success.isoformat() if checkin.last_success else None,
        "last_attempt": checkin.last_attempt.isoformat() if checkin.last_attempt else None,
        "last_error": checkin.last_error or None,
        "next_checkin": checkin.next_checkin.isoformat() if checkin.next_checkin else None,
        "acknowledged_inventory": checkin.acked_inventory_hash or None,
    }
    if json_out:
        render.print_json(doc)
        return
    now = datetime.now(UTC)
    print(f"host          {doc['host_id']}")
    print(f"controller    {config.controller}")
    print(f"last check-in {render.ago(checkin.last_success, now)}")
    if checkin.last_error:
        print(f"last error    {checkin.last_error} ({render.ago(checkin.last_attempt, now)})")
    if checkin.next_checkin:
        print(f"next check-in {checkin.next_checkin:%Y-%m-%d %H:%M:%SZ}")


@app.command()
def inventory(json_out: JsonOption = False) -> None:
    """Print what this host would report: facts and installed packages."""
    facts = hostfacts.collect()
    installed = packages.installed(facts.package_manager)
    if json_out:
        render.print_json(
            {
                "facts": dataclasses.asdict(facts),
                "inventory_hash": inventory_hash(installed),
                "packages": [{"name": n, "version": v, "arch": a} for n, v, a in installed],
            }
        )
        return
    for key, value in dataclasses.asdict(facts).items():
        print(f"{key:18} {value}")
    print(f"{'inventory':18} {inventory_hash(installed)} ({len(installed)} packages)")


@app.command()
def check(state_dir: StateDirOption = DEFAULT_STATE_DIR, json_out: JsonOption = False) -> None:
    """Run this host's health checks once; exit 1 when any fails."""
    state = StateDir(state_dir)
    limits = state.config().health if state.config_file.is_file() else ResourceLimits()
    summary = summarize(resource_checks(limits))
    if json_out:
        render.print_json(
            {
                "healthy": summary.healthy,
                "checks": [dataclasses.asdict(c) for c in summary.checks],
            }
        )
    else:
        for c in summary.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if not summary.healthy:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: one clear line and an exit code for every error."""
    try:
        app()
    except AgentError as exc:
        print(f"fleetpatch-agent: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
