"""`fleetpatch campaign plan`: a campaign file that patches exactly the
hosts exposed to the named vulnerabilities, to exactly the versions that
fix them. It is written for a person to review, then goes through
`campaign rehearse`, `create` and `approve` as any other campaign file."""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from fleetpatch import render
from fleetpatch.atomicfile import write_atomic
from fleetpatch.v1 import vulns_pb2

from controller.cli.common import ControllerOption, DataDirOption, client
from controller.cli.vulns import SeverityOption
from controller.datadir import DEFAULT_DATA_DIR
from controller.errors import UsageError
from controller.vulns import check_severity, releases

# Tables a template may give; the rest is what the plan is about.
TEMPLATE_TABLES = ("verify", "rollout", "windows")


def plan(
    cve: Annotated[
        list[str] | None,
        typer.Option(
            "--cve",
            metavar="ID",
            help="A vulnerability or advisory to fix (repeat for several).",
        ),
    ] = None,
    severity: SeverityOption = "",
    region: Annotated[str, typer.Option(help="Only hosts of this region.")] = "",
    name: Annotated[
        str, typer.Option(help="The campaign's name; default: from the first id.")
    ] = "",
    template: Annotated[
        Path | None,
        typer.Option(
            help="A campaign file whose [verify], [rollout] and [windows] the plan takes; "
            "default: one ring after another in the exposed hosts' rings.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the campaign file here; default: stdout.")
    ] = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller: ControllerOption = None,
) -> None:
    """Plan a campaign from exposure: the hosts exposed now to the given
    vulnerabilities (--cve) or to every vulnerability of a severity and
    worse (--severity) that has a fix, each package at the version that
    fixes it. Review the file, then `campaign rehearse` and `create` it."""
    from controller.campaigns import CampaignError, parse_campaign  # slow: only here

    ids = list(cve or [])
    if bool(ids) == bool(severity):
        raise UsageError("give --cve ID (one or more) or --severity SEVERITY, not both")
    check_severity(severity, "--severity")
    if name:
        _check_name(name)
    if out is not None:
        _check_out(out)
    tables = _template(template) if template is not None else {}
    request = vulns_pb2.ListExposuresRequest(
        vuln_ids=ids, open_only=True, min_severity=severity, region=region, with_binaries=True
    )
    with client(data_dir, controller) as admin:
        exposures = admin.exposures(request)
    fixable = [e for e in exposures if e.fixed]
    unfixed = sorted({e.vuln_id for e in exposures if not e.fixed})
    if not fixable:
        what = ", ".join(ids) if ids else f"severity {severity} or worse"
        raise UsageError(
            f"no enrolled host is exposed to {what} with a fix to install; nothing to plan"
            + (f" ({', '.join(unfixed)} have no fix yet)" if unfixed else "")
        )
    text = render_plan(fixable, ids, severity, region, name, tables, unfixed)
    try:
        parse_campaign(text, "the planned campaign")  # what create would take
    except CampaignError as exc:  # a bug here: still one line
        raise UsageError(f"{exc} (not written)") from None
    if out is None:
        sys.stdout.write(text)
        return
    try:
        write_atomic(out, text.encode(), 0o644)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it: {exc.strerror or exc}") from None
    hosts = len({e.host_id for e in fixable})
    print(f"wrote {out}: {hosts} host(s); review it, then: fleetpatch campaign rehearse {out}",
          file=sys.stderr)  # fmt: skip


def _check_name(name: str) -> None:
    """--name, by the rule of a campaign file's name (parse_campaign's own:
    a file naming only the campaign is refused for its name first, if at
    all). Raises UsageError."""
    from controller.campaigns import CampaignError, parse_campaign

    try:
        parse_campaign(tomli_w.dumps({"campaign": {"name": name}}), "--name")
    except CampaignError as exc:
        if exc.field == "campaign.name":
            raise UsageError(f"--name {exc.problem}") from None


