"""Make a package's venv lean: only what its code imports, stripped.

pip installs fleetpatch with every dependency of the whole distribution
(agent, controller, simulator in one wheel) and each dependency's own
dependencies, wanted or not. What a package needs is decided here from its
code instead:

1. `imported_names(sources)`: the top-level names every module of the
   package imports (an AST scan, so imports inside functions count too).
2. `needed(site, names)`: the installed distributions providing those
   names, and the distributions they require (as installed: pip already
   evaluated the markers) or load by name when installed (`LOADED`),
   minus `DROPPED` (each with its reason).
3. `prune(venv, keep_modules, needed)`: every other distribution is removed
   file by file from its RECORD, and so are fleetpatch's own import
   packages that this package does not carry (the agent carries `agent`
   and `fleetpatch`, not `controller` or `simulator`), with the RECORD and
   entry points rewritten to match, so what remains is a consistent install.

`strip_objects` strips the shared objects (debug symbols are not shipped,
as dh_strip does), and `drop_extras` removes what a venv has but a service
never runs (activate scripts, other distributions' console scripts).
"""

from __future__ import annotations

import ast
import csv
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Distributions never shipped, whoever requires them, and why.
DROPPED: Mapping[str, str] = {
    # sqlite-utils requires pip only for its own `sqlite-utils install` verb.
    "pip": "sqlite-utils needs it only for `sqlite-utils install`",
    # typer imports rich only when installed (shellingham it always imports,
    # so it stays); fleetpatch
    # turns Rich off (fleetpatch.cliapp) and adds no shell completion.
    "rich": "typer uses it only when installed; fleetpatch.cliapp turns it off",
    "pygments": "rich's, not shipped",
    "markdown-it-py": "rich's, not shipped",
    "mdurl": "rich's, not shipped",
    # python-dateutil requires tzdata (the IANA database as a wheel) for
    # hosts without one; the packages depend on Debian's tzdata instead.
    "tzdata": "the package depends on Debian's tzdata, which zoneinfo reads first",
}


#: Distributions a kept one loads by name at run time when they are
#: installed: no import statement names them, and a requirement of an
#: extra is not followed (which extras pip installed is not recorded).
LOADED: Mapping[str, tuple[str, ...]] = {
    # psycopg's C implementation (pyproject.toml's `c` extra), which psycopg
    # imports in psycopg.pq when it is there.
    "psycopg": ("psycopg-c",),
}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_names(sources: Iterable[Path]) -> set[str]:
    """Top-level names imported anywhere in the .py files under sources
    (absolute imports; relative ones stay inside the package)."""
    names: set[str] = set()
    for source in sources:
        for path in sorted(source.rglob("*.py")):
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


@dataclass(frozen=True)
class Dist:
    """One installed distribution in a venv's site-packages."""

    name: str  # canonical
    info: Path  # its .dist-info
    requires: tuple[str, ...]  # canonical names, extras' requirements left out
    top_level: frozenset[str]  # import names it provides

    def files(self) -> list[str]:
        """RECORD paths, relative to site-packages."""
        text = (self.info / "RECORD").read_text()
        return [row[0] for row in csv.reader(io.StringIO(text)) if row]


def installed(site: Path) -> dict[str, Dist]:
    """The distributions in site (site-packages), by canonical name."""
    dists: dict[str, Dist] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        (name,) = re.findall(r"^Name: (.+)$", meta, re.MULTILINE)[:1]
        requires = []
        for req in re.findall(r"^Requires-Dist: (.+)$", meta, re.MULTILINE):
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            if found:
                requires.append(canonical(found.group(0)))
        dist = Dist(canonical(name), info, tuple(requires), frozenset())
        top = {
            part
            for path in dist.files()
            if not (part := path.split("/")[0]).endswith((".dist-info", ".data")) and part != ".."
        }
        dists[dist.name] = Dist(
            dist.name, info, dist.requires, frozenset(t.removesuffix(".py") for t in top)
        )
    return dists


def needed(dists: Mapping[str, Dist], names: set[str], own: str) -> set[str]:
    """Distributions providing `names`, with what they require or load
    (`LOADED`), transitively (only what is installed: pip evaluated the
    markers), minus DROPPED.
    `own` (fleetpatch) is left out: its requirements are the whole
    distribution's, and what its code imports is what counts."""
    providers = {d.name for d in dists.values() if d.top_level & names and d.name != own}
    todo, keep = sorted(providers), set()
    while todo:
        name = todo.pop()
        if name in keep or name in DROPPED or name not in dists:
            continue
        keep.add(name)
        todo.extend(dists[name].requires)
        todo.extend(LOADED.get(name, ()))
    return keep


