"""`fleetpatch-sim`: rehearse a campaign on a simulated fleet, in virtual time.

    fleetpatch-sim run SCENARIO.toml [--seed N] [--hosts N] [--json] [--report FILE.html] [--check]
    fleetpatch-sim rehearse CAMPAIGN.toml --data-dir DIR [--controller ADDR]
                   [--failure-model FILE] [--seed N] [--json] [--report FILE.html]
    fleetpatch-sim load --data-dir DIR [--agents N] [--processes N] [--seconds S] [--bare] [--push]
                        [--json]

`rehearse` is what `fleetpatch campaign rehearse` runs: the fleet is the
controller's real inventory. Exit codes: 0 done (and, with --check, the
expected outcome met), 1 error or an expectation not met, 2 bad input, 3
controller unreachable, 4 refused. Progress goes to stderr on long runs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from fleetpatch import cliapp, render
from fleetpatch.addresses import AddressError, port_after, split_address
from fleetpatch.atomicfile import write_atomic
from fleetpatch.durations import parse_duration

from .engine import Progress, Settings, Simulation
from .errors import LoadFailed, NothingToRehearse, ScenarioError, SimError
from .expect import check
from .failures import NO_FAILURES, FailureModel
from .outcome import Outcome
from .report import print_text, span, to_json
from .scenario import Operator

if TYPE_CHECKING:
    from controller.datadir import DataDir

    from . import load as loadtool

app = cliapp.new_app(
    help="Rehearse a patch campaign on a simulated fleet, in virtual time, with the "
    "controller's real scheduler and the agent's real state machine."
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")]
ReportOption = Annotated[
    Path | None,
    typer.Option("--report", metavar="FILE.html", help="Also write a self-contained HTML report."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
DEFAULT_DATA_DIR = Path("/var/lib/fleetpatch/controller")
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="FLEETPATCH_DATA_DIR",
        help="Controller data dir (admin credentials, CA, settings, addresses).",
    ),
]  # fmt: skip
ControllerOption = Annotated[
    str | None,
    typer.Option("--controller", metavar="HOST:PORT",
                 help="Controller address; default: the one recorded in the data dir."),
]  # fmt: skip


class ProgressLine:
    """Progress on stderr once a run has taken a second, then at most once a
    second (a TTY line is redrawn in place)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._began = time.monotonic()
        self._last = self._began
        self._shown = False
        self._tty = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < (1.0 if self._tty else 5.0):
            return
        self._last = now
        self._shown = True
        line = (
            f"simulated +{span(p.now)} of {span(p.horizon)}: {p.assigned:,}/{p.targeted:,} hosts "
            f"assigned, {p.finished:,} finished ({p.events:,} events, {now - self._began:.0f}s)"
        )
        sys.stderr.write(f"\r{line}\033[K" if self._tty else f"{line}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._shown and self._tty:
            sys.stderr.write("\n")


def _emit(
    outcome: Outcome, misses: list[str] | None, summary: str, as_json: bool, report: Path | None
) -> None:
    if as_json:
        render.print_json(to_json(outcome, misses, summary))
    else:
        print_text(outcome, misses, summary, sys.stdout)
    if report is not None:
        from .html import render_html

        try:
            write_atomic(report, render_html(outcome, misses, summary).encode())
        except OSError as exc:
            raise SimError(f"cannot write the report {report}: {exc.strerror}") from None
        if not as_json:
            print(f"\nreport: {report}")


@app.command("run")
def run(
    scenario: Annotated[
        Path,
        typer.Argument(metavar="SCENARIO.toml", help="A scenario file (see examples/scenarios)."),
    ],
    seed: Annotated[int | None, typer.Option(help="Random seed; default: the scenario's.")] = None,
    hosts: Annotated[
        int | None, typer.Option(help="Fleet size, overriding the scenario's.", min=1)
    ] = None,
    as_json: JsonOption = False,
    report: ReportOption = None,
    check_expected: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 1 unless the scenario's expected outcome (its expect table) is met.",
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Rehearse a scenario: a generated fleet, a campaign file and a failure model."""
    from .rehearsal import scenario_simulation
    from .scenario import load_scenario

    sc = load_scenario(scenario)
    progress = ProgressLine(not quiet)
    try:
        outcome = scenario_simulation(sc, hosts=hosts, seed=seed, progress=progress).run()
    finally:
        progress.done()
    misses = check(sc.expect, outcome) if not sc.expect.empty else None
    _emit(outcome, misses, sc.expect.summary, as_json, report)
    if check_expected and misses:
        sys.exit(1)


def _failure_model(path: Path | None) -> FailureModel:
    if path is None:
        return NO_FAILURES
    import tomllib

    from fleetpatch.tomltable import Table

    from controller.campaigns.errors import CampaignError

    from .failures import parse_failures
    from .scenario import read_file

    try:
        doc = tomllib.loads(read_file(path))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"not valid TOML: {exc}", str(path)) from None
    try:
        root = Table(doc, "", str(path), CampaignError)
        model = parse_failures(root.table("failures"))
        root.finish()
    except CampaignError as exc:
        raise ScenarioError(exc.field, exc.problem, str(path)) from None
    return model


def _duration(option: str, spelled: str) -> timedelta:
    try:
        value = parse_duration(spelled)
    except ValueError as exc:
        raise ScenarioError(option, str(exc)) from None
    if value <= timedelta(0):
        raise ScenarioError(option, "must be longer than 0s")
    return value


@app.command("rehearse")
def rehearse(
    campaign_file: Annotated[
        Path, typer.Argument(metavar="CAMPAIGN.toml", help="The campaign file you would create.")
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    failure_model: Annotated[
        Path | None,
        typer.Option(
            "--failure-model",
            metavar="FILE",
            help="A TOML file with a failures table, as in a scenario; default: calibrated "
            "from the fleet's own history (past campaigns' failure and revert rates per ring "
            "and region, step durations), printed on stderr.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    duration: Annotated[str, typer.Option(help="Time the campaign has (e.g. 7d).")] = "7d",
    horizon: Annotated[
        str | None, typer.Option(help="Simulate this long at most; default: the duration.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Virtual start, ISO 8601 with offset; default: now, to the minute."),
    ] = None,
    as_json: JsonOption = False,
    report: ReportOption = None,
    quiet: QuietOption = False,
) -> None:
    """Rehearse a campaign file on the controller's real fleet, before creating it."""
    from controller.campaigns import HostFacts, is_targeted, parse_campaign
    from controller.campaigns.advice import advice

    from .calibrate import calibrate
    from .inventory import load_real_fleet
    from .scenario import read_file

    spec = parse_campaign(read_file(campaign_file), str(campaign_file))
    length = _duration("--duration", duration)
    reach = _duration("--horizon", horizon) if horizon is not None else length
    if reach < length:
        raise ScenarioError("--horizon", "must not be shorter than --duration")
    begin = _start(start)
    real = load_real_fleet(data_dir, controller, begin)
    targeted = sum(
        1
        for h in real.hosts
        if is_targeted(
            spec, HostFacts(h.host_id, h.region, h.ring, h.labels, h.os_id, h.timezone,
                            agent_version=h.agent_version),
        )
    )  # fmt: skip
    for line in advice(spec, begin, targeted):
        print(f"fleetpatch-sim: warning: {line}", file=sys.stderr)
    if targeted == 0:
        raise NothingToRehearse(
            f"nothing to rehearse: {campaign_file} targets none of the {len(real.hosts)} "
            "enrolled host(s)"
        )
    if failure_model is not None:
        model = _failure_model(failure_model)
        print(f"failure model: {failure_model} (given, not calibrated)", file=sys.stderr)
    else:
        calibrated = calibrate(real.history)
        model = calibrated.model
        for line in calibrated.lines:
            print(line, file=sys.stderr)
    settings = Settings(
        name=f"rehearse {campaign_file.name} on {real.address}",
        start=begin,
        duration=length,
        horizon=reach,
        checkin_interval=real.checkin_interval,
        campaign_tick=real.campaign_tick,
        seed=seed,
        operator=Operator(),
    )
    progress = ProgressLine(not quiet)
    try:
        outcome = Simulation(spec, real.hosts, model, settings, progress).run()
    finally:
        progress.done()
    _emit(outcome, None, "", as_json, report)


# `load`'s bounds: a token's uses are a 32-bit count, a simulated agent's
# certificate name (load-SEED...-N) at most 64 characters.
MAX_AGENTS = 1_000_000
MAX_PROCESSES = 256
MAX_SEED = 10**9


@app.command("load")
def load(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    enroll: Annotated[
        str | None,
        typer.Option(
            "--enroll",
            metavar="HOST:PORT",
            help="Enrollment address; default: the one recorded in the data dir.",
        ),
    ] = None,
    agents: Annotated[
        int, typer.Option(min=1, max=MAX_AGENTS, help="Simulated agents, enrolled for real.")
    ] = 1000,
    processes: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_PROCESSES, help="Processes they are spread over (at most one each)."
        ),
    ] = 2,
    seconds: Annotated[float, typer.Option(min=1, help="Measured seconds, after the ramp.")] = 30,
    ramp: Annotated[
        float, typer.Option(min=0, help="Seconds over which agents connect, with jitter.")
    ] = 10,
    interval: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between one agent's check-ins (with jitter); "
            "0: back to back, for the most the controller serves.",
        ),
    ] = 0,
    change_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of check-ins with a changed inventory.")
    ] = 0.01,
    failure_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of orders reported failed.")
    ] = 0.02,
    concurrency: Annotated[
        int,
        typer.Option(
            min=0,
            help="Check-ins in flight per process at most (with --interval 0, "
            "a steady load for throughput); 0: every agent asks at once, a herd.",
        ),
    ] = 64,
    bare: Annotated[
        bool,
        typer.Option(
            "--bare",
            help="Then the same load on a bare grpc.aio server with the "
            "same TLS and messages, for the ratio.",
        ),
    ] = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Each agent also keeps a Watch stream open and checks in when nudged "
            "(within the spread asked for); prints streams, nudges and nudged check-ins.",
        ),
    ] = False,
    database_pid: Annotated[
        int | None,
        typer.Option(
            "--database-pid",
            metavar="PID",
            min=1,
            help="A database server on this machine (PostgreSQL's postmaster): its CPU, "
            "its backends' included, is also counted per 1,000 check-ins.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")] = 1,
    json_out: JsonOption = False,
) -> None:
    """Drive a real controller with many simulated agents over real gRPC
    and mutual TLS: enrolled for real, spread over processes, connecting
    gradually; steady check-ins with inventory changes now and then; orders
    carried out with simulated outcomes and reported. Prints check-ins per
    second, latency percentiles, errors and (when the controller runs
    here) its CPU and memory; --bare adds the ratio to a bare server.
    Ctrl-C stops the run and prints the figures until then (exit 130)."""
    from datetime import timedelta as _timedelta

    import psutil
    from fleetpatch.v1 import admin_pb2
    from google.protobuf.duration_pb2 import Duration

    from controller.cli.admin_client import AdminClient
    from controller.datadir import DataDir
    from controller.errors import FleetpatchError

    from . import load as loadtool

    if enroll is not None:
        try:
            split_address(enroll)
        except AddressError as exc:
            raise ScenarioError("--enroll", str(exc)) from None
    if database_pid is not None and not psutil.pid_exists(database_pid):
        raise ScenarioError("--database-pid", f"no process {database_pid} on this machine")
    directory = DataDir(data_dir)
    # SIGTERM (a timeout, a service manager) stops the run as Ctrl-C does:
    # the figures until then are printed, and what was started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with AdminClient(directory, controller) as admin:
        ttl = Duration()
        ttl.FromTimedelta(_timedelta(hours=2))
        made = admin.create_token(admin_pb2.CreateTokenRequest(
            region="load", ring=0, uses=agents, ttl=ttl, labels={"load": "sim"},
        ))  # fmt: skip
        # Several replicas named: the agents are spread over them all. They
        # enroll through the one the token was made on (reached, then).
        address = ",".join(admin.addresses) if len(admin.addresses) > 1 else admin.address
        enroll_address = enroll or _enroll_address(directory, admin.address)
        plan = loadtool.Plan(
            address, enroll_address, directory.read(directory.ca_cert), agents,
            min(processes, agents), seconds, ramp, interval, 0.2, change_rate, failure_rate,
            concurrency=concurrency, push=push,
        )  # fmt: skip
        began = time.monotonic()
        try:
            identities = loadtool.enroll_all(plan, made.secret, seed)
        except BaseException:
            # Not left for anyone to enroll with for two hours.
            with contextlib.suppress(FleetpatchError):
                admin.revoke_token(made.token.token_id)
            raise
    print(f"enrolled {len(identities)} agents in {time.monotonic() - began:.0f}s", file=sys.stderr)
    pids = loadtool.listening(address.split(",")) or loadtool.pid_of(data_dir)
    usage, database = loadtool.Usage(pids), loadtool.Usage(database_pid)
    # Ctrl-C stops the run: the figures until then are printed, exit 130.
    tallies, interrupted = loadtool.run(plan, identities, address, seed)
    results = [loadtool.merge(f"controller {address}", plan, tallies, usage.done(),
                              database.done(), interrupted)]  # fmt: skip
    if bare and not interrupted:
        try:
            interrupted = _bare_run(data_dir, plan, identities, seed, results)
        except LoadFailed:  # the controller's figures are measured already: not lost
            print(loadtool.as_json(results) if json_out else loadtool.table(results))
            raise
    print(loadtool.as_json(results) if json_out else loadtool.table(results))
    if interrupted:
        raise typer.Exit(130)