def _check_out(out: Path) -> None:
    """--out names a file that can be written (before the controller is
    asked); raises UsageError naming it."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; name a file in it")
    try:
        mode = os.lstat(out).st_mode
    except (FileNotFoundError, NotADirectoryError):  # the parent is checked below
        mode = stat.S_IFREG
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        # Written atomically, by a rename over it: a device (/dev/full) or
        # a symlink (/dev/stdout) would be replaced by the file, as root.
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise UsageError(f"--out {out} is {what}; name a regular file (or leave --out out "
                         "for standard output)")  # fmt: skip
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: there is no directory {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write in {out.parent}")


def _template(path: Path) -> dict[str, Any]:
    """The [verify], [rollout] and [windows] of a campaign file, which must
    itself be valid."""
    from controller.campaigns import CampaignError, parse_campaign

    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file") from None
    try:
        parse_campaign(text, str(path))
    except CampaignError as exc:
        raise UsageError(f"template {exc}") from None
    doc = tomllib.loads(text)
    return {k: doc[k] for k in TEMPLATE_TABLES if k in doc}


def render_plan(
    exposures: Sequence[vulns_pb2.Exposure],
    ids: Sequence[str],
    severity: str,
    region: str,
    name: str,
    tables: dict[str, Any],
    unfixed: Sequence[str] = (),
) -> str:
    """The campaign file: a header saying what it fixes where, then TOML."""
    hosts = sorted({e.host_id for e in exposures})
    fixes = sorted({e.vuln_id for e in exposures})
    packages = _packages(exposures, hosts)
    rings = sorted({e.ring for e in exposures})
    now = render.rfc3339(datetime.now(UTC))
    asked = " ".join(f"--cve {i}" for i in ids) or f"--severity {severity}"
    lines = [
        f"# Planned by `fleetpatch campaign plan {asked}"
        + (f" --region {region}" if region else "") + f"` at {now}.",
        "# It patches exactly the hosts exposed then, to the versions that fix:",
    ]  # fmt: skip
    by_vuln: dict[str, list[vulns_pb2.Exposure]] = defaultdict(list)
    for e in exposures:
        by_vuln[e.vuln_id].append(e)
    for vuln_id in fixes:
        found = by_vuln[vuln_id]
        what = sorted({f"{e.package} < {e.fixed}" for e in found})
        lines.append(f"#   {vuln_id} ({found[0].severity}): {len({e.host_id for e in found})} "
                     f"host(s), {', '.join(what)}")  # fmt: skip
    if unfixed:
        lines.append(f"# Left out, no fix yet: {', '.join(unfixed)}.")
    partial = [p["name"] for p in packages if "min_version" not in p]
    if partial:
        lines.append(
            f"# Not installed on every host (so updated to the newest, no minimum): "
            f"{', '.join(partial)}."
        )
    lines += ["# Review it, then: fleetpatch campaign rehearse FILE; "
              "fleetpatch campaign create FILE", ""]  # fmt: skip
    doc: dict[str, Any] = {
        "campaign": {
            "name": name or _name(fixes),
            "description": f"fixes {', '.join(fixes)}"[:500],
            "fixes": fixes,
        },
        "patch": {"packages": packages},
        "targets": {"hosts": hosts},
        **tables,
    }
    if "rollout" not in doc:
        doc["rollout"] = {"rings": [{"ring": r} for r in rings]}
    else:
        listed = {r.get("ring") for r in doc["rollout"].get("rings", [])}
        missing = [r for r in rings if r not in listed]
        if missing:
            lines.insert(-1, f"# Warning: the template's rollout has no ring {missing}: "
                             "those hosts would not be patched.")  # fmt: skip
    return "\n".join(lines) + "\n" + tomli_w.dumps(doc)


def _packages(
    exposures: Sequence[vulns_pb2.Exposure], hosts: Sequence[str]
) -> list[dict[str, str]]:
    """Each installed package the exposures stand for, with the highest
    fixed version as its minimum where every targeted host has it at a
    version that follows its source's (else the newest, no minimum: the
    agent refuses a minimum for a package a host does not have)."""
    from controller.vulns import versions  # slow to import (univers): only here

    minimum: dict[str, str] = {}
    family_of: dict[str, str] = {}
    on_hosts: dict[str, set[str]] = defaultdict(set)
    exact: dict[str, bool] = defaultdict(lambda: True)
    for e in exposures:
        family = releases.os_family(e.os)
        for binary in e.binaries or [vulns_pb2.BinaryPackage(name=e.package, version=e.installed)]:
            on_hosts[binary.name].add(e.host_id)
            family_of[binary.name] = family
            # A binary at the source's version (or a rebuild of it, +bN) will be
            # at the fixed version or above it once fixed.
            if not releases.follows_source(binary.version, e.installed):
                exact[binary.name] = False
            held = minimum.get(binary.name)
            if held is None or versions.compare(family, e.fixed, held) > 0:
                minimum[binary.name] = e.fixed
    found = []
    for package in sorted(minimum):
        if exact[package] and on_hosts[package] >= set(hosts):
            found.append({"name": package, "min_version": minimum[package]})
        else:
            found.append({"name": package})
    return found


def _name(fixes: Sequence[str]) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", f"fix-{fixes[0]}".lower()).strip("-")
    extra = f"-and-{len(fixes) - 1}-more" if len(fixes) > 1 else ""
    return (base[: 63 - len(extra)] + extra).strip("-")
