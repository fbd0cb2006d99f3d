"""`fleetpatch-agent`: the host agent.

Exit codes: 0 success, 1 error, 2 bad usage, config or state dir (a
damaged, missing or unwritable state file: a person must act; the service
is not restarted), 3 transient (controller unreachable or overloaded;
retry later), 4 refused by the controller (bad token, host revoked), 7 TLS
trust fails (wrong --ca-cert, or not the controller: a person must act).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import fleetpatch
import typer
from cryptography import x509
from fleetpatch import cliapp, releasefmt, render
from fleetpatch import labels as labelspec
from fleetpatch.inventory import inventory_hash
from fleetpatch.logline import quoted
from fleetpatch.v1 import types_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from agent import daemon
from agent.backends import packages
from agent.backends.base import PlanError
from agent.errors import (
    EXIT_CODES,
    RESTORE,
    AgentError,
    ConfigError,
    StateDirError,
)
from agent.host import facts as hostfacts
from agent.host.checks import Prober
from agent.host.health import ResourceLimits, resource_checks, summarize
from agent.link.enrollment import enroll as do_enroll
from agent.link.renewal import renew_at
from agent.orders.journal import Journal
from agent.orders.selfupdate import release_key
from agent.orders.states import State
from agent.preflight import check_state
from agent.service import Agent
from agent.statedir import (
    DEFAULT_STATE_DIR,
    AgentConfig,
    StateDir,
    settings_for,
)

app = cliapp.new_app(
    help="fleetpatch agent: enrolls this host, reports inventory and health, "
    "applies signed work orders.",
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


_setup_logging = daemon.setup_logging
_require_root = daemon.require_root


@app.command()
def enroll(
    controller: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT[,HOST:PORT...]",
            help="The controller's mutual-TLS address; several replicas comma-separated "
            "(the first is enrolled with, the others are moved to when it cannot be reached).",
        ),
    ],
    ca_cert: Annotated[
        Path, typer.Option(help="The controller's CA certificate (ca.pem); pinned from now on.")
    ],
    token: Annotated[
        str | None,
        typer.Option(
            help="Enrollment token from `fleetpatch token create` (visible in the process "
            "list: prefer --token-file)."
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Read the enrollment token from this file, or from standard input with '-'.",
        ),
    ] = None,
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
    _require_root("enroll")
    secret = _token(token, token_file)
    try:
        labels = labelspec.parse_labels(label or [])
    except ValueError as exc:
        raise ConfigError(f"--label: {exc}") from None
    state = StateDir(state_dir, settings_for(state_dir))
    done = do_enroll(state, controller, secret, ca_cert, labels, enroll_address)
    print(f"enrolled as {done.host_id} (region {done.region}, ring {done.ring})")
    if done.same_machine_id:
        print(
            f"fleetpatch-agent: warning: {len(done.same_machine_id)} enrolled host(s) report "
            f"this host's machine-id too: {', '.join(done.same_machine_id)} (cloned from one "
            "image? give each host its own /etc/machine-id)",
            file=sys.stderr,
        )
    if done.unconfirmed:
        print(
            f"fleetpatch-agent: warning: enrolled, but the first call as this host failed "
            f"({done.unconfirmed}); the service's first check-in will try again",
            file=sys.stderr,
        )


STDIN = "-"
#: The longest token the controller takes: controller.api.limits.MAX_TEXT,
#: its bound on every string of the enrollment request (the agent does not
#: import the controller). Its tokens (controller.fleet.tokens) are far
#: shorter: ``fpt_<id>_<secret>``.
MAX_TOKEN_CHARS = 1024
#: What every token the controller makes starts with and is made of
#: (controller.fleet.tokens: hex id, URL-safe base64 secret).
TOKEN_PREFIX = "fpt_"  # noqa: S105 - a prefix, not a secret
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]*")
# Read of a token file or standard input: a token, its newline, and room
# for surrounding whitespace; a file longer than this holds no token.
_TOKEN_READ = 64 * 1024


def _token(token: str | None, token_file: str | None) -> str:
    """The enrollment token from --token or --token-file (a path, or '-'
    for standard input), surrounding whitespace stripped, and checked as
    far as every token the controller accepts goes (its prefix, alphabet
    and length), so that nothing is written or sent for one it would
    refuse. Raises ConfigError."""
    if (token is None) == (token_file is None):
        raise ConfigError("give the enrollment token with one of --token and --token-file")
    if token is not None:
        where, text = "--token", token
    elif token_file == STDIN:
        where = "--token-file - (standard input)"
        try:
            text = sys.stdin.read(_TOKEN_READ + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the token from standard input: {exc}") from None
    else:
        where = f"--token-file {token_file}"
        try:
            # A FIFO is fine here (`--token-file <(vault read ...)`): it is
            # read as a stream, never more than a token's worth.
            with open(str(token_file), "rb") as stream:
                text = stream.read(_TOKEN_READ + 1).decode()
        except OSError as exc:
            raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where} does not hold a token (not text)") from None
    secret = text.strip()
    if not secret and len(text) <= _TOKEN_READ:
        raise ConfigError(f"{where} is empty: it should hold the enrollment token")
    if len(text) > _TOKEN_READ or len(secret) > MAX_TOKEN_CHARS:
        size = f"over {_TOKEN_READ}" if len(text) > _TOKEN_READ else str(len(secret))
        raise ConfigError(
            f"{where} does not hold an enrollment token: {size} characters, where a token has "
            f"at most {MAX_TOKEN_CHARS} (give the token `fleetpatch token create` printed)"
        )
    if not secret.startswith(TOKEN_PREFIX) or not _TOKEN_CHARS.fullmatch(secret):
        raise ConfigError(
            f"{where} does not hold an enrollment token: a token starts with {TOKEN_PREFIX!r} "
            "and has only letters, digits, '_' and '-' (give the token `fleetpatch token "
            "create` printed)"
        )
    return secret


def _agent(state_dir: Path, online: bool = True) -> Agent:
    return Agent.open(StateDir(state_dir, settings_for(state_dir)), online=online)


@app.command()
def run(
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    once: Annotated[
        bool, typer.Option("--once", help="Check in once; exit 0 only if it succeeded.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Check in with the controller and carry out the work orders it hands
    out: once, or until SIGTERM (as the service does). Orders interrupted by
    a crash or reboot are finished first, offline if need be."""
    # The service's own command line never reaches here (agent.daemon.main
    # starts the daemon without this CLI); this is for the others.
    daemon.run(state_dir, once=once, verbose=verbose)