def _bare_run(
    data_dir: Path,
    plan: loadtool.Plan,
    identities: list[loadtool.Identity],
    seed: int,
    results: list[loadtool.Result],
) -> bool:
    """The same load on a bare grpc.aio server, its result added to
    ``results``; whether it was interrupted."""
    from . import load as loadtool

    try:
        proc, bare_address = loadtool.start_bare(data_dir)
    except KeyboardInterrupt:  # stopped while it started: the figures so far
        return True
    try:
        usage = loadtool.Usage(proc.pid)
        tallies, interrupted = loadtool.run(plan, identities, bare_address, seed)
        results.append(loadtool.merge("bare grpc.aio, same TLS", plan, tallies, usage.done(),
                                      interrupted=interrupted))  # fmt: skip
        return interrupted
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _enroll_address(directory: DataDir, address: str) -> str:
    """Where the agents enroll: the enrollment address the controller at
    ``address`` recorded when it is the one in ``directory``, else the
    port after ``address`` (a controller's default)."""
    recorded = directory.recorded_endpoints()
    if recorded is not None and recorded[0] == address and recorded[1]:
        return recorded[1]
    try:
        return port_after(address)
    except AddressError as exc:
        raise ScenarioError("--enroll", f"{exc}: give the enrollment address") from None


def _start(spelled: str | None) -> datetime:
    from controller.api.times import OUT_OF_RANGE, in_range

    if spelled is None:
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        value = datetime.fromisoformat(spelled)
    except ValueError:
        raise ScenarioError("--start", f"{spelled!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise ScenarioError("--start", "must include a UTC offset (e.g. 2026-12-05T00:00:00Z)")
    if not in_range(value):
        raise ScenarioError("--start", f"{value.isoformat()} {OUT_OF_RANGE}")
    return value.astimezone(UTC)


def main() -> None:
    """Console entry point: one clear line and an exit code for every error."""
    from controller.campaigns.errors import CampaignError
    from controller.errors import FleetpatchError

    try:
        cliapp.run(app)
    except SimError as exc:
        _fail(str(exc), exc.exit_code)
    except CampaignError as exc:
        _fail(str(exc), 2)
    except FleetpatchError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _fail(message: str, code: int) -> None:
    print(f"fleetpatch-sim: error: {message}", file=sys.stderr)
    sys.exit(code)
