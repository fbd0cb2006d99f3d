"""`fleetpatch`: run the controller and administer the fleet.

Exit codes: controller.errors.EXIT_CODES (every command's --help ends with
them).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from fleetpatch import labels as labelspec
from fleetpatch import logline, render
from fleetpatch.cliapp import exit_codes_epilog, new_app, run
from fleetpatch.durations import format_duration, parse_duration
from fleetpatch.v1 import admin_pb2, vulns_pb2

from controller.api import times
from controller.cli import jsondoc
from controller.cli.admins import admin_app
from controller.cli.campaigns import audit_app, campaign_app
from controller.cli.common import ControllerOption, DataDirOption, JsonOption, client
from controller.cli.plan import plan
from controller.cli.release import release_app
from controller.cli.vulns import compliance, vulns_app
from controller.datadir import DEFAULT_DATA_DIR, DEFAULT_PORT, DataDir
from controller.errors import EXIT_CODES, FleetpatchError, UsageError
from controller.fleet.signing import rotate

app = new_app(help="fleetpatch controller and admin CLI: campaigns that patch Linux fleets safely.")
controller_app = new_app(help="Set up and run the controller.")
token_app = new_app(help="Enrollment tokens: what an agent needs to join.")
hosts_app = new_app(help="Enrolled hosts: inventory, health, revocation.")
app.add_typer(controller_app, name="controller")
app.add_typer(token_app, name="token")
app.add_typer(hosts_app, name="hosts")
app.add_typer(campaign_app, name="campaign")
app.add_typer(audit_app, name="audit")
app.add_typer(release_app, name="release")
app.add_typer(vulns_app, name="vulns")
app.command("compliance")(compliance)
campaign_app.command("plan")(plan)
app.add_typer(admin_app, name="admin")

# -- controller ------------------------------------------------------------------


@controller_app.command("init")
def controller_init(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            help="Name (or address) agents use to reach the controller; "
            "it goes into the server certificate. Repeat it (or separate with commas) "
            "for a certificate that covers several names, e.g. a name all replicas "
            "answer to and this replica's own; the first is the advertised one. "
            "An internationalised name in its A-label (xn--) form. "
            "Default: this machine's FQDN."
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="Address the mutual-TLS listener binds.")
    ] = f"0.0.0.0:{DEFAULT_PORT}",
    checkin_interval: Annotated[
        str, typer.Option(help="How often agents check in (e.g. 30s, 5m).")
    ] = "5m",
    owner: Annotated[
        str,
        typer.Option(
            help="Name of the first admin, an owner (the person running this); their "
            "certificate is the data dir's admin.pem."
        ),
    ] = "admin",
) -> None:
    """Create a controller: CA, server and first owner's certificates,
    work-order signing key, settings and database."""
    from controller.fleet.bootstrap import init_data_dir  # the store: slow to import

    try:
        parse_duration(checkin_interval)
    except ValueError as exc:
        raise UsageError(f"--checkin-interval: {exc}") from None
    names = _names(hostname) or [_own_name()]
    made = init_data_dir(data_dir, names, listen, checkin_interval, owner)
    print(f"initialised {made.path}")
    print(f"  first owner: {owner} (admin certificate {made.admin_cert})")
    print(f"  CA certificate (give to agents with --ca-cert): {made.ca_cert}")
    print(f"  settings: {made.config}")
    print(f"next: fleetpatch controller serve --data-dir {made.path}")


@controller_app.command("serve")
def controller_serve(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    listen: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="Override [server] listen from the settings."),
    ] = None,
    enroll_listen: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="Enrollment listener; default: the next port."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve agents and admins until SIGTERM or Ctrl-C, then stop gracefully."""
    from controller.api.server import serve

    _setup_logging(log_level)
    asyncio.run(serve(DataDir.at(data_dir), listen, enroll_listen))


