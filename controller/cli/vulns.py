"""`fleetpatch vulns ...` and `fleetpatch compliance`: vulnerability feeds,
which hosts they leave exposed, and how the fleet keeps up (issue 15)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from fleetpatch import render
from fleetpatch.cliapp import new_app
from fleetpatch.durations import format_duration
from fleetpatch.v1 import vulns_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from controller.api import times
from controller.cli import jsondoc
from controller.cli.common import (
    ControllerOption,
    DataDirOption,
    JsonOption,
    RingFilterOption,
    client,
)
from controller.datadir import DEFAULT_DATA_DIR
from controller.errors import UsageError
from controller.vulns import SEVERITIES, check_severity

if TYPE_CHECKING:
    from controller.vulns.feeds import Feed, Vuln

vulns_app = new_app(
    help="Vulnerability feeds (Debian Security Tracker, OSV) and the hosts they leave exposed."
)

BATCH = 2000  # records per import message
SeverityOption = Annotated[
    str,
    typer.Option(
        "--severity", metavar="SEVERITY",
        help=f"Only this severity and worse ({', '.join(SEVERITIES)}).",
    ),
]  # fmt: skip


@vulns_app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Feeds: the Debian Security Tracker's JSON file, OSV records (a .json "
            "file, a directory of them, or osv.dev's all.zip of an ecosystem).",
            show_default=False,
        ),
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Import vulnerability feeds. Each is read whole first and taken in
    one transaction: a feed that does not read changes nothing. Importing
    the same feed again changes nothing; a newer tracker file replaces the
    older one. Hosts are matched against it at once."""
    feeds = [_read(path) for path in paths]
    done = []
    with client(data_dir, controller) as admin:
        for path, (feed, records) in zip(paths, feeds, strict=True):
            reply = admin.import_vulns(list(_batches(feed, records)))
            done.append(reply)
            if not json_out:
                print(
                    f"{path}: {reply.records} vulnerabilities from {reply.source} "
                    f"({reply.added} new, {reply.removed} removed); hosts are being matched"
                )
    if json_out:
        render.print_json([jsondoc.doc(r) for r in done])


def _read(path: Path) -> tuple[Feed, list[Vuln]]:
    """The feed's records, read whole (progress on a terminal); raises
    UsageError for a feed that does not read."""
    # Here, not at the top: the feeds' version schemes (univers) are slow to
    # import, and every other `fleetpatch` command would pay for them.
    from controller.vulns.feeds import FeedError, read

    try:
        feed = read(path)
        records = []
        for count, record in enumerate(feed.records, 1):
            records.append(record)
            if count % 20000 == 0 and sys.stderr.isatty():
                print(f"{path}: {count} records read...", file=sys.stderr)
    except FeedError as exc:
        raise UsageError(f"{exc}; nothing was imported") from None
    if not records:
        raise UsageError(f"{path}: no vulnerability records in it; nothing was imported")
    return feed, records


def _batches(feed: Feed, records: Sequence[Vuln]) -> Iterable[vulns_pb2.ImportVulnsRequest]:
    for start in range(0, len(records), BATCH):
        last = start + BATCH >= len(records)
        message = vulns_pb2.ImportVulnsRequest(
            source=feed.source, replace=feed.replace, commit=last,
            vulns=[_vuln_pb(v) for v in records[start : start + BATCH]],
        )  # fmt: skip
        if last and feed.date is not None:
            message.feed_date.CopyFrom(_ts(feed.date))
        yield message


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _vuln_pb(v: Vuln) -> vulns_pb2.Vulnerability:
    pb = vulns_pb2.Vulnerability(
        vuln_id=v.vuln_id, severity=v.severity, summary=v.summary, aliases=v.aliases,
        withdrawn=v.withdrawn,
        affected=[
            vulns_pb2.AffectedRange(
                release=a.release, package=a.package, introduced=a.introduced, fixed=a.fixed
            )
            for a in v.affected
        ],
    )  # fmt: skip
    if v.published is not None:
        pb.published.CopyFrom(_ts(v.published))
    if v.modified is not None:
        pb.modified.CopyFrom(_ts(v.modified))
    return pb


