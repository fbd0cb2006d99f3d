#!/usr/bin/env python3
"""Build the fleetpatch-agent and fleetpatch-controller .deb packages.

    .venv/bin/python packaging/build_debs.py [--out dist] [--version V]
        [--package agent|controller]... [--key RELEASE_KEY]
        [--python /usr/bin/python3] [--compression xz|zstd|gzip|none]

Each package is self-contained: a virtual environment of its own under
/opt/fleetpatch/agent or /opt/fleetpatch/controller, made with the host's
/usr/bin/python3, so the host's Python packages are neither used nor
touched. /usr/bin/fleetpatch-agent (or /usr/bin/fleetpatch,
/usr/bin/fleetpatch-sim) is a symlink to the venv's console script; the
systemd unit, the maintainer scripts (packaging/debian/) and an environment
file under /etc/fleetpatch complete it.

Lean: each venv holds only what its code imports (packaging/venvprune.py):
fleetpatch-agent the `agent` and `fleetpatch` import packages and the
libraries they import, with what those require; fleetpatch-controller the
controller, the admin CLI and the simulator (which runs the agent's code).
No pip, no test or development tools, no activate scripts, no bytecode: the
postinst compiles it with the package's interpreter and the prerm removes
it. Shared objects are stripped. Each package has a changelog (Debian
format, gzip -9n, packaging/debian/changelog), a machine-readable copyright,
manual pages made from its CLIs' --help (packaging/manpage.py), and lintian
overrides, each with its reason (packaging/debian/*/lintian-overrides).

How the venv gets to its final path
-----------------------------------
A venv is not relocatable: pip writes the absolute path of the venv's
python into every console script's #! line (or, for a path longer than 127
bytes, into a `/bin/sh` exec wrapper), and `pyvenv.cfg` and the activate
scripts name it too. Three ways out were weighed:

- build at the real path on the build machine (/opt/fleetpatch/...):
  modifies the build machine and collides with an installed package;
- build at the real path inside a private mount namespace (a bind mount
  over /opt/fleetpatch): exact, but needs root or user namespaces, which
  many CI containers refuse, and a build-time mount layout to get right;
- build in a staging root and rewrite the staging prefix to the final
  path. This is what we do, made safe by a check: after the rewrite *no
  file of the package may contain the build's temporary path* (a bytes
  search over every file, binaries included), or the build fails naming
  the file. The rewrite touches only the places known to embed the path
  (bin/* scripts, pyvenv.cfg); a dependency that embeds it anywhere else
  fails the build instead of shipping a broken package.

What else makes the rewrite safe: the venv is made `--without-pip` by the
target interpreter and filled by the build environment's pip running
*under* that interpreter (`pip --python`), so wheels are chosen for it;
dependencies must be wheels (`--only-binary :all:`: nothing is compiled
with the staging path baked in); bytecode is never made in the staging
tree (it is compiled on the host, at its final path, by the postinst, so
the read-only /opt of the sandboxed controller never needs a __pycache__
write); pip's `direct_url.json`, which records the temporary wheel path,
is dropped.

Versions and dependencies
-------------------------
The version is the project's (pyproject.toml [project].version, which must
equal fleetpatch.__version__); `--version V` (PEP 440) overrides both in a
copy of the sources, so the packaged agent reports V too. Debian versions
sort like PEP 440 ones: 1.0rc1 -> 1.0~rc1, 1.0.dev2 -> 1.0~~dev2,
1.0.post1 -> 1.0+post1.

Dependencies are pinned to the versions installed in the environment that
runs this script (the project's .venv: what `make test` ran against), or
to `--constraints FILE`. The venv holds compiled extensions (grpcio,
cryptography, psutil) for this machine's architecture and this Python
minor version, hence `Architecture: amd64` (dpkg's) and
`Depends: python3 (>= 3.11), python3 (<< 3.12)`, and libc6 at least the
newest manylinux glibc among the wheels.

`--key KEY` signs what was built (controller.releases.signed: SHA256SUMS and
SHA256SUMS.sig in the output directory). A build removes older
fleetpatch-agent/-controller .debs and a stale SHA256SUMS(.sig) from the
output directory first, so that it holds one consistent release.

Needs: dpkg-deb (dpkg), the target /usr/bin/python3 (its venv module is in
the standard library; without pip in the venv, python3-venv is not needed),
and pip in the running interpreter; where the running environment has
psycopg-c (`BUILT_HERE`: it publishes no wheel, so it is compiled here, in
pip's own build directory, never the staging tree), gcc, libpq-dev,
python3-dev and dpkg-buildflags (dpkg-dev). Network: PyPI only (pip), for
the build backend and the dependencies not already cached.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from fleetpatch import debversion

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, imported too
import rpmpkg  # after the path above
import venvprune

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
#: What the wheel is built from (the rest of the tree is not needed).
SOURCES = ("pyproject.toml", "README.md", "agent", "controller", "simulator", "proto")
MAINTAINER = "fleetpatch maintainers <fleetpatch@example.invalid>"
HOMEPAGE = "https://github.com/fleetpatch/fleetpatch"
COMPRESSIONS = ("xz", "zstd", "gzip", "none")
#: Environment passed to the tools: not ours (a VIRTUAL_ENV or PYTHONPATH of
#: the build venv must not reach the target interpreter).
PASSED_ENV = (
    "HOME", "TMPDIR", "SOURCE_DATE_EPOCH",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
)  # fmt: skip
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
}

#: Signs the built packages with a release key (see controller.releases.signed).
Sign = Callable[[list[Path], Path], None]


class BuildError(Exception):
    """The build cannot go on; the message says why, for a person."""


@dataclass(frozen=True)
class Package:
    """One .deb: its name, venv, console scripts, unit and scripts."""

    short: str  # agent | controller: names packaging/debian/<short>/
    name: str
    summary: str
    description: str
    commands: tuple[str, ...]  # console scripts linked into /usr/bin
    depends: tuple[str, ...] = ()
    #: fleetpatch's import packages this package carries: what it runs, and
    #: what decides (by their imports) which libraries it carries.
    modules: tuple[str, ...] = ("agent", "controller", "simulator", "fleetpatch")
    #: CLI modules (import name: console script) whose --help makes a manual page.
    manuals: tuple[tuple[str, str], ...] = ()

    @property
    def venv(self) -> PurePosixPath:
        return PurePosixPath("/opt/fleetpatch") / self.short

    @property
    def unit(self) -> str:
        return f"{self.name}.service"

    @property
    def env_file(self) -> PurePosixPath:
        return PurePosixPath("/etc/fleetpatch") / f"{self.short}.env"


PACKAGES: dict[str, Package] = {
    p.short: p
    for p in (
        Package(
            "agent",
            "fleetpatch-agent",
            "fleetpatch host agent (pull-model patching)",
            "The agent enrolls this host with a fleetpatch controller, reports its\n"
            "inventory and health, and applies the signed work orders of patch\n"
            "campaigns: package upgrades it verifies and reverts by itself.\n"
            "It runs as the fleetpatch-agent systemd service, from its own Python\n"
            "environment in /opt/fleetpatch/agent.",
            ("fleetpatch-agent",),
            # dpkg-repack: the agent keeps a copy of every package it replaces.
            ("dpkg-repack",),
            modules=("agent", "fleetpatch"),
            manuals=(("agent.cli", "fleetpatch-agent"),),
        ),
        Package(
            "controller",
            "fleetpatch-controller",
            "fleetpatch controller and admin CLI (pull-model patching)",
            "The controller runs patch campaigns over a fleet of fleetpatch agents:\n"
            "rings, maintenance windows, rollout budgets and gates, with a\n"
            "hash-chained audit log. It runs as the fleetpatch-controller systemd\n"
            "service under its own user, from its own Python environment in\n"
            "/opt/fleetpatch/controller. Includes the `fleetpatch` admin CLI and the\n"
            "`fleetpatch-sim` fleet simulator.",
            ("fleetpatch", "fleetpatch-sim"),
            # libpq5: the PostgreSQL client library psycopg loads when
            # [store] url names PostgreSQL (Debian keeps it patched).
            ("adduser", "libpq5"),
            manuals=(("controller.cli.main", "fleetpatch"), ("simulator.cli", "fleetpatch-sim")),
        ),
    )
}


@dataclass(frozen=True)
class Build:
    """Everything one run needs to know."""

    version: str  # PEP 440
    out: Path
    work: Path  # temporary: sources, wheel, staging roots
    python: Path  # the target hosts' interpreter
    compression: str
    constraints: Path
    arch: str  # dpkg's name for this machine's architecture
    extras: tuple[str, ...] = ()  # fleetpatch's extras installed (`built_here`)


# -- versions ------------------------------------------------------------------


def project_version(root: Path = ROOT) -> str:
    """The project's version; raises BuildError if pyproject.toml and
    fleetpatch.__version__ disagree."""
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    init = (root / "proto/fleetpatch/__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)
    if found is None:
        raise BuildError("proto/fleetpatch/__init__.py has no __version__")
    if found.group(1) != declared:
        raise BuildError(
            f"pyproject.toml says version {declared} but fleetpatch.__version__ "
            f"is {found.group(1)}: make them agree"
        )
    return str(declared)


def debian_version(version: str) -> str:
    """The Debian version of a PEP 440 version, sorting the same way
    (fleetpatch.debversion, which agents use to check what they install).
    Raises BuildError for a version we cannot package."""
    try:
        return debversion.debian_version(version)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


# -- running tools -------------------------------------------------------------


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run argv (no shell, stdin closed, explicit environment); return stdout.
    Raises BuildError with the end of its output when it fails."""
    args = [str(a) for a in argv]
    base = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("PIP_")}
    try:
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env={**base, **BASE_ENV, **(env or {})},
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        raise BuildError(f"{args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{' '.join(args)} timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise BuildError(f"{' '.join(args)} exited {done.returncode}:\n{tail}")
    return done.stdout


def say(message: str) -> None:
    print(f"build_debs: {message}", file=sys.stderr, flush=True)


# -- the wheel -----------------------------------------------------------------


def build_wheel(build: Build) -> Path:
    """Build fleetpatch's wheel at build.version from a copy of the sources."""
    src = build.work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    _set_version(src, build.version)
    wheels = build.work / "wheels"
    say(f"building the fleetpatch {build.version} wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, f"{src}/"])
    found = sorted(wheels.glob("fleetpatch-*.whl"))
    expected = f"fleetpatch-{build.version}-"
    if len(found) != 1 or not found[0].name.startswith(expected):
        raise BuildError(f"expected one {expected}*.whl, pip made {[p.name for p in found]}")
    return found[0]


#: Distributions that publish no wheel, built here when the running
#: environment has them (so the package ships what the tests ran
#: against), and the fleetpatch extra that installs each.
BUILT_HERE: Mapping[str, str] = {
    # psycopg's C implementation, linked to Debian's libpq5 (a Depends).
    "psycopg-c": "c",
}


def built_here(build: Build) -> tuple[str, ...]:
    """Build the wheels of `BUILT_HERE` pinned in build.constraints into
    build.work/wheels, by the target interpreter (its headers and build
    configuration: another Python's would leave its own library path in
    the objects' RUNPATH), with Debian's hardening flags (dpkg-buildflags)
    and never from pip's cache (built without them); returns the extras
    that install them."""
    pinned = {}
    for line in build.constraints.read_text().splitlines():
        name, pin, version = line.partition("==")
        if pin:
            pinned[venvprune.canonical(name.strip())] = version.strip()
    flags = {
        name: run(["dpkg-buildflags", "--get", name]).strip()
        for name in ("CFLAGS", "CPPFLAGS", "LDFLAGS")
    }
    extras = []
    for dist, extra in BUILT_HERE.items():
        version = pinned.get(dist)
        if version is None:
            continue
        say(f"building the {dist} {version} wheel (it publishes none)")
        run(
            [sys.executable, "-m", "pip", "--python", build.python, "wheel", "--no-deps",
             "--no-cache-dir", "--no-binary", dist, "--wheel-dir", build.work / "wheels",
             f"{dist}=={version}"],
            env=flags, timeout=1200,
        )  # fmt: skip
        extras.append(extra)
    return tuple(extras)


def _set_version(src: Path, version: str) -> None:
    pyproject = src / "pyproject.toml"
    text, count = re.subn(
        r'^version = "[^"]*"$',
        f'version = "{version}"',
        pyproject.read_text(),
        count=1,
        flags=re.MULTILINE,
    )
    init = src / "proto/fleetpatch/__init__.py"
    text2, count2 = re.subn(
        r'^__version__ = "[^"]*"$',
        f'__version__ = "{version}"',
        init.read_text(),
        count=1,
        flags=re.MULTILINE,
    )
    if count != 1 or count2 != 1:
        raise BuildError("cannot find the version in pyproject.toml or fleetpatch/__init__.py")
    pyproject.write_text(text)
    init.write_text(text2)


def write_constraints(path: Path) -> Path:
    """Pin every distribution of the running environment (but fleetpatch):
    the packages ship what the tests ran against."""
    pins = sorted(
        {
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in importlib.metadata.distributions()
            if dist.metadata["Name"] and dist.metadata["Name"].lower() != "fleetpatch"
        },
        key=str.lower,
    )
    path.write_text("".join(f"{pin}\n" for pin in pins))
    return path


# -- the venv ------------------------------------------------------------------


def stage_venv(build: Build, package: Package, wheel: Path, stage: Path) -> None:
    """Make package's venv under stage at its final path, and check it."""
    venv = stage / str(package.venv).lstrip("/")
    say(f"{package.name}: venv {package.venv} with {build.python}")
    run([build.python, "-m", "venv", "--without-pip", venv])
    staged_python = venv / "bin/python"
    wanted = f"{wheel}[{','.join(build.extras)}]" if build.extras else str(wheel)
    run(
        [
            sys.executable, "-m", "pip", "--python", staged_python, "install",
            "--no-compile", "--only-binary", ":all:", "--no-warn-script-location",
            "--constraint", build.constraints, "--find-links", build.work / "wheels", wanted,
        ],
        timeout=1200,
    )  # fmt: skip
    relocate(venv, package.venv)
    lean_venv(build, package, venv)
    leaks = files_containing(stage, str(build.work).encode())
    if leaks:
        shown = ", ".join(str(p.relative_to(stage)) for p in leaks[:5])
        raise BuildError(
            f"{package.name}: {len(leaks)} file(s) still name the build directory "
            f"{build.work} after relocation: {shown}"
        )


def lean_venv(build: Build, package: Package, venv: Path) -> None:
    """Keep in venv only what package's code imports (packaging/venvprune.py),
    no activate scripts or foreign console scripts, stripped objects. No
    bytecode: the postinst compiles it and the prerm removes it."""
    sources = [build.work / "src" / SOURCE_OF[m] for m in package.modules]
    (site,) = venv.glob("lib/python3*/site-packages")
    dists = venvprune.installed(site)
    keep = venvprune.needed(dists, venvprune.imported_names(sources), "fleetpatch")
    removed = venvprune.prune(venv, "fleetpatch", set(package.modules), keep)
    venvprune.drop_extras(venv, package.commands)
    stripped = venvprune.strip_objects(venv)
    venvprune.fix_modes(venv)
    say(
        f"{package.name}: {len(keep)} libraries kept ({', '.join(sorted(keep))}); "
        f"{len(removed)} removed; {stripped} shared objects stripped"
    )
    stale = [p for p in venv.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    if stale:
        raise BuildError(f"{package.name}: bytecode in the venv: {stale[0]}")


#: Where each import package's sources are in the copied tree.
SOURCE_OF = {
    "agent": "agent",
    "controller": "controller",
    "simulator": "simulator",
    "fleetpatch": "proto/fleetpatch",
}


def relocate(venv: Path, final: PurePosixPath) -> None:
    """Rewrite the staging path of venv to `final` where a venv records it:
    console scripts' #! lines (or sh wrappers), activate scripts and
    pyvenv.cfg. Drops pip's direct_url.json (it names the temporary wheel)."""
    old, new = str(venv).encode(), str(final).encode()
    candidates = [venv / "pyvenv.cfg", *(p for p in (venv / "bin").iterdir())]
    for path in candidates:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            mode = path.stat().st_mode
            path.write_bytes(data.replace(old, new))
            path.chmod(mode)
    for direct_url in venv.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"):
        direct_url.unlink()


def files_containing(tree: Path, needle: bytes) -> list[Path]:
    """Regular files under tree whose bytes contain needle, and symlinks
    whose target does."""
    found: list[Path] = []
    for dirpath, dirs, files in os.walk(tree):  # symlinked dirs are listed, not followed
        for name in [*dirs, *files]:
            path = Path(dirpath) / name
            if path.is_symlink():
                if needle in os.fsencode(os.readlink(path)):
                    found.append(path)
            elif path.is_file() and needle in path.read_bytes():
                found.append(path)
    return sorted(found)


def glibc_floor(venv: Path) -> tuple[int, int] | None:
    """The newest glibc a wheel in venv was built for (manylinux tags)."""
    floor: tuple[int, int] | None = None
    for wheel_file in venv.glob("lib/python3*/site-packages/*.dist-info/WHEEL"):
        for line in wheel_file.read_text(errors="replace").splitlines():
            if not line.startswith("Tag:"):
                continue
            tag = line.split(":", 1)[1].strip()
            found = re.search(r"manylinux_(\d+)_(\d+)_", tag)
            need = (int(found[1]), int(found[2])) if found else None
            if need is None and "manylinux2014" in tag:
                need = (2, 17)
            elif need is None and "manylinux2010" in tag:
                need = (2, 12)
            elif need is None and "manylinux1" in tag:
                need = (2, 5)
            if need is not None and (floor is None or need > floor):
                floor = need
    return floor


# -- the package ---------------------------------------------------------------


def python_minor(python: Path) -> tuple[int, int]:
    """(major, minor) of the target interpreter."""
    out = run([python, "-c", "import sys; print(*sys.version_info[:2])"]).split()
    return int(out[0]), int(out[1])


def python_depends(python: Path) -> list[str]:
    """python3 (>= X.Y), python3 (<< X.Y+1) for the target interpreter."""
    major, minor = python_minor(python)
    return [f"python3 (>= {major}.{minor})", f"python3 (<< {major}.{minor + 1})"]


MONITORING = PurePosixPath("/usr/share/fleetpatch")  # alert rules and dashboards


def stage_package(build: Build, package: Package, stage: Path) -> None:
    """Put unit, links, conffile, docs and DEBIAN/ around the staged venv."""
    debian_src = PACKAGING / "debian" / package.short

    def put(target: PurePosixPath | str, data: bytes, mode: int = 0o644) -> None:
        path = stage / str(target).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)

    put(f"/lib/systemd/system/{package.unit}", (PACKAGING / "systemd" / package.unit).read_bytes())
    put(package.env_file, (debian_src / package.env_file.name).read_bytes())
    conffiles = [str(package.env_file)]
    settings = debian_src / f"{package.short}.toml"  # the administrator's settings
    if settings.exists():
        put(f"/etc/fleetpatch/{settings.name}", settings.read_bytes())
        conffiles.append(f"/etc/fleetpatch/{settings.name}")
    doc = PurePosixPath("/usr/share/doc") / package.name
    put(doc / "copyright", (PACKAGING / "debian/copyright").read_bytes())
    put(doc / "README.md", (PACKAGING / "README.md").read_bytes())
    changelog, date = changelog_for(build.version)
    put(doc / "changelog.gz", gzip_n(changelog.encode()))
    overrides = debian_src / "lintian-overrides"
    put(f"/usr/share/lintian/overrides/{package.name}", overrides.read_bytes())
    for module, prog in package.manuals:
        page = manual(build, package, stage, module, prog, date)
        put(f"/usr/share/man/man1/{prog}.1.gz", gzip_n(page))
    if package.short == "controller":
        # Monitoring to copy into Prometheus and Grafana (README "Metrics").
        for source in (*sorted((PACKAGING / "prometheus").glob("*.yml")),
                       *sorted((PACKAGING / "grafana").glob("*.json"))):  # fmt: skip
            put(MONITORING / source.parent.name / source.name, source.read_bytes())
    (stage / "usr/bin").mkdir(parents=True, exist_ok=True)
    for command in package.commands:
        script = stage / str(package.venv).lstrip("/") / "bin" / command
        if not script.is_file():
            raise BuildError(f"{package.name}: the venv has no console script {command}")
        (stage / "usr/bin" / command).symlink_to(package.venv / "bin" / command)

    control_dir = stage / "DEBIAN"
    control_dir.mkdir(mode=0o755)
    for name in ("postinst", "prerm", "postrm"):
        put(f"/DEBIAN/{name}", (debian_src / name).read_bytes(), 0o755)
    put("/DEBIAN/conffiles", "".join(f"{c}\n" for c in conffiles).encode())
    put("/DEBIAN/md5sums", _md5sums(stage, set(conffiles)).encode())

    depends = python_depends(build.python)
    floor = glibc_floor(stage / str(package.venv).lstrip("/"))
    if floor is not None:
        depends.append(f"libc6 (>= {floor[0]}.{floor[1]})")
    # tzdata: zoneinfo's database (maintenance windows in named zones); the
    # venv does not carry the tzdata wheel (packaging/venvprune.py).
    depends += ["init-system-helpers (>= 1.54~)", "tzdata", *package.depends]
    fields = {
        "Package": package.name,
        "Version": debian_version(build.version),
        "Architecture": build.arch,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(_installed_size_kib(stage)),
        "Depends": ", ".join(depends),
        "Section": "admin",
        "Priority": "optional",
        "Homepage": HOMEPAGE,
    }
    lines = [f"{key}: {value}" for key, value in fields.items()]
    lines.append(f"Description: {package.summary}")
    lines += [f" {line}" for line in package.description.splitlines()]
    put("/DEBIAN/control", ("\n".join(lines) + "\n").encode())


def gzip_n(data: bytes) -> bytes:
    """gzip -9n: best compression, no name or time stamp (reproducible)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def changelog_for(version: str) -> tuple[str, str]:
    """packaging/debian/changelog for a build of `version`, and the date of
    its newest entry for the manual pages (e.g. "2026-12-01"). A version the
    changelog does not start with (a test's or a CI's --version build) gets
    an entry of its own on top, so the package's changelog always names it."""
    text = (PACKAGING / "debian/changelog").read_text()
    deb = debian_version(version)
    top = re.match(r"fleetpatch \(([^)]+)\)", text)
    if top is None:
        raise BuildError("packaging/debian/changelog does not start with a fleetpatch entry")
    if top.group(1) != deb:
        stamp = datetime.fromtimestamp(
            int(os.environ.get("SOURCE_DATE_EPOCH", time.time())), UTC
        ).strftime("%a, %d %b %Y %H:%M:%S +0000")
        entry = (
            f"fleetpatch ({deb}) unstable; urgency=medium\n\n"
            f"  * Build of version {version} (build_debs.py --version).\n\n"
            f" -- {MAINTAINER}  {stamp}\n\n"
        )
        text = entry + text
    dates = re.findall(r"^ -- .+?  (.+)$", text, re.MULTILINE)
    date = datetime.strptime(dates[0], "%a, %d %b %Y %H:%M:%S %z").strftime("%Y-%m-%d")
    return text, date


def manual(build: Build, package: Package, stage: Path, module: str, prog: str, date: str) -> bytes:
    """The manual page of one CLI, from its --help as the package's own
    interpreter prints it (packaging/manpage.py)."""
    python = stage / str(package.venv).lstrip("/") / "bin/python"
    summary = package.summary.split(" (")[0]
    if prog == "fleetpatch-sim":
        summary = "fleetpatch fleet simulator: rehearse campaigns in virtual time"
    text = run(
        [python, "-I", "-B", PACKAGING / "manpage.py", module, prog, build.version, date, summary],
        env={"COLUMNS": "72"},  # inside man's 7-column indent at 80
    )
    return text.encode()


def _md5sums(stage: Path, conffiles: set[str]) -> str:
    """DEBIAN/md5sums (what `dpkg --verify` checks), conffiles excluded as
    dh_md5sums does."""
    lines = []
    for dirpath, dirs, files in os.walk(stage):
        dirs[:] = sorted(d for d in dirs if not (dirpath == str(stage) and d == "DEBIAN"))
        for name in sorted(files):
            path = Path(dirpath) / name
            rel = path.relative_to(stage).as_posix()
            if path.is_symlink() or f"/{rel}" in conffiles:
                continue
            lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}\n")  # noqa: S324 - dpkg's format
    return "".join(lines)


def _installed_size_kib(stage: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(stage):
        if dirpath == str(stage):
            dirs[:] = [d for d in dirs if d != "DEBIAN"]
        for name in files:
            path = Path(dirpath) / name
            total += -(-path.lstat().st_size // 1024)
    return total


def build_package(build: Build, package: Package, wheel: Path) -> Path:
    stage = build.work / package.short / "root"
    stage.mkdir(parents=True, mode=0o755)
    stage_venv(build, package, wheel, stage)
    stage_package(build, package, stage)
    compiled = [p for p in stage.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    if compiled:
        raise BuildError(f"{package.name}: bytecode would be shipped: {compiled[0]}")
    deb = build.out / f"{package.name}_{debian_version(build.version)}_{build.arch}.deb"
    say(f"{package.name}: dpkg-deb ({build.compression}) -> {deb}")
    run(
        ["dpkg-deb", "--root-owner-group", f"-Z{build.compression}", "--build", stage, deb],
        timeout=1200,
    )
    return deb


def build_agent_rpm(build: Build) -> Path:
    """fleetpatch-agent as an RPM, from the agent's staged tree (after
    build_package staged it): packaging/rpmpkg.py."""
    reason = rpmpkg.rpm_available()
    if reason is not None:
        raise BuildError(f"--rpm: {reason}")
    agent = PACKAGES["agent"]
    major, minor = python_minor(build.python)
    say(f"{agent.name}: rpmbuild")
    return rpmpkg.build_rpm(
        stage=build.work / agent.short / "root",
        out=build.out,
        version=debversion.rpm_version(debian_version(build.version)),
        python_abi=f"{major}.{minor}",
        summary=agent.summary,
        description=agent.description,
        run=lambda argv: run(argv, timeout=1200),
    )


def clean_out_dir(out: Path, packages: Sequence[Package]) -> None:
    """Remove older builds of these packages and a stale manifest."""
    stale = [p for pkg in packages for p in out.glob(f"{pkg.name}_*.deb")]
    stale += [p for pkg in packages for p in out.glob(f"{pkg.name}-*.rpm")]
    stale += [out / "SHA256SUMS", out / "SHA256SUMS.sig"]
    for path in stale:
        if path.exists():
            say(f"removing stale {path}")
            path.unlink()


# -- main ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the fleetpatch-agent and fleetpatch-controller .deb packages."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--version", help="PEP 440 version to build instead of the project's (e.g. 0.2.0rc1)"
    )
    parser.add_argument(
        "--package",
        action="append",
        choices=sorted(PACKAGES),
        help="build only this package (repeatable; default: both)",
    )
    parser.add_argument("--key", type=Path, help="release private key: sign what was built")
    parser.add_argument(
        "--python",
        type=Path,
        default=Path("/usr/bin/python3"),
        help="the target hosts' interpreter the venvs use (default: /usr/bin/python3)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="xz",
        help="xz: smallest, what Debian uses (default); zstd: ~50x faster to build",
    )
    parser.add_argument(
        "--constraints",
        type=Path,
        help="pip constraints for the dependencies (default: pin the running environment's)",
    )
    parser.add_argument(
        "--rpm",
        action="store_true",
        help="also build the agent as an RPM (rpmbuild, from Debian's rpm package)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        built = build_debs(
            out=args.out,
            version=args.version,
            packages=[PACKAGES[p] for p in (args.package or sorted(PACKAGES))],
            python=args.python,
            compression=args.compression,
            constraints=args.constraints,
            key=args.key,
            rpm=args.rpm,
        )
    except BuildError as exc:
        print(f"build_debs: error: {exc}", file=sys.stderr)
        return 1
    for deb in built:
        print(deb)
    return 0


def build_debs(
    *,
    out: Path,
    version: str | None = None,
    packages: Sequence[Package] = tuple(PACKAGES.values()),
    python: Path = Path("/usr/bin/python3"),
    compression: str = "xz",
    constraints: Path | None = None,
    key: Path | None = None,
    rpm: bool = False,
) -> list[Path]:
    """Build `packages` into `out` (and, with rpm, the agent's RPM); returns
    the package paths. Raises BuildError."""
    if rpm and PACKAGES["agent"] not in packages:
        raise BuildError("--rpm builds the agent's RPM: it needs --package agent")
    version = version or project_version()
    debian_version(version)  # refuse an unpackageable version before any work
    if not python.is_file():
        raise BuildError(f"{python} does not exist (install python3)")
    if shutil.which("dpkg-deb", path=BASE_ENV["PATH"]) is None:
        raise BuildError("dpkg-deb is not installed (it comes with dpkg)")
    signer = _signer(key) if key is not None else None
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleetpatch-debs-") as tmp:
        work = Path(tmp)
        build = Build(
            version=version,
            out=out,
            work=work,
            python=python,
            compression=compression,
            constraints=constraints or write_constraints(work / "constraints.txt"),
            arch=run(["dpkg", "--print-architecture"]).strip(),
        )
        wheel = build_wheel(build)
        build = replace(build, extras=built_here(build))
        clean_out_dir(out, packages)
        built = [build_package(build, package, wheel) for package in packages]
        if rpm:
            built.append(build_agent_rpm(build))
    if signer is not None and key is not None:
        signer(built, key)
    return built


def _signer(key: Path) -> Sign:
    """The signing step, with the key checked now: a bad key fails the
    build before any work, not after it."""
    try:
        from controller.errors import FleetpatchError
        from controller.releases.signed import load_private_key, sign_artifacts
    except ImportError as exc:
        raise BuildError(
            f"--key needs the project importable ({exc}); run with .venv/bin/python"
        ) from None
    try:
        load_private_key(key)
    except FleetpatchError as exc:
        raise BuildError(f"--key: {exc}") from None

    def sign(debs: list[Path], key: Path) -> None:
        try:
            signed = sign_artifacts(debs, key)
        except FleetpatchError as exc:
            raise BuildError(f"signing: {exc}") from None
        say(f"signed {len(debs)} package(s) with {signed.fingerprint}: {signed.manifest}")

    return sign


if __name__ == "__main__":
    sys.exit(main())