@controller_app.command("rotate-key")
def controller_rotate_key(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    revoke_old: Annotated[
        bool,
        typer.Option(
            "--revoke-old",
            help="The current key leaked: agents refuse it, and any key it endorses but the "
            "new one, from their next check-in, with no grace period.",
        ),
    ] = False,
) -> None:
    """Make a new work-order signing key, endorsed by the current one. Restart
    `serve` to sign with it; agents learn it at their next check-in, and stop
    trusting the old key `signing.old_key_grace` after that restart."""
    old, new = rotate(DataDir.at(data_dir), datetime.now(UTC), revoke_old)
    if revoke_old:
        print(f"signing key {old} revoked; new key {new}, endorsed by {old}")
        print("agents refuse the revoked key from their next check-in")
    else:
        print(f"signing key {old} retired; new key {new}, endorsed by {old}")
        print("agents stop trusting it signing.old_key_grace after the restart")
    print("restart `fleetpatch controller serve` to sign orders with it")


@controller_app.command("rotate-ca")
def controller_rotate_ca(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    retire_old: Annotated[
        bool,
        typer.Option(
            "--retire-old",
            help="End the rotation: the new CA becomes the only one trusted; hosts still on "
            "the old one must enroll again.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --retire-old: even while hosts still hold old certificates."
        ),
    ] = False,
) -> None:
    """Rotate the fleet CA without a flag day: make a new CA, endorsed by the
    current one (restart `serve`: agents learn it at their next check-in and
    renew onto it); later, --retire-old. Run with `serve` stopped."""
    from controller.fleet import carotation  # the store: slow to import

    now = datetime.now(UTC)
    if not retire_old:
        new = carotation.rotate(DataDir(data_dir), now)
        print(f"new CA {format(new.serial_number, 'x')} made, endorsed by the current one")
        print("restart `fleetpatch controller serve`: agents trust both CAs and renew onto the")
        print("new one at their next check-in; admins run `fleetpatch admin renew`; then")
        print("`fleetpatch controller rotate-ca --retire-old`")
        return
    retired = carotation.retire(DataDir(data_dir), now, force)
    print(f"CA {retired.old_serial} retired: {data_dir / 'ca.pem'} is the new CA")
    if retired.stragglers:
        print(f"{len(retired.stragglers)} host(s) left on the old CA must enroll again with it:",
              " ".join(retired.stragglers))  # fmt: skip
    print("restart `fleetpatch controller serve`; give the new ca.pem to new agents (--ca-cert)")


@controller_app.command("renew-server-cert")
def controller_renew_server_cert(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            help="Name (or address) the new certificate covers; repeat it (or separate with "
            "commas); an internationalised name in its A-label (xn--) form. "
            "Default: the names of the current one. A replica added later gives "
            "the name all replicas answer to and its own; the advertised address "
            "(server.advertise) must be among them."
        ),
    ] = None,
) -> None:
    """Issue this controller's TLS server certificate again, with a new key,
    from the CA agents trust: before the current one ends (825 days; `serve`
    warns 30 days ahead), or for other names. Restart `serve` to use it;
    agents and admins need nothing new."""
    from controller.fleet import servercert
    from controller.fleet.pki import names_of

    names = _names(hostname)
    issued = servercert.renew(DataDir.at(data_dir), names or None)
    print(f"issued {data_dir / 'server.pem'} (serial {issued.serial_number:x}) for "
          f"{', '.join(names_of(issued))}: valid until "
          f"{issued.not_valid_after_utc:%Y-%m-%d %H:%M}Z")  # fmt: skip
    print("restart `fleetpatch controller serve` to use it")


def _own_name() -> str:
    """This machine's FQDN, init's default --hostname, if it is a host name."""
    from controller.fleet.pki import check_hostnames

    name = socket.getfqdn()
    try:
        return check_hostnames([name])[0]
    except UsageError as exc:
        raise UsageError(f"{exc} (this machine's name, the default): pass --hostname") from None


def _names(hostname: list[str] | None) -> list[str]:
    """--hostname's names: the option repeated, or commas within one."""
    return [name.strip() for given in hostname or () for name in given.split(",")]


def _setup_logging(level: str) -> None:
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log-level {level!r} is not one of debug, info, warning, error")
    logline.setup(level.upper())


# -- tokens ----------------------------------------------------------------------