@vulns_app.command("list")
def list_(
    severity: SeverityOption = "",
    region: Annotated[str, typer.Option(help="Only hosts of this region.")] = "",
    ring: RingFilterOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Vulnerabilities that leave enrolled hosts exposed now, most severe
    and widest first: how many hosts, how many of them are offered the fix
    by their repositories (FIXABLE), and the fixed versions and packages
    the feeds name for the fleet's releases (`vulns show` has them per host)."""
    request = vulns_pb2.ListVulnsRequest(
        min_severity=check_severity(severity, "--severity"), region=region
    )
    if ring is not None:
        request.ring = ring
    with client(data_dir, controller) as admin:
        reply = admin.list_vulns(request)
    if json_out:
        render.print_json([jsondoc.doc(v) for v in reply.vulns])
        return
    now = datetime.now(UTC)
    render.table(
        ["VULNERABILITY", "SEVERITY", "HOSTS", "FIXABLE", "FIXED IN", "PACKAGES", "KNOWN SINCE"],
        [
            (
                v.vuln_id, v.severity, v.hosts, v.fixable, _versions(v.fixed_versions),
                ", ".join(v.packages) or "-", _since(v, now),
            )
            for v in reply.vulns
        ],
    )  # fmt: skip
    if not reply.sources:
        print("no feed imported yet: fleetpatch vulns import FILE", file=sys.stderr)
    elif not reply.vulns:
        print("no enrolled host is exposed to an imported vulnerability", file=sys.stderr)
    for src in reply.sources:
        dated = jsondoc.timestamp(src.feed_date) or "undated"
        print(
            f"feed {src.source}: {src.records} records of {dated}, imported "
            f"{render.ago(times.from_timestamp(src.imported_at), now)} by {src.imported_by}",
            file=sys.stderr,
        )


def _versions(found: Sequence[str]) -> str:
    if not found:
        return "no fix yet"
    return found[0] if len(found) == 1 else f"{found[0]} (+{len(found) - 1})"


def _since(v: vulns_pb2.VulnSummary, now: datetime) -> str:
    if v.HasField("published"):
        return f"published {times.from_timestamp(v.published):%Y-%m-%d}"
    if v.HasField("first_seen"):
        return f"seen {render.ago(times.from_timestamp(v.first_seen), now)}"
    return "-"


@vulns_app.command("show")
def show(
    vuln_id: Annotated[
        str, typer.Argument(help="A vulnerability id (CVE-...) or an advisory (DSA-..., ALSA-...).")
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """One vulnerability: what the feeds say, the hosts exposed now and
    since when, the hosts that fixed it and when, and the campaigns that
    fix it."""
    with client(data_dir, controller) as admin:
        got = admin.get_vuln(vuln_id)
    if json_out:
        render.print_json(jsondoc.doc(got))
        return
    now = datetime.now(UTC)
    for v in got.vulns:
        print(f"{v.vuln_id}  {v.severity}  (from {v.source})")
        if v.aliases:
            print(f"  aliases    {', '.join(v.aliases)}")
        if v.HasField("published"):
            print(f"  published  {times.from_timestamp(v.published):%Y-%m-%d}")
        if v.summary:
            print(f"  summary    {v.summary}")
        for a in v.affected:
            since = f" from {a.introduced}" if a.introduced else ""
            fix = f"fixed in {a.fixed}" if a.fixed else "no fix yet"
            print(f"  {a.release:<14} {a.package}{since}: {fix}")
    open_ = [e for e in got.exposures if not e.HasField("fixed_at")]
    fixed = [e for e in got.exposures if e.HasField("fixed_at")]
    print(f"\nexposed now: {len({e.host_id for e in open_})} host(s)")
    if open_:
        render.table(
            ["HOST", "REGION", "RING", "PACKAGE", "INSTALLED", "FIXED IN", "OFFERED", "SINCE"],
            [
                (
                    e.host_id, e.region, e.ring, e.package, e.installed, e.fixed or "no fix yet",
                    "yes" if e.available else "no",
                    render.ago(times.from_timestamp(e.first_seen), now),
                )
                for e in open_
            ],
        )  # fmt: skip
    print(f"\nfixed: {len({e.host_id for e in fixed})} host(s)")
    if fixed:
        render.table(
            ["HOST", "PACKAGE", "WAS", "FIXED"],
            [
                (e.host_id, e.package, e.installed,
                 render.ago(times.from_timestamp(e.fixed_at), now))
                for e in fixed
            ],
        )  # fmt: skip
    print("\ncampaigns: " + (", ".join(f"{c.campaign_id} ({c.name}, {c.state})"
                                      for c in got.campaigns) or "none"))  # fmt: skip


def compliance(
    by: Annotated[
        str,
        typer.Option(help="Group by ring, region or os; default: the whole fleet.", metavar="BY"),
    ] = "",
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
    json_out: JsonOption = False,
) -> None:
    """The share of hosts on policy: no security fix waiting longer than its
    severity's grace period (controller.toml [compliance]); the hosts out of
    policy and why; the mean and 90th-percentile time to remediate per
    severity, from disclosure (or first seen on the fleet) to the fix."""
    if by not in ("", "ring", "region", "os"):
        raise UsageError(f"--by {by!r}: one of ring, region, os")
    with client(data_dir, controller) as admin:
        got = admin.compliance(by)
    if json_out:
        render.print_json(jsondoc.doc(got))
        return
    hosts = sum(g.hosts for g in got.groups)
    on = sum(g.on_policy for g in got.groups)
    assessed = hosts - sum(g.unassessed for g in got.groups)
    print(f"on policy: {on} of {assessed} assessed host(s) ({_share(on, assessed)})"
          + (f"; {hosts - assessed} not assessed (no imported feed covers their release)"
             if hosts > assessed else ""))  # fmt: skip
    if by:
        render.table(
            [by.upper(), "HOSTS", "ON POLICY", "SHARE", "NOT ASSESSED"],
            [(g.key, g.hosts, g.on_policy, _share(g.on_policy, g.hosts - g.unassessed),
              g.unassessed) for g in got.groups],
        )  # fmt: skip
    if got.out_of_policy:
        print(f"\nout of policy: {len({b.host_id for b in got.out_of_policy})} host(s)")
        render.table(
            ["HOST", "VULNERABILITY", "SEVERITY", "PACKAGE", "FIXED IN", "AGE", "GRACE"],
            [
                (b.host_id, b.vuln_id, b.severity, b.package, b.fixed,
                 format_duration(b.age.ToTimedelta()), format_duration(b.grace.ToTimedelta()))
                for b in got.out_of_policy
            ],
        )  # fmt: skip
    print("\ntime to remediate (disclosure or first seen -> fixed on the host):")
    if got.remediation:
        render.table(
            ["SEVERITY", "FIXES", "MEAN", "P90"],
            [(r.severity, r.count, format_duration(_whole(r.mean.ToTimedelta())),
              format_duration(_whole(r.p90.ToTimedelta()))) for r in got.remediation],
        )  # fmt: skip
    else:
        print("  no vulnerability fixed on a host yet")
    policy = ", ".join(f"{g.severity} {format_duration(g.grace.ToTimedelta())}" for g in got.policy)
    print(f"\npolicy (grace per severity): {policy}")


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _whole(span: timedelta) -> timedelta:
    return timedelta(seconds=int(span.total_seconds()))