@app.command()
def apply(
    order_file: Annotated[
        Path, typer.Argument(help="A signed work order (binary or JSON SignedEnvelope).")
    ],
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not contact the controller at all.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Carry out a signed work order from a file (air-gapped hosts), with the
    same checks as one received over the network. Exit 0 when it succeeded
    (or is applied and waits for a reboot the policy defers, or for service
    restarts it may not make), 1 when it failed or was reverted, 4 when it
    was refused."""
    _require_root("apply")
    _setup_logging(verbose)
    envelope = _read_envelope(order_file)
    state = StateDir(state_dir, settings_for(state_dir))
    state.require_enrolled()
    held = state.hold()  # never beside the service, or another apply, at work here
    try:
        _apply(state, envelope, offline)
    finally:
        os.close(held)


def _apply(state: StateDir, envelope: types_pb2.SignedEnvelope, offline: bool) -> None:
    agent = Agent.open(state, online=not offline)
    try:
        agent.resume()
        final = agent.handle(envelope)
    finally:
        agent.close()
    if final is None:
        raise AgentRefusedOrder(f"{agent.last_refusal or 'the work order was refused'} "
                                "(see `fleetpatch-agent status`)")  # fmt: skip
    print(f"work order finished: {final}")
    if final not in (State.SUCCEEDED, State.PENDING_REBOOT, State.PENDING_RESTART):
        raise typer.Exit(1)


class AgentRefusedOrder(AgentError):
    exit_code = 4


def _read_envelope(path: Path) -> types_pb2.SignedEnvelope:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    envelope = types_pb2.SignedEnvelope()
    try:
        if data.lstrip().startswith(b"{"):
            json_format.Parse(data.decode(), envelope)
        else:
            envelope.ParseFromString(data)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not a signed work order") from None
    if not envelope.payload:
        raise ConfigError(f"{path} is not a signed work order")
    return envelope


def _certificate_line(cert: x509.Certificate, now: datetime) -> str:
    expires = cert.not_valid_after_utc
    if expires <= now:
        return f"EXPIRED at {expires:%Y-%m-%d %H:%M:%SZ}: enroll this host again with a token"
    return f"expires {expires:%Y-%m-%d %H:%M:%SZ}; renewed from {renew_at(cert):%Y-%m-%d %H:%M:%SZ}"


@app.command()
def status(
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    json_out: JsonOption = False,
    limit: Annotated[
        int,
        typer.Option(min=0, max=MAX_LIMIT, help="How many past orders (and refusals) to show."),
    ] = 10,
) -> None:
    """This host's enrollment, last check-in, the current work order and the
    history of past ones: each step, what changed, why a revert happened."""
    state = StateDir(state_dir, settings_for(state_dir))
    _regular_files(state)
    config, _ = check_state(state)
    journal = Journal.open(state.journal, must_exist=True)
    try:
        checkin = journal.checkin_state()
        orders = journal.orders(limit)
        steps = {o.order_id: journal.steps(o.order_id) for o in orders}
        refusals = journal.refusals(limit)
        queued = len(journal.pending_reports(1000))
    finally:
        journal.close()
    try:
        pinned: str | None = releasefmt.fingerprint(release_key(config.policy))
    except ValueError:
        pinned = None
    cert = state.certificate()
    doc = {
        "host_id": state.host_id(),
        "certificate": {
            "serial": format(cert.serial_number, "x"),
            "expires_at": _iso(cert.not_valid_after_utc),
            "renew_at": _iso(renew_at(cert)),
        },
        "controller": config.controller,
        "agent_version": fleetpatch.__version__,
        "release_key": {"path": str(config.policy.release_key), "fingerprint": pinned},
        "last_checkin": _iso(checkin.last_success),
        "last_attempt": _iso(checkin.last_attempt),
        "last_error": checkin.last_error or None,
        "next_checkin": _iso(checkin.next_checkin),
        "acknowledged_inventory": checkin.acked_inventory_hash or None,
        "reports_queued": queued,
        "orders": [
            {
                "order_id": o.order_id,
                "campaign_id": o.campaign_id,
                "sequence": o.sequence,
                "state": o.state,
                "detail": o.detail,
                "received_at": render.rfc3339(o.received_at),
                "changes": o.changes,
                "steps": [
                    {"state": st.state, "at": render.rfc3339(st.entered_at), "detail": st.detail}
                    for st in steps[o.order_id]
                ],
            }
            for o in orders
        ],
        "refusals": [
            {
                "at": render.rfc3339(r.at),
                "order_id": r.order_id,
                "reason": r.reason,
                "detail": r.detail,
            }
            for r in refusals
        ],
    }
    if json_out:
        render.print_json(render.nulls(doc))
        return
    now = datetime.now(UTC)
    print(f"host           {doc['host_id']}")
    print(f"certificate    {_certificate_line(cert, now)}")
    print(f"controller     {config.controller}")
    print(f"agent          {fleetpatch.__version__}")
    print(f"release key    {pinned or 'none pinned'} ({config.policy.release_key})")
    print(f"last check-in  {render.ago(checkin.last_success, now)}")
    if checkin.last_error:
        # One line even as an older agent journaled it (the controller's words, raw).
        print(f"last error     {quoted(checkin.last_error)} "
              f"({render.ago(checkin.last_attempt, now)})")  # fmt: skip
    if checkin.next_checkin:
        print(f"next check-in  {checkin.next_checkin.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}")
    if queued:
        print(f"reports queued {queued} (not yet acknowledged by the controller)")
    for o in orders:
        print(
            f"\norder {o.order_id} (campaign {o.campaign_id or '-'}, "
            f"sequence {o.sequence}): {o.state}"
        )
        for change in o.changes:
            print(
                f"  changed {change['name']}: "
                f"{change['old'] or '(new)'} -> {change['new'] or '(removed)'}"
            )
        for st in steps[o.order_id]:
            print(f"  {st.entered_at:%Y-%m-%d %H:%M:%S}  {st.state:<13} {st.detail}")
    for r in refusals:
        print(
            f"\nrefused {r.order_id or '(unreadable order)'} "
            f"at {r.at:%Y-%m-%d %H:%M:%S}: {r.detail}"
        )


def _iso(when: datetime | None) -> str | None:
    return render.rfc3339(when)


#: The most past orders `status --limit` shows (SQLite takes no more than
#: 2**63-1, and a person reads far fewer).
MAX_LIMIT = 100_000


def _regular_files(state: StateDir) -> dict[Path, bool]:
    """Whether each file of ``state`` read whole (agent.toml, cert.pem, the
    settings file) is there, before anything reads them: one that exists
    but is not a regular file is refused (`StateDir.present`); a missing
    one is left to the reader, which says "missing"."""
    return {p: state.present(p) for p in (state.config_file, state.cert, state.settings) if p}


def _local_config(state: StateDir) -> AgentConfig | None:
    """agent.toml (with the settings file over it) for the commands that
    also run on a host not enrolled (`check`, `inventory`): None when the
    state dir holds neither agent.toml nor an enrollment; ConfigError
    (StateDirError) when agent.toml is not usable, or an enrolled state
    dir lost it: never the defaults in its place, silently."""
    found = _regular_files(state)
    if found[state.config_file]:
        return state.config()
    if found[state.cert]:
        raise StateDirError(f"{state.config_file} is missing ({RESTORE})")
    return None


@app.command()
def scan(state_dir: StateDirOption = DEFAULT_STATE_DIR, json_out: JsonOption = False) -> None:
    """Refresh the package lists and list the updates available here, now
    rather than at the next scheduled scan ([agent] scan_interval). Nothing
    is installed; the list goes to the controller at the next check-in.
    Exit 3 when the package manager is held by another process (retry)."""
    _require_root("scan")
    agent = _agent(state_dir, online=False)
    try:
        found = agent.scan()
    except PlanError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        agent.close()
    if json_out:
        render.print_json(render.nulls([dataclasses.asdict(u) for u in found]))
        return
    if not found:
        print("no update available")
        return
    render.updates_table(found)
    security = sum(1 for u in found if u.security)
    print(f"{len(found)} update(s) available, {security} with a security fix")


@app.command()
def inventory(state_dir: StateDirOption = DEFAULT_STATE_DIR, json_out: JsonOption = False) -> None:
    """Print what this host would report: facts and installed packages."""
    config = _local_config(StateDir(state_dir, settings_for(state_dir)))
    setting = config.package_manager if config is not None else ""
    facts = hostfacts.collect(setting)
    installed = packages.installed(facts.package_manager)
    if json_out:
        render.print_json(
            render.nulls({
                "facts": dataclasses.asdict(facts),
                "inventory_hash": inventory_hash(installed),
                "packages": [{"name": n, "version": v, "arch": a} for n, v, a in installed],
            })
        )  # fmt: skip
        return
    for key, value in dataclasses.asdict(facts).items():
        print(f"{key:18} {value}")
    print(f"{'inventory':18} {inventory_hash(installed)} ({len(installed)} packages)")


@app.command()
def check(state_dir: StateDirOption = DEFAULT_STATE_DIR, json_out: JsonOption = False) -> None:
    """Run this host's health checks (resources and agent.toml [[checks]])
    once; exit 1 when any fails."""
    config = _local_config(StateDir(state_dir, settings_for(state_dir)))
    limits = config.health if config else ResourceLimits()
    results = resource_checks(limits) + Prober().run_all(config.checks if config else ())
    summary = summarize(results)
    if json_out:
        render.print_json(
            render.nulls({
                "healthy": summary.healthy,
                "checks": [dataclasses.asdict(c) for c in summary.checks],
            })
        )  # fmt: skip
    else:
        for c in summary.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    if not summary.healthy:
        raise typer.Exit(1)


def main() -> None:
    """The full CLI (every verb, --help): one clear line and an exit code for
    every error. The console script enters at agent.daemon.main."""
    daemon.exit_on_error(lambda: cliapp.run(app, epilog=cliapp.exit_codes_epilog(EXIT_CODES)))
