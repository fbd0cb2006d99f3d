"""`fleetpatch campaign ...` and `fleetpatch audit ...`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from fleetpatch import render
from fleetpatch.agentrelease import Family
from fleetpatch.cliapp import exit_codes_epilog, new_app
from fleetpatch.durations import format_duration, parse_duration
from fleetpatch.v1 import admin_pb2

from controller.api import times
from controller.cli import jsondoc
from controller.cli.admin_client import AdminClient
from controller.cli.common import ControllerOption, DataDirOption, JsonOption, client
from controller.cli.watching import WATCH_EXIT_CODES, Snapshot, Watch
from controller.datadir import DEFAULT_DATA_DIR
from controller.errors import FleetpatchError, UsageError

if TYPE_CHECKING:
    from controller.campaigns import CampaignSpec

# The campaign rules, the audit checkpoint and protobuf conversion of the
# model are imported by the commands that use them: every other command
# starts without them.

campaign_app = new_app(help="Patch campaigns: what to patch, where, and how fast.")
audit_app = new_app(help="The hash-chained audit trail.")

CampaignId = Annotated[str, typer.Argument(help="Campaign id, as `campaign list` shows it.")]
COUNTS = ["eligible", "waiting", "in_flight", "succeeded", "failed", "reverted", "revert_failed",
          "timed_out"]  # fmt: skip


def _totals(campaign: admin_pb2.Campaign) -> dict[str, int]:
    return {k: sum(getattr(c, k) for c in campaign.cells) for k in COUNTS}


def _spec(campaign: admin_pb2.Campaign) -> CampaignSpec | None:
    from controller.campaigns import CampaignError, parse_campaign

    try:
        return parse_campaign(campaign.spec, campaign.campaign_id, bounded=False)
    except CampaignError:
        return None  # stored by a controller whose rules differ from this CLI's


def _kind(campaign: admin_pb2.Campaign) -> str:
    """ "patch" or "agent-update 0.2.0": as the controller read the campaign
    file, or (an older controller) from the file itself."""
    if campaign.kind:
        return campaign.kind
    spec = _spec(campaign)
    return spec.kind if spec is not None else "?"


@campaign_app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="Campaign file (TOML); see examples/campaigns/.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Validate a campaign file and store it as a draft; prints its id last.
    Nothing is assigned before `campaign approve`."""
    from controller.campaigns import CampaignError, parse_campaign
    from controller.campaigns.advice import advice, release_advice

    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        spec = parse_campaign(text, str(file))  # fail fast, before any network
    except CampaignError as exc:
        raise UsageError(str(exc)) from None
    with client(data_dir, controller) as admin:
        campaign = admin.create_campaign(text, str(file))
        released: list[str] = []
        if spec.agent_update is not None:
            version = spec.agent_update.version
            released = [r.artifact for r in admin.list_releases() if r.version == version]
    targeted = _totals(campaign)["eligible"]
    print(
        f"campaign {spec.name!r} stored as a draft ({targeted} host(s) targeted now); "
        f"approve it with: fleetpatch campaign approve {campaign.campaign_id}",
        file=sys.stderr,
    )
    for line in advice(spec, datetime.now(UTC), targeted) + release_advice(spec, released):
        print(f"fleetpatch: warning: {line}", file=sys.stderr)
    print(campaign.campaign_id)


def _action(action: str, campaign_id: str, data_dir: Path, controller: str | None,
            revert: bool = False) -> admin_pb2.Campaign:  # fmt: skip
    with client(data_dir, controller) as admin:
        return admin.campaign_action(action, campaign_id, revert)


