"""Rebuild a .deb of an installed package from the files on the host, fast.

dpkg-repack, the usual tool, copies every file with its own `cp` process:
5,600 processes for an icon theme, about 20 s; a 90-package security
update spent minutes in it. Here the files travel in one `tar` archive
and the package is built with one `dpkg-deb`: the same content (the
installed files as they are now, the maintainer scripts and conffiles list
dpkg keeps, the package's control fields), a few processes per package.

Anything unusual (a diverted file, a package dpkg does not show as
installed at that version, a tool that fails) returns None, and the caller
falls back to dpkg-repack; what either produces is checked by the caller
(`dpkg-deb` reads it, and its name and version are the ones installed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent.backends import subp
from agent.errors import CommandFailed

log = logging.getLogger(__name__)
Runner = Callable[..., subp.Result]

# Control fields of the installed package that belong in a .deb; the rest
# of the status entry (Status, Conffiles with their sums, Config-Version)
# is dpkg's bookkeeping.
CONTROL_FIELDS = (
    "Package", "Source", "Version", "Architecture", "Maintainer", "Installed-Size",
    "Pre-Depends", "Depends", "Recommends", "Suggests", "Enhances", "Breaks", "Conflicts",
    "Replaces", "Provides", "Built-Using", "Static-Built-Using", "Essential", "Protected",
    "Multi-Arch", "Section", "Priority", "Homepage", "Description",
)  # fmt: skip
# Files of /var/lib/dpkg/info that go into DEBIAN/ (scripts executable).
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")
CONTROL_FILES = (*SCRIPTS, "templates", "triggers", "shlibs", "symbols", "conffiles", "md5sums")


def parse_status(text: str) -> dict[str, str]:
    """A dpkg status paragraph (``dpkg-query -s``) as fields; continuation
    lines kept as they are."""
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and name:
            fields[name] += "\n" + line
        elif ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def conffiles(fields: dict[str, str]) -> tuple[list[str], set[str]]:
    """The package's live conffiles, and those to leave out (obsolete, or
    to be removed on upgrade), from its status ``Conffiles`` field."""
    live, dropped = [], set()
    for line in fields.get("Conffiles", "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("obsolete", "remove-on-upgrade"):
            dropped.add(" ".join(parts[:-2]))
        elif len(parts) >= 2:
            live.append(" ".join(parts[:-1]))
    return live, dropped


def layout(paths: list[str]) -> tuple[list[str], list[str]]:
    """Split dpkg's file list into directories to create and members to
    copy. A path that is a symlink to a directory here but has files of
    the package below it (``/bin`` on a merged-/usr host) is a directory
    in the package, as dpkg-repack makes it."""
    listed = set(paths)
    dirs, members = [], []
    for path in paths:
        real_dir = os.path.isdir(path) and not os.path.islink(path)
        linked_dir = os.path.islink(path) and os.path.isdir(path)
        if real_dir or (linked_dir and any(p.startswith(path + "/") for p in listed)):
            dirs.append(path)
        else:
            members.append(path)
    return dirs, members


def repack(name: str, version: str, dest: Path, run: Runner = subp.run) -> Path | None:
    """Build ``dest/NAME_VERSION_ARCH.deb`` from the installed package
    ``name`` at ``version``; None when this quick way does not apply."""
    status = run(["dpkg-query", "-s", name], check=False)
    fields = parse_status(status.stdout)
    if (
        status.returncode != 0
        or fields.get("Version") != version
        or not fields.get("Status", "").endswith(" installed")
    ):
        return None
    listed = run(["dpkg-query", "-L", name], check=False)
    lines = [p for p in listed.stdout.splitlines() if p and p != "/."]
    if listed.returncode != 0 or any(not p.startswith("/") for p in lines):
        return None  # diversions ("diverted by ..."): leave them to dpkg-repack
    live, dropped = conffiles(fields)
    # What is gone from the disk (a conffile the admin deleted, docs a
    # path-exclude kept out) is left out, as dpkg-repack does.
    missing = {p for p in lines if not os.path.lexists(p)}
    if missing:
        log.info("repacking %s without %d file(s) not on disk, e.g. %s",
                 name, len(missing), min(missing))  # fmt: skip
    paths = [p for p in lines if p not in dropped and p not in missing]
    live = [p for p in live if p not in missing]
    controls = run(["dpkg-query", "--control-path", name], check=False).stdout.split()
    arch = fields.get("Architecture", "all")
    target = dest / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    stage = Path(tempfile.mkdtemp(prefix=f".repack-{name}-", dir=dest))
    try:
        root = stage / "root"
        _build_tree(root, paths, stage, run)
        _control(root / "DEBIAN", fields, controls, live)
        run(["dpkg-deb", "--build", "-Zgzip", "-z1", str(root), str(target)], timeout=1800)
    except (CommandFailed, OSError):
        with contextlib.suppress(OSError):
            target.unlink()
        return None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _build_tree(root: Path, paths: list[str], stage: Path, run: Runner) -> None:
    """The package's directories made with their modes and owners, then its
    other files copied in with one tar."""
    dirs, members = layout(paths)
    root.mkdir(mode=0o755)
    for path in dirs:
        info = os.stat(path)
        made = root / path.lstrip("/")
        made.mkdir(parents=True, exist_ok=True)
        os.chown(made, info.st_uid, info.st_gid)
        made.chmod(info.st_mode & 0o7777)
    (root / "DEBIAN").mkdir(mode=0o755, exist_ok=True)
    if not members:
        return
    listing = stage / "files"
    listing.write_bytes(b"".join(os.fsencode(p.lstrip("/")) + b"\0" for p in members))
    archive = stage / "files.tar"
    run(["tar", "--create", "--file", str(archive), "--directory", "/", "--no-recursion",
         "--null", "--files-from", str(listing)], timeout=1800)  # fmt: skip
    run(["tar", "--extract", "--file", str(archive), "--directory", str(root),
         "--same-permissions", "--same-owner", "--no-overwrite-dir"], timeout=1800)  # fmt: skip
    archive.unlink()


def _control(debian: Path, fields: dict[str, str], controls: list[str], live: list[str]) -> None:
    """DEBIAN/control from the status fields, DEBIAN/conffiles from the
    live conffiles, and the control files dpkg kept for the package."""
    text = "".join(f"{k}: {fields[k]}\n" for k in CONTROL_FIELDS if fields.get(k))
    (debian / "control").write_text(text)
    if live:
        (debian / "conffiles").write_text("".join(f"{path}\n" for path in live))
    for path in map(Path, controls):
        kind = path.name.rpartition(".")[2]
        if kind in CONTROL_FILES and kind != "conffiles":
            copied = debian / kind
            shutil.copyfile(path, copied)
            copied.chmod(0o755 if kind in SCRIPTS else 0o644)