def _remove(site: Path, relative: str) -> None:
    path = (site / relative).resolve() if ".." in relative else site / relative
    if path.is_file() or path.is_symlink():
        path.unlink()


def _remove_empty_dirs(top: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda d: -len(d[0])):
        if Path(dirpath) != top and not os.listdir(dirpath):
            os.rmdir(dirpath)


def prune(venv: Path, own: str, keep_modules: set[str], keep_dists: set[str]) -> list[str]:
    """Remove every distribution but keep_dists (and `own`) from venv, and
    own's import packages and console scripts not in keep_modules. Returns
    the names of the distributions removed."""
    (site,) = venv.glob("lib/python3*/site-packages")
    dists = installed(site)
    removed = []
    for name, dist in sorted(dists.items()):
        if name == own or name in keep_dists:
            continue
        for path in dist.files():
            _remove(site, path)
        shutil.rmtree(dist.info, ignore_errors=True)
        removed.append(name)
    ours = dists[own]
    dropped_modules = ours.top_level - keep_modules
    record = ours.info / "RECORD"
    rows = list(csv.reader(io.StringIO(record.read_text())))
    kept_rows = []
    scripts = _entry_points(ours.info)
    kept_scripts = {s for s, target in scripts.items() if _top_module(target) in keep_modules}
    for row in rows:
        path = row[0]
        script = path.rsplit("/", 1)[-1] if path.startswith("../../../bin/") else None
        if path.split("/")[0] in dropped_modules or (
            script is not None and script not in kept_scripts
        ):
            _remove(site, path)
        elif (site / path).exists() or path.endswith("/RECORD"):  # direct_url.json is gone
            kept_rows.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept_rows)
    record.write_text(out.getvalue())
    _rewrite_entry_points(ours.info, kept_scripts)
    _remove_empty_dirs(site)
    return removed


def _top_module(target: str) -> str:
    """The import package an entry point's ``module:function`` is in
    ("agent:main" and "controller.cli:main" alike)."""
    return target.partition(":")[0].split(".")[0]


def _entry_points(info: Path) -> dict[str, str]:
    """console_scripts of a dist-info: script -> module:function."""
    path = info / "entry_points.txt"
    scripts: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("["):
            section = line.strip("[] ")
        elif "=" in line and section == "console_scripts":
            key, _, value = line.partition("=")
            scripts[key.strip()] = value.strip()
    return scripts


def _rewrite_entry_points(info: Path, kept: set[str]) -> None:
    path = info / "entry_points.txt"
    if not path.exists():
        return
    lines, section = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[] ")
        elif section == "console_scripts" and line.partition("=")[0].strip() not in kept:
            continue
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def drop_extras(venv: Path, commands: Iterable[str]) -> None:
    """Remove what a service never runs: the activate scripts, and console
    scripts other than the package's commands (the interpreter links stay)."""
    keep = set(commands)
    for path in (venv / "bin").iterdir():
        if path.is_symlink() or path.name in keep:
            continue
        path.unlink()
    (site,) = venv.glob("lib/python3*/site-packages")
    for info in site.glob("*.dist-info"):
        record = info / "RECORD"
        rows = list(csv.reader(io.StringIO(record.read_text())))
        kept = [
            r
            for r in rows
            if not (r and r[0].startswith("../../../bin/") and r[0][13:] not in keep)
        ]
        if kept != rows:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(kept)
            record.write_text(out.getvalue())


def strip_objects(venv: Path, strip: str = "strip") -> int:
    """Strip debug symbols and unneeded symbols from every shared object,
    as dh_strip does (--strip-unneeded, no .comment/.note). Returns how
    many were stripped."""
    objects = sorted(p for p in venv.rglob("*.so*") if p.is_file() and not p.is_symlink())
    for obj in objects:
        subprocess.run(
            [strip, "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded",
             str(obj)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
        )  # fmt: skip
    return len(objects)


def fix_modes(venv: Path) -> int:
    """Files under lib/ 0644, directories 0755, as dh_fixperms leaves them:
    wheels carry modules marked executable that are not programs (and
    Python loads extension modules without the bit). Returns how many
    files changed."""
    changed = 0
    for path in (venv / "lib").rglob("*"):
        if path.is_symlink():
            continue
        want = 0o755 if path.is_dir() else 0o644
        if path.stat().st_mode & 0o7777 != want:
            path.chmod(want)
            changed += 1
    return changed