@campaign_app.command("approve")
def approve(
    campaign_id: CampaignId, data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:  # fmt: skip
    """Approve a draft: hosts are assigned from their next check-in on."""
    campaign = _action("approve", campaign_id, data_dir, controller)
    print(f"campaign {campaign.campaign_id} approved: {campaign.state}")


@campaign_app.command("pause")
def pause(
    campaign_id: CampaignId, data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:  # fmt: skip
    """Stop assigning; hosts already patching finish."""
    campaign = _action("pause", campaign_id, data_dir, controller)
    print(f"campaign {campaign.campaign_id}: {campaign.state}")


@campaign_app.command("resume")
def resume(
    campaign_id: CampaignId, data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:  # fmt: skip
    """Resume a paused or halted campaign. For a halted one, the failures that
    halted it are accepted: budgets count what comes after."""
    campaign = _action("resume", campaign_id, data_dir, controller)
    print(f"campaign {campaign.campaign_id}: {campaign.state}")


@campaign_app.command("abort")
def abort(
    campaign_id: CampaignId,
    revert: Annotated[bool, typer.Option("--revert", help="Order patched hosts back.")] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Stop the campaign for good; with --revert, patched hosts are ordered to
    revert at their next check-in."""
    campaign = _action("abort", campaign_id, data_dir, controller, revert)
    print(f"campaign {campaign.campaign_id}: {campaign.state}"
          + (" (patched hosts will revert)" if revert else ""))  # fmt: skip


@campaign_app.command("list")
def list_(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List campaigns with their state and progress."""
    with client(data_dir, controller) as admin:
        campaigns = admin.list_campaigns()
    if json_out:
        render.print_json([_doc(c) for c in campaigns])
        return
    rows = []
    for c in campaigns:
        t = _totals(c)
        failed = t["failed"] + t["reverted"] + t["revert_failed"] + t["timed_out"]
        done = t["succeeded"] + failed
        rows.append((c.campaign_id, c.name, _kind(c), c.state, f"{done}/{t['eligible']}",
                     t["in_flight"], failed))  # fmt: skip
    render.table(["CAMPAIGN", "NAME", "KIND", "STATE", "DONE", "IN FLIGHT", "FAILED"], rows)
    if not campaigns:
        print("no campaigns yet (fleetpatch campaign create FILE)", file=sys.stderr)


def _doc(campaign: admin_pb2.Campaign) -> dict[str, object]:
    doc = jsondoc.doc(campaign)
    for told in ("spec", "agent_update_version", "agent_update_rollback_after"):
        doc.pop(told, None)
    doc["kind"] = _kind(campaign)
    version, rollback_after = campaign.agent_update_version, None
    if campaign.HasField("agent_update_rollback_after"):
        rollback_after = campaign.agent_update_rollback_after.ToTimedelta()
    elif not campaign.kind and (spec := _spec(campaign)) is not None and spec.agent_update:
        version, rollback_after = spec.agent_update.version, spec.agent_update.rollback_after
    doc["agent_update"] = (
        None if not version or rollback_after is None
        else {"version": version,
              "rollback_after": format_duration(rollback_after),
              "no_release": _no_release(campaign)}
    )  # fmt: skip
    doc["totals"] = _totals(campaign)
    return doc


#: waiting_reasons of an agent-update campaign's hosts that wait for a
#: package: their family has none of the release published, or they are of
#: no family the agent is packaged for (controller.rollout.engine._cells).
NO_RELEASE = {"no_deb_release": "deb", "no_rpm_release": "rpm", "no_package_family": "none"}


def _no_release(campaign: admin_pb2.Campaign) -> dict[str, int]:
    """Package family ("none": neither) -> hosts waiting for want of a
    published package of it; families with none waiting are left out."""
    found: dict[str, int] = {}
    for cell in campaign.cells:
        for reason, hosts in cell.waiting_reasons.items():
            if reason in NO_RELEASE and hosts:
                found[NO_RELEASE[reason]] = found.get(NO_RELEASE[reason], 0) + hosts
    return dict(sorted(found.items()))


def _no_release_lines(campaign: admin_pb2.Campaign, version: str) -> list[str]:
    """`campaign show`'s lines for hosts that wait for a package that is
    not published (they would otherwise wait silently)."""
    lines = []
    for family, hosts in _no_release(campaign).items():
        if family == "none":
            lines.append(f"waiting: {hosts} host(s) of no package family the agent is packaged "
                         "for (neither apt nor dnf): this campaign cannot update them")  # fmt: skip
            continue
        manager = "apt" if family == "deb" else "dnf"
        try:
            packaged = Family(family).package_version(version)
        except ValueError:
            packaged = "<version>"
        example = (f"fleetpatch-agent_{packaged}_<arch>.deb" if family == "deb"
                   else f"fleetpatch-agent-{packaged}-1.<arch>.rpm")  # fmt: skip
        lines.append(f"waiting: {hosts} {manager} host(s): no {family} release of {version} "
                     f"published (fleetpatch release publish {example})")  # fmt: skip
    return lines


def _print_campaign(campaign: admin_pb2.Campaign) -> None:
    print(f"campaign {campaign.campaign_id} {campaign.name!r}: {campaign.state.upper()}")
    spec = _spec(campaign)
    kind = spec.kind if spec is not None else "?"
    if spec is not None and spec.agent_update is not None:
        kind += f" (rollback after {format_duration(spec.agent_update.rollback_after)})"
    print(f"  kind: {kind}")
    if spec is not None and spec.agent_update is not None:
        for line in _no_release_lines(campaign, spec.agent_update.version):
            print(f"  {line}")
    if campaign.halt_reason:
        print(f"  halted: {campaign.halt_reason}")
    if campaign.revert_requested:
        print("  aborted with --revert: patched hosts revert at their next check-in")
    rows = []
    for c in campaign.cells:
        why = ", ".join(f"{n} {r}" for r, n in sorted(c.waiting_reasons.items()))
        if c.next_change:
            why += f" (next at {c.next_change[:16].replace('T', ' ')}Z)"
        rows.append((c.ring, c.region, c.eligible, c.waiting, c.in_flight, c.succeeded,
                     _owed(c), c.failed, c.reverted + c.revert_failed, c.timed_out,
                     why or "-"))  # fmt: skip
    render.table(
        ["RING", "REGION", "ELIGIBLE", "WAITING", "IN FLIGHT", "OK", "OF WHICH OWE", "FAILED",
         "REVERTED", "TIMED OUT", "WAITING BECAUSE"], rows,
    )  # fmt: skip


def _owed(cell: admin_pb2.CampaignCell) -> str:
    """What patched hosts of a cell still owe: a reboot, service restarts."""
    owed = [f"{n} {what}" for n, what in ((cell.pending_reboot, "reboot"),
                                          (cell.pending_restart, "restart")) if n]  # fmt: skip
    return ", ".join(owed) or "-"


HOST_STATES = ("in_flight", "succeeded", "failed", "reverted", "revert_failed", "timed_out",
               "pending_reboot", "pending_restart")  # fmt: skip


@campaign_app.command("show")
def show(
    campaign_id: CampaignId,
    hosts: Annotated[
        bool,
        typer.Option(
            "--hosts",
            help="List each host the campaign assigned an order to: its state, last step, "
            "packages before and after, and why it failed or reverted.",
        ),
    ] = False,
    state: Annotated[
        str | None,
        typer.Option(
            metavar="STATE",
            help=f"With --hosts: only hosts in this state ({', '.join(HOST_STATES)}).",
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Per ring x region: eligible, waiting (and why), in flight, succeeded
    (and of those, how many still owe a reboot or service restarts),
    failed, reverted, timed out. With --hosts, host by host instead."""
    if state is not None and not hosts:
        raise UsageError("--state needs --hosts")
    if state is not None and state not in HOST_STATES:
        raise UsageError(f"--state {state!r} is not one of {', '.join(HOST_STATES)}")
    if hosts:
        with client(data_dir, controller) as admin:
            found = admin.campaign_hosts(campaign_id, state or "")
        _print_hosts(found, json_out, state)
        return
    campaign = _action("get", campaign_id, data_dir, controller)
    if json_out:
        render.print_json(_doc(campaign))
        return
    _print_campaign(campaign)


def _print_hosts(found: list[admin_pb2.CampaignHost], json_out: bool, state: str | None) -> None:
    if json_out:
        render.print_json([jsondoc.doc(h) for h in found])
        return
    render.table(
        ["HOST", "HOSTNAME", "RING", "REGION", "KIND", "STATE", "STEP", "PACKAGES", "WHY"],
        [
            (h.host_id, h.hostname or "-", h.ring, h.region, h.kind, h.status, h.step or "-",
             "; ".join(f"{c.name} {c.from_version or '(none)'} -> {c.to_version or '(removed)'}"
                       for c in h.changes) or "-",
             h.detail if h.status not in ("succeeded", "in_flight") and h.detail else "-")
            for h in found
        ],
    )  # fmt: skip
    if not found:
        print("no host has been assigned an order" + (f" in state {state}" if state else ""),
              file=sys.stderr)  # fmt: skip


@campaign_app.command("rehearse")
def rehearse(
    file: Annotated[Path, typer.Argument(help="Campaign file (TOML), as `campaign create` takes.")],
    failure_model: Annotated[
        Path | None,
        typer.Option(
            help="Scenario-style [failures] file for the rehearsal; default: calibrated from "
            "the fleet's own history of past campaigns (printed on stderr)."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (results are deterministic).")
    ] = None,
    json_out: JsonOption = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Rehearse a campaign on this controller's real fleet, in virtual time,
    before running it: when each ring would finish, what would halt it.
    Runs `fleetpatch-sim rehearse` (the simulator) with the same options."""
    sim = Path(sys.executable).parent / "fleetpatch-sim"
    argv = [str(sim), "rehearse", str(file), "--data-dir", str(data_dir)]
    if controller:
        argv += ["--controller", controller]
    if failure_model:
        argv += ["--failure-model", str(failure_model)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if json_out:
        argv.append("--json")
    if report:
        argv += ["--report", str(report)]
    raise typer.Exit(subprocess.run(argv, check=False).returncode)


@campaign_app.command("watch", epilog=exit_codes_epilog(WATCH_EXIT_CODES, "Exit codes of watch"))
def watch(
    campaign_id: CampaignId,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 2.0,
    through_halts: Annotated[
        bool,
        typer.Option(
            "--through-halts",
            help="Keep following a halted campaign (until a person resumes or aborts it) "
            "instead of exiting 9.",
        ),
    ] = False,
    reconnect_for: Annotated[
        str,
        typer.Option(
            help="How long to keep reconnecting to a controller that went away (a restart) "
            "before exiting 3 (e.g. 30s, 10m)."
        ),
    ] = "10m",
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, for each change.")
    ] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Follow a campaign live until it completes, is aborted or halts; exit 0
    only when it completed. On a terminal: a refreshing view; otherwise one
    plain line (or JSON object) per change. Ctrl-C stops watching, never the
    campaign."""
    try:
        patience = parse_duration(reconnect_for).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--reconnect-for: {exc}") from None
    tty = sys.stdout.isatty() and not json_out

    def show(campaign: admin_pb2.Campaign) -> None:
        print("\033[H\033[J", end="")
        print(f"{datetime.now(UTC):%H:%M:%SZ}  (Ctrl-C to stop watching)")
        _print_campaign(campaign)

    with client(data_dir, controller) as admin:
        Watch(
            fetch=lambda: admin.campaign_action("get", campaign_id),
            snapshot=_snapshot, interval=interval, reconnect_for=patience,
            through_halts=through_halts, json_out=json_out, show=show if tty else None,
        ).run()  # fmt: skip


def _snapshot(campaign: admin_pb2.Campaign) -> Snapshot:
    return Snapshot(
        campaign.campaign_id,
        campaign.name,
        campaign.state,
        campaign.halt_reason or None,
        _totals(campaign),
    )


# -- audit -------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A file of `audit checkpoint`: also check its signature (this controller's "
            "current or an earlier signing key) and that the trail still holds to it, which "
            "finds a cut-off tail or a chain rewritten after an edit."
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Walk the hash chain; name the first broken record and exit 1 if any."""
    from controller.api import convert
    from controller.checkpoint import CheckpointError
    from controller.checkpoint import parse as parse_checkpoint

    held = None
    if checkpoint is not None:
        try:
            text = checkpoint.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not a text file"
            raise UsageError(f"cannot read {checkpoint}: {why}") from None
        try:
            held = parse_checkpoint(text)
        except CheckpointError as exc:
            raise CheckpointError(f"{checkpoint}: {exc}") from None
    with client(data_dir, controller) as admin:
        verdict = admin.verify_audit(None if held is None else convert.checkpoint_to_pb(held))
    if verdict.ok:
        holds = "" if held is None else (
            f"; it holds to the checkpoint of record {held.seq} "
            f"({held.at:%Y-%m-%d %H:%M:%S}Z, key {held.key_id})"
        )  # fmt: skip
        print(f"audit trail intact: {verdict.records} record(s){holds}")
        return
    raise AuditBroken(f"audit trail broken at record {verdict.first_broken_seq}: {verdict.problem}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    data_dir: DataDirOption = DEFAULT_DATA_DIR, controller: ControllerOption = None
) -> None:
    """Print a signed checkpoint of the trail as it ends now (JSON, on
    stdout: `> FILE` keeps it). Keep it away from the controller; `audit
    verify --checkpoint FILE` checks the trail against it later."""
    from controller.api import convert

    with client(data_dir, controller) as admin:
        signed = convert.checkpoint_from_pb(admin.audit_checkpoint())
    print(signed.to_json())
    print(
        f"checkpoint of record {signed.seq}, signed with key {signed.key_id}",
        file=sys.stderr,
    )


class AuditBroken(FleetpatchError):
    exit_code = 1


@audit_app.command("export")
def audit_export(
    since: Annotated[
        datetime | None, typer.Option(help="Only records at or after this time (UTC).")
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the audit trail (oldest first), each record as it arrives: the
    trail is streamed, never held whole, so this works on millions of
    records. --json prints one JSON array."""
    stamp = None
    if since is not None:
        stamp = times.timestamp(since if since.tzinfo else since.replace(tzinfo=UTC))
    with client(data_dir, controller) as admin:
        records = admin.export_audit(stamp)
        # `| head` (the reader has all it wanted) ends it quietly, exit 0,
        # as every command: fleetpatch.cliapp.run.
        if json_out:
            _stream_json(records, sys.stdout)
        else:
            _stream_table(records, sys.stdout)


# Streamed rows cannot be aligned on the widest value; these minimum widths
# keep typical records in columns, and a longer value pushes the rest right.
_WIDTHS = (6, 19, 20, 16, 20, 8)
_HEADERS = ("SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL")
_FLUSH_EVERY = 1000


def _stream_table(records: Iterable[admin_pb2.AuditRecord], out: TextIO) -> None:
    def row(cells: Sequence[object]) -> str:
        padded = [str(c).ljust(w) for c, w in zip(cells, _WIDTHS, strict=False)]
        return "  ".join([*padded, str(cells[-1])]).rstrip() + "\n"

    lines = [row(_HEADERS)]
    for r in records:
        at = r.at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        lines.append(row((r.seq, at, r.actor, r.action, r.target, r.outcome, r.detail)))
        if len(lines) >= _FLUSH_EVERY:
            out.write("".join(lines))
            lines = []
    out.write("".join(lines))
    out.flush()


def _stream_json(records: Iterable[admin_pb2.AuditRecord], out: TextIO) -> None:
    """The same bytes as `render.print_json` of the whole list would write,
    one record at a time."""
    parts, first = ["["], True
    for r in records:
        text = json.dumps(jsondoc.doc(r), indent=2, sort_keys=True).replace("\n", "\n  ")
        parts.append(("\n  " if first else ",\n  ") + text)
        first = False
        if len(parts) >= _FLUSH_EVERY:
            out.write("".join(parts))
            parts = []
    parts.append("]\n" if first else "\n]\n")
    out.write("".join(parts))
    out.flush()


__all__ = ["AdminClient", "audit_app", "campaign_app"]