@token_app.command("create")
def token_create(
    region: Annotated[str, typer.Option(help="Region of the hosts that enroll with it.")],
    ring: Annotated[int, typer.Option(help="Ring (canary wave) of those hosts; 0 goes first.")],
    uses: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="How many hosts may enroll with it.")
    ] = 1,
    ttl: Annotated[str, typer.Option(help="How long it is valid (e.g. 30m, 1h, 7d).")] = "1h",
    label: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Label for every host it enrolls (repeatable); a host cannot change it.",
        ),
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Make an enrollment token. The token is printed once, as the last line."""
    try:
        request = admin_pb2.CreateTokenRequest(
            region=labelspec.check_region(region),
            ring=labelspec.check_ring(ring),
            uses=uses,
            ttl=times.duration(parse_duration(ttl)),
            labels=labelspec.parse_labels(label or []),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with client(data_dir, controller) as admin:
        made = admin.create_token(request)
    if json_out:
        render.print_json({**jsondoc.doc(made.token), "token": made.secret})
        return
    expires = times.from_timestamp(made.token.expires_at)
    print(
        f"token {made.token.token_id}: region {region}, ring {ring}, "
        f"{uses} use(s), expires {expires:%Y-%m-%d %H:%M:%SZ}",
        file=sys.stderr,
    )
    print(made.secret)


@token_app.command("list")
def token_list(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List enrollment tokens (never their secrets)."""
    with client(data_dir, controller) as admin:
        found = admin.list_tokens()
    if json_out:
        render.print_json([jsondoc.doc(t) for t in found])
        return
    now = datetime.now(UTC)
    render.table(
        ["TOKEN", "REGION", "RING", "USES", "EXPIRES", "STATE"],
        [
            (
                t.token_id,
                t.region,
                t.ring,
                f"{t.uses}/{t.uses_allowed}",
                f"{times.from_timestamp(t.expires_at):%Y-%m-%d %H:%M}Z",
                _token_state(t, now),
            )
            for t in found
        ],
    )


def _token_state(token: admin_pb2.Token, now: datetime) -> str:
    if token.revoked:
        return "revoked"
    if times.from_timestamp(token.expires_at) <= now:
        return "expired"
    if token.uses >= token.uses_allowed:
        return "used up"
    return "usable"


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id, as `token list` shows it.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Revoke an enrollment token; hosts already enrolled with it stay."""
    with client(data_dir, controller) as admin:
        token = admin.revoke_token(token_id)
    print(f"revoked token {token.token_id}")


# -- hosts -----------------------------------------------------------------------


@hosts_app.command("list")
def hosts_list(
    region: Annotated[str, typer.Option(help="Only this region.")] = "",
    ring: Annotated[int | None, typer.Option(help="Only this ring.")] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List enrolled hosts."""
    with client(data_dir, controller) as admin:
        found = list(admin.iter_hosts(region, ring))
    if json_out:
        render.print_json([jsondoc.doc(h) for h in found])
        _warn_shared_machine_ids(found)
        return
    now = datetime.now(UTC)
    render.table(
        [
            "HOST",
            "HOSTNAME",
            "REGION",
            "RING",
            "OS",
            "KERNEL",
            "PKGS",
            "HEALTH",
            "OWES",
            "LAST SEEN",
            "CERTIFICATE",
        ],
        [
            (
                h.host_id,
                h.facts.hostname or "-",
                h.region,
                h.ring,
                f"{h.facts.os_id} {h.facts.os_version}".strip() or "-",
                h.facts.kernel or "-",
                h.package_count,
                _health(h),
                ", ".join(h.owes) or "-",
                _seen(h, now),
                _certificate(h, now),
            )
            for h in found
        ],
    )
    _warn_shared_machine_ids(found)
    if not found:
        print(
            "no hosts enrolled" + (" matching the filter" if region or ring is not None else ""),
            file=sys.stderr,
        )


def _warn_shared_machine_ids(hosts: list[admin_pb2.Host]) -> None:
    """On stderr: hosts (not revoked) that report the same machine-id,
    typically cloned from one image without resetting /etc/machine-id."""
    by_id: dict[str, list[str]] = {}
    for h in hosts:
        if h.facts.machine_id and h.status != admin_pb2.HOST_STATUS_REVOKED:
            by_id.setdefault(h.facts.machine_id, []).append(h.host_id)
    for machine_id, ids in sorted(by_id.items()):
        if len(ids) > 1:
            print(
                f"fleetpatch: warning: {len(ids)} hosts share machine-id {machine_id}: "
                f"{', '.join(ids)} (cloned from one image? give each its own "
                "/etc/machine-id, or revoke the copies)",
                file=sys.stderr,
            )


