"""Real RPM packages and a local dnf repository, for tests of the dnf
backend on this Debian machine.

`build_rpm` turns an `RpmSpec` into a real package with `rpmbuild -bb`
(noarch, no automatic dependencies: the sandbox's rpmdb holds only what the
test installs). `LocalRpmRepo` is a directory indexed by `createrepo_c`;
its `Advisory`s go into an updateinfo.xml added with `modifyrepo_c`, as a
distribution publishes its errata.

`make_rpm_host(sandbox, repo)` turns a `HostSandbox` into an RPM host as
far as dnf and rpm can tell: the rpmdb in /var/lib/rpm (Debian's rpm keeps
one per user in ~/.rpmdb unless told otherwise), the repository bound
read-only at /srv/fleetpatch-rpm as the only dnf repository, Debian's
dnf "local" plugin (it copies every installed package into a repository
of its own) switched off, and a release package providing
system-release(releasever), as a real distribution's does. Everything is
written inside the sandbox's overlay; the machine is not touched.

Needs rpmbuild (rpm), createrepo_c (createrepo-c), dnf and
dnf-plugins-core; `dnfrepo_available()` gives the skip reason otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.backends import subp
from agent.errors import CommandFailed
from tests.support.sandbox import HostSandbox

REPO_MOUNT = "/srv/fleetpatch-rpm"
TOOLS = ("rpmbuild", "createrepo_c", "modifyrepo_c", "dnf", "rpm")


@dataclass(frozen=True)
class RpmSpec:
    name: str
    version: str
    release: str = "1"
    epoch: int | None = None
    files: dict[str, str] = field(default_factory=dict)  # path -> content (mode 0755)
    provides: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def spec_text(self) -> str:
        install = "\n".join(
            f"mkdir -p %{{buildroot}}{Path(path).parent}\n"
            f"cat > %{{buildroot}}{path} <<'FLEETPATCH_EOF'\n{content}FLEETPATCH_EOF\n"
            f"chmod 0755 %{{buildroot}}{path}"
            for path, content in self.files.items()
        )
        tags = "".join(f"Provides: {p}\n" for p in self.provides)
        tags += "".join(f"Requires: {r}\n" for r in self.requires)
        files = "\n".join(self.files) if self.files else ""
        epoch = "" if self.epoch is None else f"Epoch: {self.epoch}\n"
        return (
            f"Name: {self.name}\n{epoch}Version: {self.version}\nRelease: {self.release}\n"
            f"Summary: fleetpatch test package\nLicense: MIT\nBuildArch: noarch\n"
            f"AutoReqProv: no\n{tags}\n%description\nfleetpatch test package\n\n"
            f"%install\n{install}\n\n%files\n{files}\n"
        )


def demo_rpm(version: str, healthy: bool = True) -> RpmSpec:
    """fp-demo: `fp-demo --check` is the host's health check."""
    check = "exit 0" if healthy else "echo 'fp-demo: config broken' >&2; exit 1"
    script = f'#!/bin/sh\nif [ "$1" = --check ]; then {check}; fi\necho fp-demo {version}\n'
    return RpmSpec("fp-demo", version, files={"/usr/bin/fp-demo": script})


