"""Real `.deb` packages and a local apt repository, for tests of apt/dpkg.

`build_deb` turns a `DebSpec` (name, version, files, Depends, maintainer
scripts that may fail) into a real package with `dpkg-deb --build`.
`LocalAptRepo` is a flat repository in a directory (`dpkg-scanpackages`
writes its index; we write a Release file with the hashes) that apt reads as
`deb [trusted=yes] file:/srv/fleetpatch-apt ./`.

`use_repo(sandbox, repo)` makes it the *only* source of apt inside a
`HostSandbox`: it binds the repository directory read-only into the
sandbox, removes every other source there (only in the sandbox's overlay:
the machine's /etc/apt is untouched), and runs `apt-get update`, so apt in
the sandbox never reaches the network and only sees our packages plus what
the machine has installed. The agent's own apt calls inside the sandbox see
the same sources, since the files themselves are replaced (not `-o`
options on our command line).

Needs dpkg-deb (dpkg) and dpkg-scanpackages (dpkg-dev). `make deps`
installs dpkg-dev; `debrepo_available()` gives the skip reason otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path, PurePosixPath

from tests.support.sandbox import HostSandbox

#: Where `use_repo` mounts a repository inside a sandbox, by default.
REPO_MOUNT = "/srv/fleetpatch-apt"

SCRIPT_NAMES = ("preinst", "postinst", "prerm", "postrm", "config")


@dataclass(frozen=True)
class DebFile:
    """A file in a package with an explicit mode (executables, secrets)."""

    content: bytes | str
    mode: int = 0o644


@dataclass(frozen=True)
class DebSpec:
    """What to put in a package.

    files: absolute path in the installed system -> content (str, bytes or
        DebFile); parent directories are created 0755, files default 0644.
    scripts: maintainer scripts by name (preinst, postinst, prerm, postrm,
        config) -> script text including its #! line; installed 0755.
    conffiles: paths among `files` that dpkg treats as conffiles.
    control: further control fields (Pre-Depends, Conflicts, Provides...).
    """

    name: str
    version: str
    files: Mapping[str, bytes | str | DebFile] = field(default_factory=dict)
    depends: Sequence[str] = ()
    scripts: Mapping[str, str] = field(default_factory=dict)
    conffiles: Sequence[str] = ()
    architecture: str = "all"
    description: str = "fleetpatch test package"
    maintainer: str = "fleetpatch tests <tests@fleetpatch.invalid>"
    control: Mapping[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """Debian's name for the .deb (the epoch is not part of it)."""
        upstream = self.version.split(":", 1)[-1]
        return f"{self.name}_{upstream}_{self.architecture}.deb"

    def control_text(self) -> str:
        fields = {
            "Package": self.name,
            "Version": self.version,
            "Architecture": self.architecture,
            "Maintainer": self.maintainer,
            "Section": "misc",
            "Priority": "optional",
        }
        if self.depends:
            fields["Depends"] = ", ".join(self.depends)
        fields.update(self.control)
        summary, _, rest = self.description.partition("\n")
        lines = [f"{key}: {value}" for key, value in fields.items()]
        lines.append(f"Description: {summary}")
        lines += [f" {line}" if line.strip() else " ." for line in rest.splitlines()]
        return "\n".join(lines) + "\n"


def exit_script(code: int = 1, message: str = "fleetpatch test: failing on purpose") -> str:
    """A maintainer script that prints `message` to stderr and exits `code`."""
    return f"#!/bin/sh\necho '{_sh_quote(message)}' >&2\nexit {code}\n"


def fail_if_exists_script(marker: str) -> str:
    """A maintainer script that fails while `marker` exists on the host it
    runs on: a test makes an upgrade fail (or a retry succeed) by creating or
    removing one file in the sandbox."""
    quoted = _sh_quote(marker)
    return (
        "#!/bin/sh\nset -e\n"
        f"if [ -e '{quoted}' ]; then\n"
        f"  echo 'fleetpatch test: failing because {quoted} exists' >&2\n"
        "  exit 1\n"
        "fi\n"
    )


def _sh_quote(text: str) -> str:
    return text.replace("'", "'\\''")


def build_deb(spec: DebSpec, out_dir: Path) -> Path:
    """Build `spec` with `dpkg-deb --build` into out_dir; returns the .deb."""
    for script_name in spec.scripts:
        if script_name not in SCRIPT_NAMES:
            raise ValueError(f"unknown maintainer script {script_name!r}")
    for conffile in spec.conffiles:
        if conffile not in spec.files:
            raise ValueError(f"conffile {conffile} is not among the files")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"deb-{spec.name}-") as tmp:
        stage = Path(tmp) / "stage"
        debian = stage / "DEBIAN"
        debian.mkdir(parents=True, mode=0o755)
        stage.chmod(0o755)
        (debian / "control").write_text(spec.control_text())
        for name, text in spec.scripts.items():
            script = debian / name
            script.write_text(text)
            script.chmod(0o755)
        if spec.conffiles:
            (debian / "conffiles").write_text("".join(f"{c}\n" for c in spec.conffiles))
        for target, content in spec.files.items():
            _stage_file(stage, target, content)
        deb = out_dir / spec.filename
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(stage), str(deb)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    deb.chmod(0o644)
    return deb