def _health(host: admin_pb2.Host) -> str:
    if host.status == admin_pb2.HOST_STATUS_REVOKED:
        return "revoked"
    if not host.health.checks:
        return "unknown"
    return "healthy" if host.health.healthy else "UNHEALTHY"


def _certificate(host: admin_pb2.Host, now: datetime) -> str:
    """When the host's certificate expires, and whether its renewal is
    failing (flagged in capitals), due or overdue."""
    if not host.HasField("certificate_expires_at"):
        return "-"
    expires = times.from_timestamp(host.certificate_expires_at)
    text = f"expires {expires:%Y-%m-%d %H:%M}Z"
    if expires <= now:
        return f"EXPIRED {expires:%Y-%m-%d %H:%M}Z (enroll again)"
    if host.renewal_failing:
        return f"{text}, RENEWAL FAILING ({host.renewal_failures} in a row)"
    if host.HasField("certificate_renew_at") and (
        times.from_timestamp(host.certificate_renew_at) <= now
    ):
        return f"{text}, renewal due"
    return text


def _seen(host: admin_pb2.Host, now: datetime) -> str:
    return render.ago(
        times.from_timestamp(host.last_seen) if host.HasField("last_seen") else None, now
    )


@hosts_app.command("show")
def hosts_show(
    host_id: Annotated[str, typer.Argument(help="Host id, as `hosts list` shows it.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one host: facts, health, labels, the updates available to it
    (as its agent last scanned them), the vulnerabilities it is exposed to
    and its installed packages."""
    with client(data_dir, controller) as admin:
        got = admin.get_host(host_id)
        exposed = admin.exposures(vulns_pb2.ListExposuresRequest(host_id=host_id, open_only=True))
    if json_out:
        render.print_json(
            {
                **jsondoc.doc(got.host),
                "updates": _updates_doc(got),
                "exposures": [jsondoc.doc(e) for e in exposed],
                "packages": [jsondoc.doc(p) for p in got.inventory.packages],
            }
        )
        return
    h, f, now = got.host, got.host.facts, datetime.now(UTC)
    fields = [
        ("host", h.host_id),
        ("hostname", f.hostname),
        ("status", admin_pb2.HostStatus.Name(h.status).removeprefix("HOST_STATUS_").lower()),
        ("region / ring", f"{h.region} / {h.ring}"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(h.labels.items())) or "-"),
        (
            "os",
            f"{f.os_id} {f.os_version} ({f.os_codename})"
            if f.os_codename
            else f"{f.os_id} {f.os_version}",
        ),
        ("kernel", f"{f.kernel} {f.arch}"),
        ("cpus / memory", f"{f.cpu_count} / {render.size(f.memory_bytes)}"),
        ("disk /", f"{render.size(f.disk_free_bytes)} free of {render.size(f.disk_total_bytes)}"),
        (
            "uptime",
            format_duration(timedelta(seconds=f.uptime_seconds)),
        ),
        ("boot id", f.boot_id),
        ("timezone", f.timezone or "-"),
        ("package manager", f.package_manager or "-"),
        ("agent", f.agent_version or "-"),
        ("enrolled", f"{times.from_timestamp(h.enrolled_at):%Y-%m-%d %H:%M:%SZ}"),
        ("last seen", _seen(h, now)),
        ("check-ins", str(h.checkins)),
        ("health", _health(h)),
        ("certificate", f"serial {h.certificate_serial or '-'}, {_certificate(h, now)}"),
        (
            "renews at",
            f"{times.from_timestamp(h.certificate_renew_at):%Y-%m-%d %H:%M:%SZ}"
            if h.HasField("certificate_renew_at")
            else "-",
        ),
        (
            "renewal",
            f"failed {h.renewal_failures} time(s) in a row: {h.renewal_error}"
            if h.renewal_failures
            else "ok",
        ),
        ("owes", ", ".join(h.owes) or "-"),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key.ljust(width)}  {value}")
    for check in h.health.checks:
        print(f"{''.ljust(width)}  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    _print_updates(got)
    _print_exposures(exposed, now)
    inventory = h.inventory_hash or "not yet received"
    print(f"\npackages ({len(got.inventory.packages)}, inventory {inventory}):")
    render.table(
        ["NAME", "VERSION", "ARCH"],
        [(p.name, p.version, p.arch) for p in got.inventory.packages],
    )


def _print_exposures(exposed: list[vulns_pb2.Exposure], now: datetime) -> None:
    print(f"\nexposed to ({len({e.vuln_id for e in exposed})} vulnerabilities):")
    if not exposed:
        print("  nothing known (`fleetpatch vulns import` a feed to see)")
        return
    render.table(
        ["VULNERABILITY", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED IN", "OFFERED", "SINCE"],
        [
            (e.vuln_id, e.severity, e.package, e.installed, e.fixed or "no fix yet",
             "yes" if e.available else "no", render.ago(times.from_timestamp(e.first_seen), now))
            for e in exposed
        ],
    )  # fmt: skip


def _updates_doc(got: admin_pb2.GetHostResponse) -> dict[str, object] | None:
    if not got.HasField("updates"):
        return None
    return {
        "scanned_at": jsondoc.timestamp(got.updates.scanned_at),
        "available": [jsondoc.doc(u) for u in got.updates.updates],
    }


def _print_updates(got: admin_pb2.GetHostResponse) -> None:
    if not got.HasField("updates"):
        print("\nupdates available: not reported yet (the agent scans every [agent] scan_interval)")
        return
    found = got.updates.updates
    at = times.from_timestamp(got.updates.scanned_at)
    security = sum(1 for u in found if u.security)
    reboot = sum(1 for u in found if u.reboot)
    print(f"\nupdates available ({len(found)}, {security} with a security fix, {reboot} needing "
          f"a reboot; scanned {at:%Y-%m-%d %H:%M}Z):")  # fmt: skip
    if found:
        render.updates_table(found)


@hosts_app.command("revoke")
def hosts_revoke(
    host_id: Annotated[str, typer.Argument(help="Host id, as `hosts list` shows it.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Revoke a host: its certificate is refused from now on."""
    with client(data_dir, controller) as admin:
        host = admin.revoke_host(host_id)
    print(f"revoked host {host.host_id} ({host.facts.hostname or 'unknown hostname'})")


@hosts_app.command("relabel")
def hosts_relabel(
    host_id: Annotated[str, typer.Argument(help="Host id, as `hosts list` shows it.")],
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Add or change a label (repeatable)."),
    ] = None,
    unlabel: Annotated[
        list[str] | None, typer.Option(metavar="KEY", help="Remove a label (repeatable).")
    ] = None,
    ring: Annotated[int | None, typer.Option(help="Move the host to this ring.")] = None,
    region: Annotated[str | None, typer.Option(help="Move the host to this region.")] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Change a host's labels, ring or region after enrollment (audited).
    Campaigns see the change at the host's next check-in: what targets it,
    its ring's turn. An order it already has runs on unchanged."""
    try:
        request = admin_pb2.RelabelHostRequest(
            host_id=host_id,
            set_labels=labelspec.parse_labels(label or []),
            remove_labels=unlabel or [],
            region=None if region is None else labelspec.check_region(region),
            ring=None if ring is None else labelspec.check_ring(ring),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not (label or unlabel or ring is not None or region is not None):
        raise UsageError("nothing to change: give --label, --unlabel, --ring or --region")
    with client(data_dir, controller) as admin:
        host = admin.relabel_host(request)
    if json_out:
        render.print_json(jsondoc.doc(host))
        return
    labels = ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items())) or "no labels"
    print(f"host {host.host_id}: region {host.region}, ring {host.ring}, {labels}")


def main() -> None:
    """Console entry point: one clear line and an exit code for every error."""
    try:
        run(app, epilog=exit_codes_epilog(EXIT_CODES))
    except FleetpatchError as exc:
        print(f"fleetpatch: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.filename is None:  # not a file of the data dir's: a bug, with its traceback
            raise
        # A file a command writes or reads where the system refuses (a
        # read-only or full data dir, permissions) and nothing named it
        # before: the same line as a damaged data dir, exit 2.
        print(f"fleetpatch: error: cannot use {exc.filename}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)