def build_rpm(spec: RpmSpec, out_dir: Path) -> Path:
    """rpmbuild -bb in a throwaway topdir; returns the .rpm in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fp-rpmbuild-") as top:
        spec_file = Path(top) / f"{spec.name}.spec"
        spec_file.write_text(spec.spec_text())
        subprocess.run(
            ["rpmbuild", "--define", f"_topdir {top}", "--define", "_build_id_links none",
             "-bb", str(spec_file)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        built = next(Path(top, "RPMS", "noarch").glob("*.rpm"))
        target = out_dir / built.name
        shutil.copyfile(built, target)
    return target


@dataclass(frozen=True)
class Advisory:
    """An erratum as updateinfo.xml states it: which package versions fix
    something (type "security", "bugfix", "enhancement"...)."""

    id: str
    type: str
    packages: tuple[RpmSpec, ...]
    severity: str = ""

    def xml(self) -> str:
        pkgs = "".join(
            f'<package name="{p.name}" epoch="{p.epoch or 0}" version="{p.version}" '
            f'release="{p.release}" arch="noarch">'
            f"<filename>{p.name}-{p.version}-{p.release}.noarch.rpm</filename></package>"
            for p in self.packages
        )
        severity = f"<severity>{self.severity}</severity>" if self.severity else ""
        return (
            f'<update from="fleetpatch" status="stable" type="{self.type}" version="1">'
            f"<id>{self.id}</id><title>{self.id}</title>{severity}"
            '<issued date="2026-01-01 00:00:00"/><updated date="2026-01-01 00:00:00"/>'
            f"<description>{self.id}</description>"
            f'<pkglist><collection short="fp"><name>fp</name>{pkgs}</collection></pkglist>'
            "</update>"
        )


class LocalRpmRepo:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.advisories: list[Advisory] = []
        directory.mkdir(parents=True, exist_ok=True)
        self.refresh()

    def advise(self, *advisories: Advisory) -> None:
        """Publish advisories (updateinfo) beside the packages."""
        self.advisories += advisories
        self.refresh()

    def add(self, *specs: RpmSpec) -> list[Path]:
        built = [build_rpm(s, self.directory) for s in specs]
        self.refresh()
        return built

    def remove(self, filename: str) -> None:
        (self.directory / filename).unlink()
        self.refresh()

    def refresh(self) -> None:
        subprocess.run(["createrepo_c", "-q", "--update", str(self.directory)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        if not self.advisories:
            return
        with tempfile.TemporaryDirectory(prefix="fp-updateinfo-") as tmp:
            xml = Path(tmp) / "updateinfo.xml"
            body = "".join(a.xml() for a in self.advisories)
            xml.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<updates>{body}</updates>\n')
            subprocess.run(["modifyrepo_c", "--mdtype=updateinfo", str(xml),
                            str(self.directory / "repodata")], check=True,
                           capture_output=True, timeout=120)  # fmt: skip


def make_rpm_host(sandbox: HostSandbox, repo: LocalRpmRepo) -> None:
    """See the module docstring."""
    sandbox.bind(repo.directory, REPO_MOUNT)
    sandbox.run(["mkdir", "-p", "/etc/rpm", "/var/lib/rpm", "/etc/yum.repos.d",
                 "/etc/dnf/plugins"])  # fmt: skip
    sandbox.path("/etc/rpm/macros").write_text("%_dbpath /var/lib/rpm\n")
    sandbox.path("/etc/yum.repos.d/fleetpatch.repo").write_text(
        f"[fleetpatch]\nname=fleetpatch test repository\nbaseurl=file://{REPO_MOUNT}\n"
        "gpgcheck=0\nmetadata_expire=0\n"
    )
    sandbox.path("/etc/dnf/plugins/local.conf").write_text("[main]\nenabled = false\n")
    sandbox.run(["rpm", "--initdb"])
    release = build_rpm(
        RpmSpec("fp-release", "12", provides=("system-release(releasever) = 12",)),
        repo.directory.parent / "release-rpm",
    )
    inside = f"/root/{release.name}"
    sandbox.path(inside).write_bytes(release.read_bytes())
    sandbox.run(["rpm", "-i", "--nodeps", inside])


def sandbox_runner(sandbox: HostSandbox) -> Callable[..., subp.Result]:
    """A `subp.run` that runs argv inside ``sandbox``: the real backend
    code, the real dnf and rpm, in the sandbox's root."""

    def run(
        argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120.0,
        check: bool = True, cwd: str | None = None,
    ) -> subp.Result:  # fmt: skip
        done = sandbox.run([str(a) for a in argv], check=False, env=env, timeout=timeout,
                           cwd=cwd)  # fmt: skip
        result = subp.Result([str(a) for a in argv], done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise CommandFailed(result.argv, done.returncode, done.stdout, done.stderr)
        return result

    return run


def rpm_version(sandbox: HostSandbox, name: str) -> str | None:
    done = sandbox.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", name], check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def dnfrepo_available() -> str | None:
    missing = [t for t in TOOLS if shutil.which(t, path=subp.BASE_ENV["PATH"]) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian packages rpm, createrepo-c, dnf)"
    if not Path("/usr/lib/python3/dist-packages/dnf-plugins/download.py").exists():
        return "needs dnf-plugins-core (dnf download, dnf needs-restarting)"
    return None