def _stage_file(stage: Path, target: str, content: bytes | str | DebFile) -> None:
    inside = PurePosixPath(target)
    if not inside.is_absolute() or ".." in inside.parts:
        raise ValueError(f"package file path must be absolute and plain: {target}")
    path = stage / str(inside)[1:]
    for parent in reversed(path.relative_to(stage).parents[:-1]):
        (stage / parent).mkdir(mode=0o755, exist_ok=True)
        (stage / parent).chmod(0o755)
    entry = content if isinstance(content, DebFile) else DebFile(content)
    data = entry.content.encode() if isinstance(entry.content, str) else entry.content
    path.write_bytes(data)
    path.chmod(entry.mode)


class LocalAptRepo:
    """A flat apt repository in `directory` (created, mode 0755 so that
    apt's unprivileged `_apt` user can read it). Valid from the start: an
    empty repository has an empty index, so `apt-get update` succeeds."""

    def __init__(self, directory: Path, release: Mapping[str, str] | None = None) -> None:
        """``release``: fields of its Release file besides the defaults
        (Suite: bookworm-security and Label: Debian-Security make it look
        like a security archive to apt)."""
        self.directory = directory
        self.release = {
            "Origin": "fleetpatch-tests",
            "Label": "fleetpatch-tests",
            **(release or {}),
        }
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        self.refresh()

    def add(self, *specs: DebSpec) -> list[Path]:
        """Build the packages into the repository and refresh its index."""
        debs = [build_deb(spec, self.directory) for spec in specs]
        self.refresh()
        return debs

    def add_deb(self, deb: Path) -> Path:
        """Copy a .deb built elsewhere (e.g. the agent's own) into the
        repository and refresh its index."""
        copied = Path(shutil.copy2(deb, self.directory / deb.name))
        copied.chmod(0o644)
        self.refresh()
        return copied

    def refresh(self) -> None:
        """Rewrite Packages, Packages.gz and Release from the .debs present.
        A bound repository is live: `apt-get update` inside sees the change."""
        scan = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
            cwd=self.directory,
            check=True,
            capture_output=True,
            timeout=120,
        )
        index = {"Packages": scan.stdout, "Packages.gz": gzip.compress(scan.stdout, mtime=0)}
        for name, data in index.items():
            (self.directory / name).write_bytes(data)
        release = [f"{key}: {value}" for key, value in self.release.items()]
        release += [f"Date: {formatdate(usegmt=True)}", "SHA256:"]
        release += [
            f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}"
            for name, data in index.items()
        ]
        (self.directory / "Release").write_text("\n".join(release) + "\n")
        for path in self.directory.iterdir():
            path.chmod(0o644)

    def source_line(self, mount_point: str = REPO_MOUNT) -> str:
        """The sources.list line for this repository mounted at mount_point."""
        return f"deb [trusted=yes] file:{mount_point} ./\n"


def isolate_apt(sandbox: HostSandbox) -> None:
    """Remove every apt source inside the sandbox (not on the machine)."""
    sandbox.run(["rm", "-f", "/etc/apt/sources.list"])
    sandbox.run(["find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete"])


def add_repo(sandbox: HostSandbox, repo: LocalAptRepo, mount_point: str = REPO_MOUNT) -> None:
    """Bind the repository read-only at mount_point inside and add its source."""
    sandbox.bind(repo.directory, mount_point, read_only=True)
    name = PurePosixPath(mount_point).name
    sources = f"/etc/apt/sources.list.d/{name}.list"
    sandbox.run(["tee", sources], input=repo.source_line(mount_point))


def use_repo(
    sandbox: HostSandbox,
    repo: LocalAptRepo,
    mount_point: str = REPO_MOUNT,
    *,
    update: bool = True,
) -> None:
    """Make `repo` the only apt source in the sandbox, then `apt-get update`."""
    isolate_apt(sandbox)
    add_repo(sandbox, repo, mount_point)
    if update:
        apt_update(sandbox)


def apt_get(
    sandbox: HostSandbox, *args: str, check: bool = True, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """`apt-get -y -q ARGS` inside the sandbox, non-interactive (the
    sandbox's environment sets DEBIAN_FRONTEND), no pseudo-terminal."""
    argv = ["apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args]
    return sandbox.run(argv, check=check, timeout=timeout)


def apt_update(sandbox: HostSandbox) -> subprocess.CompletedProcess[str]:
    """`apt-get update` inside, failing on any warning (a source that did
    not load must not go unnoticed)."""
    return apt_get(sandbox, "update", "--error-on=any")


def dpkg_status(package: str, sandbox: HostSandbox | None = None) -> tuple[str, str] | None:
    """(status, version) of a package as dpkg knows it, e.g. ("ii", "1.1"),
    ("iF", "1.0") for a failed postinst, ("rc", "1.0") when only conffiles
    remain; None when dpkg has never heard of it. Without a sandbox, asks
    the machine's own dpkg."""
    argv = ["dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", package]
    if sandbox is None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    else:
        done = sandbox.run(argv, check=False, timeout=60)
    if done.returncode != 0 or "|" not in done.stdout:
        return None
    status, version = done.stdout.split("|", 1)
    return status.strip(), version.strip()


def debrepo_available() -> str | None:
    """None when packages and repositories can be built here, else why not."""
    missing = [tool for tool in ("dpkg-deb", "dpkg-scanpackages") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages dpkg, dpkg-dev; `make deps`)"
    return None
